//! Keystroke latency: one interactive session each — `postern ssh AGENT` and the baseline's
//! `ssh -tt -J relay -p PORT 127.0.0.1` — on its own PTY, running `cat` on a raw remote
//! terminal. The bench writes one byte and times until that byte comes back, `count` times,
//! alternating between the two sessions byte by byte so that both see the same machine.
//! The clients put the local PTY in raw mode themselves (as they do for a person), and the
//! bytes are letters, special to no line discipline. A few round trips each are a warm-up.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::baseline::Baseline;
use crate::postern::Deployment;
use crate::report::{Figure, VsBaseline};
use crate::stats;
use crate::term::{self, OnPty};

const LIMIT: Duration = Duration::from_secs(60);
const WARM_UP: usize = 20;

/// Typed at the prompt: the marker's quotes keep the echo of the line itself from matching.
const START_CAT: &[u8] = b"stty raw -echo; echo RE''ADY; exec cat\r";

async fn prepare(client: &mut OnPty) -> Result<()> {
    client.first_output(LIMIT).await?;
    client.write(START_CAT).await?;
    client.read_until(b"READY", LIMIT).await?;
    for i in 0..WARM_UP {
        client.round_trip(b'a' + (i % 26) as u8, LIMIT).await?;
    }
    Ok(())
}

pub async fn measure(
    d: &Deployment,
    agent: &str,
    baseline: &Baseline,
    count: usize,
) -> Result<Vec<Figure>> {
    let command = d.cli.pty_command().args(d.cli.ssh_args(agent));
    let (mut ours, _) = term::spawn("postern ssh", command)?;
    prepare(&mut ours).await.context("postern session")?;
    let (mut tunnel, _) = baseline.open_tunnel().await?;
    let (mut theirs, _) = term::spawn("ssh -tt -J", baseline.user_pty_command(tunnel.port))?;
    prepare(&mut theirs).await.context("baseline session")?;

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut a = Vec::with_capacity(count);
    let mut b = Vec::with_capacity(count);
    for i in 0..count {
        let byte = b'a' + (i % 26) as u8;
        a.push(us(ours.round_trip(byte, LIMIT).await.context("postern")?));
        b.push(us(theirs
            .round_trip(byte, LIMIT)
            .await
            .context("baseline")?));
    }
    ours.proc.kill().await?;
    theirs.proc.kill().await?;
    tunnel.proc.kill().await?;

    let sa = stats::summarize(&a);
    let sb = stats::summarize(&b);
    Ok(vec![
        Figure::new("latency.p50", "keystroke round trip p50", "µs")
            .postern(sa.p50)
            .baseline(Some(sb.p50))
            .vs_baseline(VsBaseline::AtMost)
            .details(json!({ "postern": sa, "baseline": sb, "warm_up": WARM_UP,
                             "samples_us": { "postern": a, "baseline": b } }))
            .judged(),
        Figure::new("latency.p99", "keystroke round trip p99", "µs")
            .postern(sa.p99)
            .baseline(Some(sb.p99))
            .vs_baseline(VsBaseline::AtMost)
            .judged(),
    ])
}
