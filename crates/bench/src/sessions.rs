//! Time to running: sequential sessions, each from a fresh client on a fresh PTY.
//!
//! Postern: spawn `postern ssh -q AGENT`; request → running is when the session's `running`
//! event reaches the bench on the event stream (opened once, before the loop); request →
//! prompt is the first byte on the client's PTY. Both from the instant before the spawn.
//! Between iterations the session is stopped and the client reaped — untimed.
//!
//! Baseline: spawn the device's `ssh -N -R 0:…` → its "Allocated port" line (the relay's
//! port accepting); then spawn `ssh -J relay -p PORT 127.0.0.1` on a PTY → its first byte.
//! Both killed between iterations. Iterations alternate Postern and baseline, so that
//! anything else happening on the machine falls on both alike.
//!
//! Reference (no target): the account's login shell started locally on a PTY (argv0 `-sh`,
//! the environment the agent gives it) → its first byte. Both sides' prompt times include
//! this shell start-up; it tells how much of them is the shell rather than the transport.

use std::time::Duration;

use anyhow::{Context, Result};
use postern_protocol::SessionState;
use postern_protocol::api::EventKind;
use serde_json::json;

use crate::baseline::Baseline;
use crate::postern::Deployment;
use crate::report::{Bound, Figure, VsBaseline};
use crate::stats;
use crate::term;

const LIMIT: Duration = Duration::from_secs(60);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Samples {
    running: Vec<f64>,
    prompt: Vec<f64>,
    first_output: Option<String>,
}

impl Samples {
    fn new(n: usize) -> Self {
        Self {
            running: Vec::with_capacity(n),
            prompt: Vec::with_capacity(n),
            first_output: None,
        }
    }

    /// A prompt that arrived `took` after its client started, with its first bytes (the
    /// first sample's are kept, to show what a prompt looked like).
    fn prompt(&mut self, took: Duration, first: &[u8]) {
        self.prompt.push(ms(took));
        self.first_output
            .get_or_insert_with(|| String::from_utf8_lossy(first).into_owned());
    }
}

pub async fn measure(
    d: &Deployment,
    agent: &str,
    baseline: &Baseline,
    login: &str,
    count: usize,
) -> Result<Vec<Figure>> {
    let mut events = d.api.events().await?;
    let mut ours = Samples::new(count);
    let mut theirs = Samples::new(count);
    let mut shell = Samples::new(count);
    for i in 0..count {
        postern_once(d, agent, &mut events, &mut ours)
            .await
            .with_context(|| format!("postern session {}", i + 1))?;
        baseline_once(baseline, &mut theirs)
            .await
            .with_context(|| format!("baseline session {}", i + 1))?;
        shell_once(login, &mut shell)
            .await
            .with_context(|| format!("local login shell {}", i + 1))?;
        if (i + 1) % 10 == 0 || i + 1 == count {
            eprintln!("  {}/{count} sessions", i + 1);
        }
    }
    let r = stats::summarize(&ours.running);
    let rb = stats::summarize(&theirs.running);
    let p = stats::summarize(&ours.prompt);
    let pb = stats::summarize(&theirs.prompt);
    let sh = stats::summarize(&shell.prompt);
    let details = |what: &str| {
        json!({
            "what": what,
            "postern": if what == "running" { &r } else { &p },
            "baseline": if what == "running" { &rb } else { &pb },
        })
    };
    Ok(vec![
        Figure::new("sessions.running.p50", "time to running p50", "ms")
            .postern(r.p50)
            .baseline(Some(rb.p50))
            .bound(Bound::AtMost(30.0))
            .vs_baseline(VsBaseline::Below)
            .details(details("running"))
            .judged(),
        Figure::new("sessions.running.p99", "time to running p99", "ms")
            .postern(r.p99)
            .baseline(Some(rb.p99))
            .bound(Bound::AtMost(100.0))
            .vs_baseline(VsBaseline::Below)
            .judged(),
        Figure::new("sessions.prompt.p50", "time to first prompt byte p50", "ms")
            .postern(p.p50)
            .baseline(Some(pb.p50))
            .bound(Bound::AtMost(60.0))
            .vs_baseline(VsBaseline::Below)
            .details(json!({
                "summary": details("prompt"),
                "first_output_postern": ours.first_output,
                "first_output_baseline": theirs.first_output,
                "first_output_local_shell": shell.first_output,
                "samples_ms": { "postern_running": ours.running, "postern_prompt": ours.prompt,
                                "baseline_running": theirs.running, "baseline_prompt": theirs.prompt,
                                "local_shell_prompt": shell.prompt },
            }))
            .judged(),
        Figure::new("sessions.prompt.p99", "time to first prompt byte p99", "ms")
            .postern(p.p99)
            .baseline(Some(pb.p99))
            .judged(),
        Figure::new(
            "sessions.local_shell.p50",
            "reference: login shell alone, first byte p50",
            "ms",
        )
        .postern(sh.p50)
        .details(json!({
            "what": "the account's login shell on a local PTY, no SSH: part of both prompt times",
            "summary": sh,
        }))
        .judged(),
    ])
}

/// The account's login shell, started the way the agent starts it, on a local PTY.
async fn shell_once(login: &str, samples: &mut Samples) -> Result<()> {
    let user =
        nix::unistd::User::from_name(login)?.with_context(|| format!("no account {login:?}"))?;
    let shell = user.shell.display().to_string();
    let name = shell.rsplit('/').next().unwrap_or("sh");
    let command = pty_process::Command::new(&shell)
        .arg0(format!("-{name}"))
        .env_clear()
        .env("HOME", &user.dir)
        .env("USER", &user.name)
        .env("LOGNAME", &user.name)
        .env("SHELL", &shell)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("TERM", "xterm-256color")
        .current_dir(if user.dir.is_dir() {
            user.dir.as_path()
        } else {
            std::path::Path::new("/")
        })
        .gid(user.gid.as_raw())
        .uid(user.uid.as_raw());
    let (mut client, started) = term::spawn("login shell", command)?;
    let (at, first) = client.first_output(LIMIT).await?;
    client.prove_shell(LIMIT).await?;
    samples.prompt(at.duration_since(started), &first);
    client.proc.kill().await?;
    Ok(())
}

async fn postern_once(
    d: &Deployment,
    agent: &str,
    events: &mut crate::api::Events,
    samples: &mut Samples,
) -> Result<()> {
    let command = d.cli.pty_command().args(d.cli.ssh_args(agent));
    let (mut client, started) = term::spawn("postern ssh", command)?;
    let running = events.wait_for(LIMIT, "session running", |e| {
        let s = e.session.as_ref()?;
        (e.kind == EventKind::SessionState && s.state == SessionState::Running)
            .then(|| s.id.clone())
    });
    let prompt = client.first_output(LIMIT);
    let ((running_at, id), (prompt_at, first)) = tokio::try_join!(running, prompt)?;
    client.prove_shell(LIMIT).await?;
    samples.running.push(ms(running_at.duration_since(started)));
    samples.prompt(prompt_at.duration_since(started), &first);

    // Cleanup, untimed: stop the session, see it stopped, reap the client.
    d.api.stop_session(&id).await?;
    events
        .wait_for(LIMIT, "session stopped", |e| {
            let s = e.session.as_ref()?;
            (s.id == id && s.state == SessionState::Stopped).then_some(())
        })
        .await?;
    if client.proc.wait_for(LIMIT).await.is_err() {
        client.proc.kill().await?;
    }
    Ok(())
}

async fn baseline_once(baseline: &Baseline, samples: &mut Samples) -> Result<()> {
    let (mut tunnel, running) = baseline.open_tunnel().await?;
    samples.running.push(ms(running));
    let (mut client, started) = term::spawn("ssh -J", baseline.user_pty_command(tunnel.port))?;
    let (at, first) = client.first_output(LIMIT).await?;
    client.prove_shell(LIMIT).await?;
    samples.prompt(at.duration_since(started), &first);
    client.proc.kill().await?;
    tunnel.proc.kill().await?;
    Ok(())
}
