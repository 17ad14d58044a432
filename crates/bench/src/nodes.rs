//! Several nodes on one database: three `postern server` processes sharing one PostgreSQL
//! database (or, without one, one SQLite file), idle agents spread over them by the agent
//! library's own choice of node, then `kill -9` of one node.
//!
//! Measured: each node's RSS per agent it holds and CPU at idle, the database's work at
//! idle (transactions and rows written per second, per table, with the nodes' own heartbeats
//! told apart), and after the kill the time until the survivors' API shows every agent of the
//! dead node online again, and whether it still shows anything online that only the dead node
//! held (a *phantom*). Two groups of agents make that visible: `load-*` agents are given all
//! three gateways, so the dead node's ones reconnect to the survivors; `pinned-*` agents are
//! given only the node that is killed, so after the kill nothing can truthfully show them
//! online. The kill phase is in `nodes_kill.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::agents::{IDLE_SYNC_RATE, WAVE_LIMIT};
use crate::api::Api;
use crate::load_child::{Load, LoadSpec};
use crate::postern::{Binaries, Server};
use crate::procfs::{self, CpuWindow};
use crate::report::{Bound, Figure};
use crate::{nodes_kill, pg, stats};

/// The number of nodes: the three.
pub const NODES: usize = 3;
/// The node that is killed; the pinned agents know only it.
pub const VICTIM: usize = 0;
/// The nodes' heartbeat interval (the server's default `node_heartbeat`): each is one row
/// written to the `nodes` table, the database work a node does whatever its agents do.
pub const NODE_HEARTBEAT: Duration = Duration::from_secs(5);
/// The table the nodes' heartbeats write.
const NODES_TABLE: &str = "nodes";

pub struct NodesPlan {
    /// Agents given every node's gateway.
    pub count: usize,
    /// Agents given only the victim's gateway.
    pub pinned: usize,
    pub idle: Duration,
    /// A PostgreSQL URL; without one the nodes share a SQLite file (no database figures).
    pub database: Option<String>,
    /// The same run's one-node figures (the idle-agents section), shown beside these.
    pub one_node: Value,
    /// The most agents one load process holds.
    pub per_process: usize,
    /// The `load-*` agents started per second (0: all at once); the pinned ones start at once.
    pub start_rate: f64,
}

/// One `postern server` of the cluster and the bench's login on it.
pub struct Node {
    pub server: Server,
    pub api: Api,
    pub rss_before_kib: u64,
    /// Established links on its gateway port, from the kernel's socket table.
    pub links: usize,
}

impl Node {
    pub fn port(&self) -> u16 {
        self.server.gateway.port()
    }
}

async fn start_nodes(bins: &Binaries, dir: &Path, database: &str) -> Result<Vec<Node>> {
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let mut args = vec!["--database".to_owned(), database.to_owned()];
    if database.starts_with("postgres") {
        // Sized for 10,000 agents a node, as DEPLOY.md advises: the default pool (10, 5 s)
        // is for a node of a few thousand. With it, the connect wave's enrollments and
        // first links time out waiting for a connection, and the retries feed the queue.
        args.extend(
            [
                "--database-max-connections",
                "40",
                "--database-acquire-timeout",
                "60s",
            ]
            .map(str::to_owned),
        );
    }
    let mut servers = Vec::with_capacity(NODES);
    // One after the other: the first makes the administrator (and prints its password) and
    // the keys every node shares.
    for i in 0..NODES {
        let server = Server::start_with(
            &bins.postern,
            &dir.join(format!("node-{i}-server")),
            any,
            any,
            &dir.join(format!("node-{i}-server.log")),
            &args,
        )
        .await
        .with_context(|| format!("node {i}"))?;
        servers.push(server);
    }
    let password = servers[0]
        .password
        .clone()
        .ok_or_else(|| anyhow!("the first node printed no admin password"))?;
    let mut nodes = Vec::with_capacity(NODES);
    for (i, server) in servers.into_iter().enumerate() {
        let api = Api::login(&server.base_url(), "admin", &password)
            .await
            .with_context(|| format!("logging in on node {i}"))?;
        let rss_before_kib = procfs::rss_kib(server.pid())?;
        nodes.push(Node {
            server,
            api,
            rss_before_kib,
            links: 0,
        });
    }
    Ok(nodes)
}

/// Waits until every node in `nodes` lists `online` agents matching `query` online;
/// returns how long it took.
pub async fn all_list(
    nodes: &[&Node],
    query: &str,
    online: u64,
    limit: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let mut counts = Vec::with_capacity(nodes.len());
        for node in nodes {
            counts.push(node.api.agents_total(query).await?);
        }
        if counts.iter().all(|c| *c == online) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("the nodes list {counts:?} agents for {query:?}, not {online}, after {limit:?}");
        }
        // The counts are what is waited on; this only paces the asking.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn measure(
    bins: &Binaries,
    dir: &Path,
    plan: &NodesPlan,
    ticks: u64,
) -> Result<Vec<Figure>> {
    let (n, pinned) = (plan.count, plan.pinned);
    let database = match &plan.database {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", dir.join("nodes.db").display()),
    };
    let postgres = plan.database.is_some();
    let mut nodes = start_nodes(bins, dir, &database).await?;
    let token = nodes[0]
        .api
        .create_token(u32::try_from(n + pinned)?)
        .await?;
    let gateways: Vec<String> = nodes.iter().map(|n| n.server.gateway.to_string()).collect();
    eprintln!(
        "  {NODES} nodes on {}; starting {n} agents on all of them and {pinned} on node {VICTIM} only",
        if postgres {
            "PostgreSQL"
        } else {
            "one SQLite file"
        }
    );
    let spec = |servers, count, name_prefix, sub: &str, log: &str, start_rate| LoadSpec {
        servers,
        count,
        name_prefix,
        data_dir: dir.join(sub),
        token: &token,
        log: dir.join(log),
        per_process: plan.per_process,
        start_rate,
    };
    let mut load = Load::spawn(
        &bins.bench,
        &spec(
            &gateways,
            n,
            "load",
            "node-agents",
            "node-load.log",
            plan.start_rate,
        ),
    )?;
    let mut pins = Load::spawn(
        &bins.bench,
        &spec(
            &gateways[VICTIM..=VICTIM],
            pinned,
            "pinned",
            "node-pinned",
            "node-pinned.log",
            0.0,
        ),
    )?;
    let start_us = load
        .started(WAVE_LIMIT)
        .await?
        .min(pins.started(WAVE_LIMIT).await?);
    let ups = load.until_all_up(WAVE_LIMIT).await?;
    pins.until_all_up(WAVE_LIMIT).await?;
    let connect: Vec<f64> = ups
        .values()
        .map(|t| t.saturating_sub(start_us) as f64 / 1e6)
        .collect();
    let connect = stats::summarize(&connect);
    let everyone: Vec<&Node> = nodes.iter().collect();
    let listed = all_list(&everyone, "online=true", (n + pinned) as u64, WAVE_LIMIT).await?;
    eprintln!(
        "  all {} online after {:.2} s; every node lists them {:.2} s later",
        n + pinned,
        connect.max,
        listed.as_secs_f64()
    );
    for node in &mut nodes {
        node.links = procfs::established_on_port(node.port())?;
    }
    let rss_connected: Vec<u64> = nodes
        .iter()
        .map(|node| procfs::rss_kib(node.server.pid()))
        .collect::<Result<_>>()?;

    // Idle as in the one-node figure: two sync intervals after the wave, then the window.
    let settle = 2 * IDLE_SYNC_RATE;
    eprintln!("  settling for {settle:?}, then idle for {:?}", plan.idle);
    tokio::time::sleep(settle).await;
    let _ = (load.drain(), pins.drain());
    let downs_before = load.downs + pins.downs;
    let pids: Vec<i32> = nodes.iter().map(|node| node.server.pid()).collect();
    let windows: Vec<CpuWindow> = pids
        .iter()
        .map(|pid| CpuWindow::start(&[*pid]))
        .collect::<Result<_>>()?;
    let db_before = match &plan.database {
        Some(url) => Some(pg::Snapshot::take(url).await?),
        None => None,
    };
    let idle_started = Instant::now();
    tokio::time::sleep(plan.idle).await;
    let db_after = match &plan.database {
        Some(url) => Some(pg::Snapshot::take(url).await?),
        None => None,
    };
    let db_window = idle_started.elapsed().as_secs_f64();
    let mut cpu = Vec::with_capacity(NODES);
    for (window, pid) in windows.iter().zip(&pids) {
        cpu.push(window.percent(&[*pid], ticks)?.0);
    }
    let _ = (load.drain(), pins.drain());
    let drops_during_idle = load.downs + pins.downs - downs_before;

    let mut per_node = Vec::with_capacity(NODES);
    let (mut grew_total, mut links_total) = (0u64, 0usize);
    for (i, node) in nodes.iter().enumerate() {
        let rss_idle = procfs::rss_kib(node.server.pid())?;
        let grew = rss_connected[i]
            .max(rss_idle)
            .saturating_sub(node.rss_before_kib);
        grew_total += grew;
        links_total += node.links;
        per_node.push(json!({
            "node": i,
            "links": node.links,
            "rss_before_kib": node.rss_before_kib,
            "rss_all_connected_kib": rss_connected[i],
            "rss_after_idle_kib": rss_idle,
            "rss_per_agent_kib": grew as f64 / node.links.max(1) as f64,
            "cpu_idle_percent": cpu[i],
        }));
    }
    let per_agent_kib = grew_total as f64 / links_total.max(1) as f64;
    let cpu_max = cpu.iter().copied().fold(0.0, f64::max);

    let mut figures = vec![
        Figure::new(
            "nodes.connect_all",
            format!("{NODES} nodes: connect all {} agents", n + pinned),
            "s",
        )
        .postern(connect.max)
        .details(json!({
            "per_agent_s": connect,
            "started_per_second": plan.start_rate,
            "how": "from the first agent's start to the last one's link, agents started at started_per_second (0: all at once), so at least count / started_per_second",
            "every_node_listed_all_after_s": listed.as_secs_f64(),
            "database": if postgres { "postgresql" } else { "sqlite (one file shared by the nodes)" },
        }))
        .judged(),
        Figure::new(
            "nodes.server_rss_per_agent",
            format!("{NODES} nodes: server RSS per agent"),
            "KiB",
        )
        .postern(per_agent_kib)
        .bound(Bound::AtMost(32.0))
        .details(json!({
            "how": "sum over the nodes of (RSS with agents - RSS before any) / links they hold (kernel socket table)",
            "nodes": per_node,
            "one_node_same_run": plan.one_node["server_rss_per_agent_kib"],
        }))
        .judged(),
        Figure::new(
            "nodes.server_cpu_idle",
            format!("{NODES} nodes: busiest node's CPU at idle over {:.0} s", plan.idle.as_secs_f64()),
            "% of a core",
        )
        .postern(cpu_max)
        .bound(Bound::AtMost(5.0))
        .details(json!({
            "per_node_percent": cpu,
            "sum_percent": cpu.iter().sum::<f64>(),
            "links_dropped_during_window": drops_during_idle,
            "one_node_same_run": plan.one_node["server_cpu_idle_percent"],
        }))
        .judged(),
    ];
    if let (Some(before), Some(after)) = (&db_before, &db_after) {
        figures.extend(database_figures(
            &after.delta_since(before),
            db_window,
            n + pinned,
        ));
    }

    let kill = nodes_kill::measure(&mut nodes, &mut load, &mut pins, plan).await;
    load.terminate(Duration::from_secs(15)).await;
    pins.terminate(Duration::from_secs(15)).await;
    figures.extend(kill?);
    Ok(figures)
}

/// The database's work over the idle window: rows written beyond the nodes' heartbeats (the
/// target: none), and every committed transaction (reads too) for the record.
fn database_figures(d: &pg::Delta, window_s: f64, agents: usize) -> Vec<Figure> {
    let per_s = |x: u64| x as f64 / window_s;
    let heartbeat_rows = d.rows_by_table.get(NODES_TABLE).copied().unwrap_or(0);
    // Postern's own tables: the database's total also counts its catalogs, which its
    // autovacuum writes when it analyzes the tables a fleet just filled (at 30,000 agents,
    // inside the idle window) — the database's work, not Postern's.
    let other_rows = d
        .rows_by_table
        .iter()
        .filter(|(table, _)| table.as_str() != NODES_TABLE)
        .map(|(_, rows)| rows)
        .sum::<u64>();
    let heartbeats = NODES as f64 * window_s / NODE_HEARTBEAT.as_secs_f64();
    vec![
        Figure::new(
            "nodes.db_writes_idle",
            format!("{NODES} nodes: database rows written at idle, beyond heartbeats"),
            "/s",
        )
        .postern(per_s(other_rows))
        .bound(Bound::AtMost(0.0))
        .details(json!({
            "window_s": window_s,
            "agents": agents,
            "per_agent_per_s": per_s(other_rows) / agents as f64,
            "raw_rows_written_per_s": per_s(d.rows_written),
            "raw_rows_written_per_s_per_agent": per_s(d.rows_written) / agents as f64,
            "heartbeat_rows": heartbeat_rows,
            "heartbeats_expected": heartbeats,
            "rows_by_table": d.rows_by_table,
            "wal_bytes_per_s": per_s(d.wal_bytes),
            "how": "pg_stat_user_tables n_tup_ins + n_tup_upd + n_tup_del over the window, summed over Postern's tables but the nodes table (one row per node heartbeat); raw_rows_written_per_s is pg_stat_database's total, catalogs (autovacuum's statistics) included",
        }))
        .judged(),
        Figure::new(
            "nodes.db_transactions_idle",
            format!("{NODES} nodes: database transactions at idle"),
            "/s",
        )
        .postern(per_s(d.transactions))
        .details(json!({
            "window_s": window_s,
            "per_agent_per_s": per_s(d.transactions) / agents as f64,
            "node_heartbeats_per_s": heartbeats / window_s,
            "how": "pg_stat_database xact_commit over the window (reads included: a node reads the others' links at each heartbeat), the bench's own statistics queries left out",
        }))
        .judged(),
    ]
}
