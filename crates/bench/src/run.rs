//! `postern-bench run`: sets everything up in a temporary directory, measures the chosen
//! figures, prints the table and writes the JSON report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::json;

use crate::agents::{self, AgentsPlan};
use crate::baseline::Baseline;
use crate::load_child;
use crate::nodes::{self, NodesPlan};
use crate::postern::{AgentProc, Binaries, Deployment};
use crate::report::{self, Figure};
use crate::{footprint, latency, login_burst, machine, procfs, sessions, throughput};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Footprint,
    Sessions,
    Latency,
    Throughput,
    Agents,
    /// `login-burst`: concurrent wrong passwords against a server of its own.
    #[serde(rename = "login-burst")]
    LoginBurst,
    /// Three nodes on one database: idle agents spread over them, then one node killed.
    Nodes,
    /// Time to running and throughput through the agent's node and through another node.
    #[serde(rename = "across-nodes")]
    AcrossNodes,
    /// Shells that survive: the server killed and restarted under a web terminal and a
    /// `postern ssh`; the agent's memory per detached shell.
    Survive,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Small counts, to try the harness (10 sessions, 64 MiB, 200 keystrokes, 500 agents, 10 s idle).
    #[arg(long)]
    pub quick: bool,
    /// Only these figures (repeatable or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Number of idle agents [default: 10000; 500 with --quick].
    #[arg(long)]
    pub agents: Option<usize>,
    /// Idle agents across the three nodes [default: 30000; 600 with --quick]; a hundredth
    /// more (at least 10) know only the node that is killed.
    #[arg(long)]
    pub node_agents: Option<usize>,
    /// The most agents one load process holds (several processes share a bigger fleet: a
    /// process may hold only so many open files).
    #[arg(long, default_value_t = load_child::PER_PROCESS)]
    pub agents_per_process: usize,
    /// The nodes figure's agents started per second, all load processes together (0: all at
    /// once). At 30,000 on 2 cores shared with the load, all at once is an enrollment storm
    /// the database serializes (crates/bench/README.md, section 7).
    #[arg(long, default_value_t = 150.0)]
    pub node_start_rate: f64,
    /// The PostgreSQL database the nodes share (`postgres://…`, an empty database; bench/run
    /// starts a throwaway cluster). Without one they share a SQLite file and the database
    /// figures are left out.
    #[arg(long)]
    pub database: Option<String>,
    /// The JSON report.
    #[arg(long, default_value = "bench/results/latest.json")]
    pub out: PathBuf,
    /// Where the release binaries are [default: beside this one].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Keep the temporary directory (logs, configs, data) and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// The account whose shell both sides log in to [default: the user running the bench].
    /// Its login shell's start-up is part of both prompt times: see the reference figure.
    #[arg(long)]
    pub login: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub sessions: usize,
    pub bytes: u64,
    pub throughput_repeats: usize,
    pub keystrokes: usize,
    pub agents: usize,
    pub node_agents: usize,
    pub node_pinned: usize,
    pub idle_s: u64,
    pub footprint_idle_s: u64,
    pub baseline_tunnels: usize,
    pub restarts: usize,
    pub detached_shells: usize,
}

impl Plan {
    fn new(args: &RunArgs) -> Self {
        let mut plan = if args.quick {
            Self {
                sessions: 10,
                bytes: 64 << 20,
                throughput_repeats: 1,
                keystrokes: 200,
                agents: 500,
                node_agents: 600,
                node_pinned: 0,
                idle_s: 10,
                footprint_idle_s: 10,
                baseline_tunnels: 20,
                restarts: 3,
                detached_shells: 10,
            }
        } else {
            Self {
                sessions: 100,
                bytes: 1 << 30,
                throughput_repeats: 3,
                keystrokes: 2000,
                agents: 10_000,
                node_agents: 30_000,
                node_pinned: 0,
                idle_s: 60,
                // Three heartbeats of the agent's default 10 s sync rate.
                footprint_idle_s: 30,
                baseline_tunnels: 200,
                restarts: 5,
                detached_shells: 50,
            }
        };
        if let Some(n) = args.agents {
            plan.agents = n;
            plan.baseline_tunnels = plan.baseline_tunnels.min(n.max(1));
        }
        if let Some(n) = args.node_agents {
            plan.node_agents = n;
        }
        plan.node_pinned = (plan.node_agents / 100).max(10);
        plan
    }
}

/// The repository this bench was built from: figures name its commit.
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn wants(args: &RunArgs, section: Section) -> bool {
    args.only.is_empty() || args.only.contains(&section)
}

/// The server, CLI login and agent that sessions, latency, throughput and footprint share.
struct Main {
    deployment: Deployment,
    agent: AgentProc,
}

async fn start_main(bins: &Binaries, dir: &Path, login: &str) -> Result<Main> {
    let mut deployment = Deployment::start(bins, dir, "main").await?;
    deployment.cli.login = Some(login.to_owned());
    let token = deployment.api.create_token(1).await?;
    let mut events = deployment.api.events().await?;
    let agent = AgentProc::start(
        &bins.agent,
        &deployment.server,
        &mut events,
        "bench-agent",
        &token,
        login,
        &dir.join("main-agent"),
    )
    .await?;
    Ok(Main { deployment, agent })
}

pub async fn run(args: RunArgs) -> Result<bool> {
    let plan = Plan::new(&args);
    let bins = Binaries::find(args.bin_dir.as_deref())?;
    // The most links one process holds: a server (the one node, or a survivor of the node
    // kill holding half the fleet) or one load process (at most --agents-per-process).
    let most_links = [
        (wants(&args, Section::Agents), plan.agents),
        (
            wants(&args, Section::Nodes),
            plan.node_agents.div_ceil(nodes::NODES - 1) + plan.node_pinned,
        ),
    ]
    .into_iter()
    .filter_map(|(wanted, n)| wanted.then_some(n))
    .chain([args.agents_per_process])
    .max();
    if let Some(links) = most_links {
        // One descriptor per link, plus headroom.
        let needed = links as u64 + 2048;
        let limit = procfs::open_files_limit().unwrap_or(0);
        if limit < needed {
            bail!(
                "the open-files limit is {limit}; a process holding {links} agent links needs about {needed}: raise it \
                 (`ulimit -n 1048576` as root; bench/run does)"
            );
        }
    }
    let temp = tempfile::Builder::new()
        .prefix("postern-bench-")
        .tempdir()?;
    // With --keep the directory outlives the run, errors included; otherwise it goes with `temp`.
    let (dir, _temp) = if args.keep {
        (temp.keep(), None)
    } else {
        (temp.path().to_owned(), Some(temp))
    };
    eprintln!("postern-bench: working in {}", dir.display());
    let machine = machine::describe(&repo_root()).await;
    let ticks = procfs::clock_ticks_per_second().await;

    let mut figures: Vec<Figure> = Vec::new();
    let mut errors: Vec<serde_json::Value> = Vec::new();

    let login = match &args.login {
        Some(login) => login.clone(),
        None => crate::baseline::login_name(),
    };
    let baseline = Baseline::start(&dir.join("baseline"), &login)
        .await
        .context("the OpenSSH baseline could not start")?;
    let needs_main = [
        Section::Footprint,
        Section::Sessions,
        Section::Latency,
        Section::Throughput,
    ]
    .into_iter()
    .any(|s| wants(&args, s));
    if needs_main {
        let main = start_main(&bins, &dir, &login).await?;
        let d = &main.deployment;
        let agent = main.agent.name.as_str();
        // Footprint first: the agent has carried no session yet.
        if wants(&args, Section::Footprint) {
            eprintln!("footprint");
            let idle = Duration::from_secs(plan.footprint_idle_s);
            record(
                &mut figures,
                &mut errors,
                Section::Footprint,
                footprint::measure(&bins, &dir, &main.agent, &baseline, idle).await,
            );
        }
        if wants(&args, Section::Sessions) {
            eprintln!("time to running: {} sessions each", plan.sessions);
            record(
                &mut figures,
                &mut errors,
                Section::Sessions,
                sessions::measure(d, agent, &baseline, &login, plan.sessions).await,
            );
        }
        if wants(&args, Section::Latency) {
            eprintln!("keystroke latency: {} round trips each", plan.keystrokes);
            record(
                &mut figures,
                &mut errors,
                Section::Latency,
                latency::measure(d, agent, &baseline, plan.keystrokes).await,
            );
        }
        if wants(&args, Section::Throughput) {
            eprintln!(
                "throughput: {} bytes each way, {} runs per path",
                plan.bytes, plan.throughput_repeats
            );
            record(
                &mut figures,
                &mut errors,
                Section::Throughput,
                throughput::measure(
                    d,
                    agent,
                    &baseline,
                    &dir,
                    plan.bytes,
                    plan.throughput_repeats,
                )
                .await,
            );
        }
    }
    if wants(&args, Section::AcrossNodes) {
        eprintln!(
            "across nodes: {} sessions and {} bytes each way per path",
            plan.sessions, plan.bytes
        );
        record(
            &mut figures,
            &mut errors,
            Section::AcrossNodes,
            crate::across_nodes::measure(
                &bins,
                &dir,
                &login,
                plan.sessions,
                plan.bytes,
                plan.throughput_repeats,
            )
            .await,
        );
    }
    if wants(&args, Section::Survive) {
        eprintln!(
            "shells that survive: {} server restarts, {} detached shells",
            plan.restarts, plan.detached_shells
        );
        let survive_plan = crate::survive::SurvivePlan {
            restarts: plan.restarts,
            // Past the agent's 60 s stable period; a quick run only checks the harness.
            spacing: Duration::from_secs(if args.quick { 0 } else { 61 }),
            shells: plan.detached_shells,
        };
        record(
            &mut figures,
            &mut errors,
            Section::Survive,
            crate::survive::measure(&bins, &dir, &login, &survive_plan).await,
        );
    }
    if wants(&args, Section::LoginBurst) {
        eprintln!(
            "login burst: {} wrong passwords at once",
            login_burst::ATTEMPTS
        );
        record(
            &mut figures,
            &mut errors,
            Section::LoginBurst,
            login_burst::measure(&bins, &dir).await,
        );
    }
    if wants(&args, Section::Agents) {
        eprintln!("idle agents: {}", plan.agents);
        let agents_plan = AgentsPlan {
            count: plan.agents,
            idle: Duration::from_secs(plan.idle_s),
            baseline_tunnels: plan.baseline_tunnels,
            per_process: args.agents_per_process,
        };
        record(
            &mut figures,
            &mut errors,
            Section::Agents,
            agents::measure(&bins, &dir, &baseline, &agents_plan, ticks).await,
        );
    }
    drop(baseline);
    if wants(&args, Section::Nodes) {
        eprintln!(
            "{} nodes: {} idle agents, {} more on the node that is killed",
            nodes::NODES,
            plan.node_agents,
            plan.node_pinned
        );
        let nodes_plan = NodesPlan {
            count: plan.node_agents,
            pinned: plan.node_pinned,
            idle: Duration::from_secs(plan.idle_s),
            database: args.database.clone(),
            one_node: one_node_figures(&figures),
            per_process: args.agents_per_process,
            start_rate: args.node_start_rate,
        };
        record(
            &mut figures,
            &mut errors,
            Section::Nodes,
            nodes::measure(&bins, &dir, &nodes_plan, ticks).await,
        );
    }

    println!("{}", report::table(&figures));
    let missed: Vec<&str> = figures
        .iter()
        .filter(|f| f.met == Some(false))
        .map(|f| f.id.as_str())
        .collect();
    let report = json!({
        "harness": "postern-bench",
        "mode": if args.quick { "quick" } else { "full" },
        "sections": if args.only.is_empty() { vec![Section::Footprint, Section::Sessions, Section::Latency, Section::Throughput, Section::AcrossNodes, Section::LoginBurst, Section::Agents, Section::Nodes] } else { args.only.clone() },
        "plan": plan,
        "login": {
            "name": login,
            "shell": nix::unistd::User::from_name(&login).ok().flatten().map(|u| u.shell.display().to_string()),
        },
        "machine": machine,
        "figures": figures,
        "targets_missed": missed,
        "errors": errors,
    });
    report::write_json(&args.out, &report)?;
    eprintln!("wrote {}", args.out.display());
    if args.keep {
        eprintln!("kept {}", dir.display());
    }
    Ok(errors.is_empty())
}

/// The one-node idle-agent figures of this run, for the nodes figures' details.
fn one_node_figures(figures: &[Figure]) -> serde_json::Value {
    let value = |id: &str| figures.iter().find(|f| f.id == id).and_then(|f| f.postern);
    json!({
        "server_rss_per_agent_kib": value("agents.server_rss_per_agent"),
        "server_cpu_idle_percent": value("agents.server_cpu_idle"),
        "restart_back_online_s": value("agents.restart_back_online"),
    })
}

/// Keeps a section's figures, or its error.
fn record(
    figures: &mut Vec<Figure>,
    errors: &mut Vec<serde_json::Value>,
    section: Section,
    result: Result<Vec<Figure>>,
) {
    match result {
        Ok(f) => figures.extend(f),
        Err(e) => {
            eprintln!("postern-bench: {section:?} failed: {e:#}");
            errors.push(json!({ "section": section, "error": format!("{e:#}") }));
        }
    }
}
