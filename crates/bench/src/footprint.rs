//! Agent footprint: the size of the agent-only binary once stripped (bench/run builds it with
//! `cargo build --release -p postern-agent` alone, so that no other package's features leak
//! in), and the RSS of an idle, connected `postern-agent` that has carried no session yet.
//! The baseline is the device's side of the hand-built tunnel: the `ssh` client binary (as
//! Debian ships it: stripped, linked against shared libraries it does not count) and the RSS
//! of an idle `ssh -N -R` — both read over the same idle time.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::baseline::Baseline;
use crate::postern::AgentProc;
use crate::proc;
use crate::procfs;
use crate::report::{Bound, Figure};

const MIB: f64 = 1024.0 * 1024.0;

/// Copies `bin` into `dir`, strips the copy and returns its size in bytes.
async fn stripped_size(bin: &Path, dir: &Path) -> Result<u64> {
    let name = bin
        .file_name()
        .context("binary without a name")?
        .to_string_lossy()
        .into_owned();
    let copy = dir.join(format!("{name}.stripped"));
    std::fs::copy(bin, &copy).with_context(|| format!("cannot copy {}", bin.display()))?;
    proc::output("strip", &[&copy.display().to_string()]).await?;
    Ok(std::fs::metadata(&copy)?.len())
}

async fn which(program: &str) -> Result<std::path::PathBuf> {
    let path = proc::output("sh", &["-c", &format!("command -v {program}")]).await?;
    Ok(path.trim().into())
}

pub async fn measure(
    bins: &crate::postern::Binaries,
    dir: &Path,
    agent: &AgentProc,
    baseline: &Baseline,
    idle: Duration,
) -> Result<Vec<Figure>> {
    let agent_size = stripped_size(&bins.agent, dir).await?;
    let full_size = stripped_size(&bins.postern, dir).await?;
    let ssh = which("ssh").await?;
    let ssh_size = std::fs::metadata(&ssh)?.len();

    let (tunnel, _) = baseline.open_tunnel().await?;
    eprintln!("  agent and ssh -R idle for {idle:?}");
    // Idling is the measurement: a connected agent between heartbeats.
    tokio::time::sleep(idle).await;
    let rss = procfs::rss_kib(agent.proc.pid())?;
    let peak = procfs::peak_rss_kib(agent.proc.pid())?;
    let ssh_rss = procfs::rss_kib(tunnel.proc.pid())?;
    let ssh_peak = procfs::peak_rss_kib(tunnel.proc.pid())?;
    drop(tunnel);

    Ok(vec![
        Figure::new(
            "footprint.agent_binary",
            "agent-only binary, stripped",
            "MiB",
        )
        .postern(agent_size as f64 / MIB)
        .baseline(Some(ssh_size as f64 / MIB))
        .bound(Bound::AtMost(8.0))
        .details(json!({
            "agent_bytes": agent_size,
            "binary": bins.agent.display().to_string(),
            "baseline": format!("{} as installed (stripped, dynamically linked)", ssh.display()),
            "baseline_bytes": ssh_size,
        }))
        .judged(),
        Figure::new(
            "footprint.full_binary",
            "full postern binary, stripped",
            "MiB",
        )
        .postern(full_size as f64 / MIB)
        .details(json!({ "bytes": full_size }))
        .judged(),
        Figure::new("footprint.agent_rss", "idle connected agent RSS", "MiB")
            .postern(rss as f64 / 1024.0)
            .baseline(Some(ssh_rss as f64 / 1024.0))
            .bound(Bound::AtMost(8.0))
            .details(json!({
                "rss_kib": rss,
                "peak_rss_kib": peak,
                "idle_s": idle.as_secs_f64(),
                "baseline": "the device's idle ssh -N -R",
                "baseline_rss_kib": ssh_rss,
                "baseline_peak_rss_kib": ssh_peak,
            }))
            .judged(),
    ])
}
