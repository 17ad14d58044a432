//! Across nodes: two `postern server` nodes on one database (a shared SQLite file on this
//! machine), the agent linked to node A, and the same figures taken through A (same node)
//! and through B (the user's node is not the agent's: node-to-node stream), in one run.
//!
//! Time to running: `POST /agents/AGENT/sessions` through A or through B (alternating) →
//! the session's `running` event on A's event stream (A stores it: the agent's forward reaches
//! A), from the instant before the request. Stopped between iterations, untimed.
//! Throughput: `postern ssh AGENT -- cat > /dev/null` (up) and `-- head -c BYTES /dev/zero`
//! (down) with the CLI logged in to A, then to B, taking turns on one running session;
//! median of the runs. No targets: the figures put the cost of the extra hop beside the
//! same-node path.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use postern_protocol::SessionState;
use serde_json::json;

use crate::api::{Api, Events};
use crate::postern::{AgentProc, Binaries, Cli, Server};
use crate::report::Figure;
use crate::stats;
use crate::throughput::{Direction, transfer};

const LIMIT: Duration = Duration::from_secs(60);

/// One node: its server, the bench's API login and a CLI logged in to it.
struct Node {
    server: Server,
    api: Api,
    cli: Cli,
}

async fn node(
    bins: &Binaries,
    dir: &Path,
    label: &str,
    database: &str,
    password: Option<&str>,
    login: &str,
) -> Result<Node> {
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let extra = [
        "--database".to_owned(),
        database.to_owned(),
        "--node-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    let server = Server::start_with(
        &bins.postern,
        &dir.join(format!("{label}-server")),
        any,
        any,
        &dir.join(format!("{label}-server.log")),
        &extra,
    )
    .await?;
    // The first node makes the administrator; the others share it.
    let password = match (password, &server.password) {
        (Some(p), _) => p.to_owned(),
        (None, Some(p)) => p.clone(),
        (None, None) => return Err(anyhow!("the first node printed no admin password")),
    };
    let api = Api::login(&server.base_url(), "admin", &password).await?;
    let cli = Cli {
        bin: bins.postern.clone(),
        home: dir.join(format!("{label}-cli")),
        login: Some(login.to_owned()),
    };
    cli.login(&server.base_url(), &password).await?;
    Ok(Node { server, api, cli })
}

pub async fn measure(
    bins: &Binaries,
    dir: &Path,
    login: &str,
    sessions: usize,
    bytes: u64,
    repeats: usize,
) -> Result<Vec<Figure>> {
    let dir = dir.join("across-nodes");
    std::fs::create_dir_all(&dir)?;
    let database = format!("sqlite://{}", dir.join("nodes.db").display());
    let a = node(bins, &dir, "a", &database, None, login).await?;
    let password = a.server.password.clone();
    let b = node(bins, &dir, "b", &database, password.as_deref(), login).await?;
    let token = a.api.create_token(1).await?;
    let mut events = a.api.events().await?;
    let agent = AgentProc::start(
        &bins.agent,
        &a.server,
        &mut events,
        "nodes-agent",
        &token,
        login,
        &dir.join("agent"),
    )
    .await?;

    let (mut same, mut cross) = (Vec::new(), Vec::new());
    for i in 0..sessions {
        same.push(
            running_once(&a.api, &a.api, &mut events, &agent.name)
                .await
                .with_context(|| format!("same-node session {}", i + 1))?,
        );
        cross.push(
            running_once(&b.api, &a.api, &mut events, &agent.name)
                .await
                .with_context(|| format!("cross-node session {}", i + 1))?,
        );
    }
    let (rs, rc) = (stats::summarize(&same), stats::summarize(&cross));

    // One running session for every transfer (each CLI finds it open).
    let session = a.api.start_session(&agent.name).await?;
    if session.state != SessionState::Running {
        let id = session.id.clone();
        events
            .wait_for(LIMIT, "session running", |e| {
                let s = e.session.as_ref()?;
                (s.id == id && s.state == SessionState::Running).then_some(())
            })
            .await?;
    }
    let mut mbps = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for (d, direction) in [Direction::Up, Direction::Down].into_iter().enumerate() {
        for _ in 0..repeats {
            for (n, cli) in [&a.cli, &b.cli].into_iter().enumerate() {
                let remote = direction.command(bytes);
                let mut command = cli.command();
                command
                    .args(cli.ssh_args(&agent.name))
                    .args(["--", &remote]);
                let seconds = transfer(command, direction, bytes)
                    .await
                    .with_context(|| format!("{} node {remote}", ["same", "cross"][n]))?;
                mbps[n][d].push(bytes as f64 / seconds / 1e6);
            }
        }
    }
    drop(agent);

    let mut figures = vec![
        Figure::new(
            "nodes.running.same.p50",
            "time to running p50, same node",
            "ms",
        )
        .postern(rs.p50)
        .details(json!({ "summary": rs, "samples_ms": same }))
        .judged(),
        Figure::new(
            "nodes.running.cross.p50",
            "time to running p50, across nodes",
            "ms",
        )
        .postern(rc.p50)
        .details(json!({ "summary": rc, "samples_ms": cross }))
        .judged(),
    ];
    for (d, label) in ["upload", "download"].into_iter().enumerate() {
        for (n, which) in ["same", "cross"].into_iter().enumerate() {
            let name = if n == 0 { "same node" } else { "across nodes" };
            figures.push(
                Figure::new(
                    &format!("nodes.throughput.{which}.{label}"),
                    format!("{label} via postern ssh, {name}"),
                    "MB/s",
                )
                .postern(stats::summarize(&mbps[n][d]).p50)
                .details(json!({ "bytes": bytes, "runs_mb_per_s": mbps[n][d] }))
                .judged(),
            );
        }
    }
    Ok(figures)
}

/// Starts a session through `via`, waits for `running` on the agent's node's `events`, stops
/// it (untimed); returns the milliseconds to running.
async fn running_once(
    via: &Api,
    agents_node: &Api,
    events: &mut Events,
    agent: &str,
) -> Result<f64> {
    let started = Instant::now();
    let session = via.start_session(agent).await?;
    let id = session.id.clone();
    let (at, ()) = events
        .wait_for(LIMIT, "session running", |e| {
            let s = e.session.as_ref()?;
            (s.id == id && s.state == SessionState::Running).then_some(())
        })
        .await?;
    let took = at.duration_since(started).as_secs_f64() * 1e3;
    agents_node.stop_session(&id).await?;
    events
        .wait_for(LIMIT, "session stopped", |e| {
            let s = e.session.as_ref()?;
            (s.id == id && s.state == SessionState::Stopped).then_some(())
        })
        .await?;
    Ok(took)
}
