//! Idle agents: N links held by the load mode (`postern-bench agents`, a child process)
//! against a server of their own (another process, so that its memory and CPU can be read
//! from /proc): time to connect all, server memory per agent, server CPU at idle, and the
//! way back after a server restart. The baseline holds a (smaller) number of idle
//! `ssh -N -R` tunnels on the OpenSSH relay and reads the same figures from its processes.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::baseline::{Baseline, Tunnel};
use crate::load::now_us;
use crate::load_child::{Load, LoadEvent, LoadSpec};
use crate::postern::{Binaries, Deployment};
use crate::proc;
use crate::procfs::{self, CpuWindow};
use crate::report::{Bound, Figure};
use crate::stats;

/// How long connecting (or reconnecting) all agents may take before the bench gives up.
pub const WAVE_LIMIT: Duration = Duration::from_secs(600);
/// The load agents' heartbeat interval: the agent's default, which the load mode keeps.
pub const IDLE_SYNC_RATE: Duration = Duration::from_secs(10);

/// Waits until the server itself lists `n` connected agents.
async fn server_sees(d: &Deployment, n: usize, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let online = d.api.online_count().await?;
        if online >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("the server lists {online}/{n} agents online after {limit:?}");
        }
        // The count is what is waited on; this only paces the asking.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub struct AgentsPlan {
    pub count: usize,
    pub idle: Duration,
    pub baseline_tunnels: usize,
    /// The most agents one load process holds.
    pub per_process: usize,
}

pub async fn measure(
    bins: &Binaries,
    dir: &Path,
    baseline: &Baseline,
    plan: &AgentsPlan,
    ticks: u64,
) -> Result<Vec<Figure>> {
    let n = plan.count;
    let mut d = Deployment::start(bins, dir, "agents").await?;
    let token = d.api.create_token(u32::try_from(n)?).await?;
    let rss_before = procfs::rss_kib(d.server.pid())?;
    eprintln!("  server RSS before any agent: {rss_before} KiB; starting {n} agents");

    let servers = [d.server.gateway.to_string()];
    let mut load = Load::spawn(
        &bins.bench,
        &LoadSpec {
            servers: &servers,
            count: n,
            name_prefix: "load",
            data_dir: dir.join("load-agents"),
            token: &token,
            log: dir.join("load.log"),
            per_process: plan.per_process,
            start_rate: 0.0,
        },
    )?;
    let start_us = load.started(WAVE_LIMIT).await?;
    let cpu = |pid: i32| procfs::cpu_seconds(pid, ticks);
    let load_cpu = |load: &Load| load.pids().into_iter().map(cpu).sum::<f64>();
    let (server_cpu0, load_cpu0) = (cpu(d.server.pid()), load_cpu(&load));
    let ups = load.until_all_up(WAVE_LIMIT).await?;
    let connect_cpu = json!({
        "server_cpu_s": cpu(d.server.pid()) - server_cpu0,
        "load_process_cpu_s": load_cpu(&load) - load_cpu0,
    });
    let connect_times: Vec<f64> = ups
        .values()
        .map(|t| t.saturating_sub(start_us) as f64 / 1e6)
        .collect();
    let connect = stats::summarize(&connect_times);
    let connect_peak = stats::peak_in_window(&connect_times, 1.0);
    eprintln!("  all {n} agents online after {:.2} s", connect.max);
    let server_confirmed = server_sees(&d, n, WAVE_LIMIT).await?;
    let rss_connected = procfs::rss_kib(d.server.pid())?;
    let load_rss: u64 = load
        .pids()
        .into_iter()
        .map(|pid| procfs::rss_kib(pid).unwrap_or(0))
        .sum();

    // Idle starts when the connect wave's aftermath is over: every agent has sent two
    // heartbeats since the last one connected. This wait is part of what "idle" means.
    let settle = 2 * IDLE_SYNC_RATE;
    eprintln!(
        "  settling for {settle:?}, then idle for {:?} (server CPU window)",
        plan.idle
    );
    tokio::time::sleep(settle).await;
    let downs_before = load.downs;
    let window = CpuWindow::start(&[d.server.pid()])?;
    let load_window = CpuWindow::start(&load.pids())?;
    // The window's length is the measurement; its tenths are recorded too, to show whether
    // the server was still settling at its start.
    let mut slices = Vec::new();
    for _ in 0..10 {
        let slice = CpuWindow::start(&[d.server.pid()])?;
        tokio::time::sleep(plan.idle / 10).await;
        slices.push(slice.percent(&[d.server.pid()], ticks)?.0);
    }
    let (cpu_percent, window_secs) = window.percent(&[d.server.pid()], ticks)?;
    let (load_cpu_percent, _) = load_window.percent(&load.pids(), ticks)?;
    let rss_idle = procfs::rss_kib(d.server.pid())?;
    let _ = load.drain();
    let drops_during_idle = load.downs - downs_before;
    let rss_with_agents = rss_connected.max(rss_idle);
    let per_agent_kib = rss_with_agents.saturating_sub(rss_before) as f64 / n as f64;

    eprintln!("  restarting the server");
    let stop_us = now_us();
    let load_cpu_restart0 = load_cpu(&load);
    let stop_took = d.server.restart().await?;
    let listening_us = d
        .server
        .listening_wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_micros() as u64);
    let mut reconnects: HashMap<usize, u64> = HashMap::new();
    // Every agent must go down and come back: count only "up" after the stop.
    let deadline = tokio::time::Instant::now() + WAVE_LIMIT;
    while reconnects.len() < n {
        match load
            .next(deadline)
            .await
            .with_context(|| format!("{}/{n} agents back after the restart", reconnects.len()))?
        {
            LoadEvent::Up { i, t_us } if t_us >= stop_us => {
                reconnects.insert(i, t_us);
            }
            _ => {}
        }
    }
    let back: Vec<f64> = reconnects
        .values()
        .map(|t| (*t as f64 - listening_us as f64) / 1e6)
        .collect();
    let restart_cpu = json!({
        "new_server_cpu_s": cpu(d.server.pid()),
        "load_process_cpu_s": load_cpu(&load) - load_cpu_restart0,
    });
    let back_summary = stats::summarize(&back);
    let back_peak = stats::peak_in_window(&back, 1.0);
    let early = back.iter().filter(|t| **t < 0.0).count();
    server_sees(&d, n, WAVE_LIMIT).await?;
    eprintln!(
        "  all {n} back {:.2} s after the new server listened (peak {back_peak}/s)",
        back_summary.max
    );
    load.terminate(Duration::from_secs(15)).await;
    drop(d);

    let baseline_result = baseline_idle(baseline, plan, ticks).await;
    let (b_per_tunnel, b_cpu, b_details) = match baseline_result {
        Ok((per, cpu, details)) => (Some(per), Some(cpu), details),
        Err(e) => (None, None, json!({ "error": format!("{e:#}") })),
    };

    let figures = vec![
        Figure::new("agents.connect_all", format!("idle agents: connect all {n}"), "s")
            .postern(connect.max)
            .details(json!({
                "per_agent_s": connect,
                "peak_per_second": connect_peak,
                "server_listed_all_after_s": server_confirmed.as_secs_f64(),
                "load_process_rss_kib": load_rss,
                "cpu_while_connecting": connect_cpu,
                "note": "the load process and the server share the machine's cores",
            }))
            .judged(),
        Figure::new("agents.server_rss_per_agent", "idle agents: server RSS per agent", "KiB")
            .postern(per_agent_kib)
            .baseline(b_per_tunnel)
            .bound(Bound::AtMost(32.0))
            .details(json!({
                "rss_before_kib": rss_before,
                "rss_all_connected_kib": rss_connected,
                "rss_after_idle_kib": rss_idle,
                "agents": n,
                "baseline": b_details,
            }))
            .judged(),
        Figure::new("agents.server_cpu_idle", format!("idle agents: server CPU over {:.0} s", window_secs), "% of a core")
            .postern(cpu_percent)
            .baseline(b_cpu)
            .bound(Bound::AtMost(5.0))
            .details(json!({
                "window_s": window_secs,
                "links_dropped_during_window": drops_during_idle,
                "load_process_cpu_percent": load_cpu_percent,
                "server_cpu_percent_by_tenth_of_window": slices,
            }))
            .judged(),
        Figure::new("agents.restart_back_online", "idle agents: all back online after restart", "s")
            .postern(back_summary.max)
            .bound(Bound::AtMost(60.0))
            .details(json!({
                "from": "the new server's \"agent gateway:\" line (printed once it listens)",
                "per_agent_s": back_summary,
                "reconnected_before_that_line": early,
                "server_stop_took_s": stop_took.as_secs_f64(),
                "cpu_until_all_back": restart_cpu,
                "baseline": "none: ssh -R does not reconnect by itself (that takes autossh or a service manager)",
            }))
            .judged(),
        Figure::new("agents.restart_peak_rate", "idle agents: peak reconnections in any 1 s", "/s")
            .postern(back_peak as f64)
            .details(json!({ "initial_connect_peak_per_second": connect_peak }))
            .judged(),
    ];
    Ok(figures)
}

/// The relay holding idle `ssh -N -R` tunnels: memory per tunnel (PSS of the relay's
/// processes, which share pages) and CPU over the same idle window.
async fn baseline_idle(
    baseline: &Baseline,
    plan: &AgentsPlan,
    ticks: u64,
) -> Result<(f64, f64, serde_json::Value)> {
    let m = plan.baseline_tunnels;
    let relay = baseline.relay.proc.pid();
    let tree = |root: i32| {
        let mut pids = vec![root];
        pids.extend(procfs::descendants(root));
        pids
    };
    let before_pids = tree(relay);
    let pss_before: u64 = before_pids
        .iter()
        .filter_map(|p| procfs::pss_kib(*p).ok())
        .sum();
    let rss_before: u64 = before_pids
        .iter()
        .filter_map(|p| procfs::rss_kib(*p).ok())
        .sum();
    eprintln!("  baseline: {m} idle ssh -R tunnels on the relay");
    let mut tunnels: Vec<Tunnel> = Vec::with_capacity(m);
    // A few at a time: sshd's default MaxStartups drops bursts of unauthenticated connections.
    for _ in 0..m.div_ceil(8) {
        let batch = (m - tunnels.len()).min(8);
        let opened = proc::join_all((0..batch).map(|_| baseline.open_tunnel()).collect()).await;
        for t in opened {
            tunnels.push(t?.0);
        }
    }
    let pids = tree(relay);
    let pss: u64 = pids.iter().filter_map(|p| procfs::pss_kib(*p).ok()).sum();
    let rss: u64 = pids.iter().filter_map(|p| procfs::rss_kib(*p).ok()).sum();
    let window = CpuWindow::start(&pids)?;
    tokio::time::sleep(plan.idle).await;
    let (cpu, secs) = window.percent(&pids, ticks)?;
    let per_tunnel = pss.saturating_sub(pss_before) as f64 / m as f64;
    for mut t in tunnels {
        let _ = t.proc.kill().await;
    }
    Ok((
        per_tunnel,
        cpu,
        json!({
            "tunnels": m,
            "relay_processes": pids.len(),
            "relay_pss_before_kib": pss_before,
            "relay_pss_with_tunnels_kib": pss,
            "relay_rss_sum_before_kib": rss_before,
            "relay_rss_sum_with_tunnels_kib": rss,
            "rss_sum_per_tunnel_kib": rss.saturating_sub(rss_before) as f64 / m as f64,
            "cpu_window_s": secs,
            "note": "memory per tunnel is PSS (shared pages split among sshd's per-connection processes); sshd has no reconnection to measure",
        }),
    ))
}
