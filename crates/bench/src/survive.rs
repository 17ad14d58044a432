//! Shells that survive: a web terminal (the API's WebSocket, as the browser uses it) and an
//! interactive `postern ssh` each watch a shell of one session printing a counter every
//! 10 ms; the server is killed (SIGKILL) and started again, `restarts` times.
//!
//! - Time from the restart (the instant before the new server process is spawned) to the
//!   first counter line the shell printed after the kill, in each client: p50 and p99.
//! - Bytes lost: counter lines missing or repeated in what each client received over every
//!   restart, in bytes (the target is 0).
//! - The agent's memory per detached shell: its RSS with `shells` detached shells each
//!   printing without pause (their output rings full), less its RSS before, per shell.
//!
//! The baseline, the hand-built OpenSSH tunnel, has no figure here: its shell is a child of
//! the tunnel's sshd and dies with it, and nothing re-attaches (said so in the details).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use postern_protocol::SessionState;
use postern_protocol::api::TerminalServerFrame;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::postern::{AgentProc, Binaries, Deployment};
use crate::report::{Bound, Figure};
use crate::{procfs, stats, term};

const LIMIT: Duration = Duration::from_secs(60);
const COUNTER: &str =
    "i=0; while [ $i -lt 100000000 ]; do i=$((i+1)); echo c$i; sleep 0.01; done\r";
// At the lowest priority: 50 busy shells on 2 cores would otherwise starve the next
// `postern ssh` (and the agent's readers) of the CPU.
const FLOOD: &str =
    "renice -n 19 $$ >/dev/null; while :; do echo \"$RANDOM $RANDOM $RANDOM $RANDOM\"; done\r";

pub struct SurvivePlan {
    pub restarts: usize,
    /// Between restarts (the link up this long before the next).
    pub spacing: Duration,
    pub shells: usize,
}

/// What one client received: every counter number, and when each arrived.
#[derive(Default)]
struct Seen {
    numbers: Vec<(Instant, u64)>,
    /// An unfinished line at the end of what was read.
    partial: String,
    /// The client knows its connection is gone (the web socket closed; `postern ssh` said
    /// it is re-attaching).
    lost: bool,
}

impl Seen {
    fn feed(&mut self, at: Instant, bytes: &[u8]) {
        self.partial.push_str(&String::from_utf8_lossy(bytes));
        let text = std::mem::take(&mut self.partial);
        let mut lines: Vec<&str> = text.split('\n').collect();
        self.partial = lines.pop().unwrap_or_default().to_owned();
        for line in lines {
            // What is after a line's last carriage return is what the terminal shows (bash
            // turns bracketed paste off with "ESC[?2004l CR" before a command's output).
            let line = line.trim_end_matches('\r');
            let line = line.rsplit('\r').next().unwrap_or(line);
            if line.contains("re-attaching") {
                self.lost = true;
            }
            if let Some(n) = line.strip_prefix('c').and_then(|n| n.parse().ok()) {
                self.numbers.push((at, n));
            }
        }
    }

    fn last(&self) -> u64 {
        self.numbers.last().map_or(0, |(_, n)| *n)
    }

    /// When the first number above `above` arrived.
    fn first_above(&self, above: u64) -> Option<Instant> {
        self.numbers
            .iter()
            .find(|(_, n)| *n > above)
            .map(|(at, _)| *at)
    }

    /// Bytes of counter lines missing, and repeated, over everything received.
    fn lost_and_repeated(&self) -> (u64, u64) {
        let line = |n: u64| format!("c{n}\r\n").len() as u64;
        let (mut lost, mut repeated, mut expect) = (0, 0, 1);
        for (_, n) in &self.numbers {
            if *n < expect {
                repeated += line(*n);
                continue;
            }
            lost += (expect..*n).map(line).sum::<u64>();
            expect = n + 1;
        }
        (lost, repeated)
    }
}

type Shared = Arc<Mutex<Seen>>;

fn lock(seen: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until `done` holds for what `seen` has (checked every 10 ms).
async fn until(seen: &Shared, what: &str, done: impl Fn(&Seen) -> bool) -> Result<()> {
    let deadline = Instant::now() + LIMIT;
    while !done(&lock(seen)) {
        if Instant::now() > deadline {
            bail!("{what}: not within {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The web terminal as the browser keeps it: attached from its offset and shell name, and
/// attached again (every 100 ms, as long as the bench runs) whenever the socket closes.
fn web_terminal(url: String, authorization: String, typed: String, seen: Shared) {
    tokio::spawn(async move {
        let (mut offset, mut shell, mut typed) = (0u64, None::<String>, Some(typed));
        loop {
            let name = shell
                .as_ref()
                .map(|s| format!("&shell={s}"))
                .unwrap_or_default();
            let Ok(mut request) = format!("{url}?from={offset}{name}").into_client_request() else {
                return;
            };
            let Ok(value) = authorization.parse() else {
                return;
            };
            request.headers_mut().insert("authorization", value);
            if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(request).await {
                while let Some(Ok(message)) = ws.next().await {
                    match message {
                        Message::Binary(bytes) => {
                            offset += bytes.len() as u64;
                            lock(&seen).feed(Instant::now(), &bytes);
                        }
                        Message::Text(text) => {
                            if let Ok(TerminalServerFrame::Attached {
                                offset: at,
                                shell: name,
                                ..
                            }) = serde_json::from_str(&text)
                            {
                                offset = at;
                                shell = name.or(shell);
                                if let Some(keys) = typed.take() {
                                    use futures::SinkExt;
                                    let _ =
                                        ws.send(Message::Binary(keys.into_bytes().into())).await;
                                }
                            }
                        }
                        _ => {}
                    }
                }
                lock(&seen).lost = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Reads `postern ssh`'s terminal into `seen` until it closes.
fn pty_reader(
    mut pty: pty_process::Pty,
    seen: Shared,
) -> tokio::task::JoinHandle<pty_process::Pty> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = pty.read(&mut buf).await {
            if n == 0 {
                break;
            }
            lock(&seen).feed(Instant::now(), &buf[..n]);
        }
        pty
    })
}

pub async fn measure(
    bins: &Binaries,
    dir: &std::path::Path,
    login: &str,
    plan: &SurvivePlan,
) -> Result<Vec<Figure>> {
    let dir = dir.join("survive");
    std::fs::create_dir_all(&dir)?;
    let mut d = Deployment::start(bins, &dir, "survive").await?;
    d.cli.login = Some(login.to_owned());
    let token = d.api.create_token(1).await?;
    let mut events = d.api.events().await?;
    let agent = AgentProc::start(
        &bins.agent,
        &d.server,
        &mut events,
        "survive-agent",
        &token,
        login,
        &dir.join("agent"),
    )
    .await?;
    let session = d.api.start_session(&agent.name).await?;
    if session.state != SessionState::Running {
        let id = session.id.clone();
        events
            .wait_for(LIMIT, "session running", |e| {
                let s = e.session.as_ref()?;
                (s.id == id && s.state == SessionState::Running).then_some(())
            })
            .await?;
    }
    drop(events);

    // The two clients, each with its own counter.
    let web: Shared = Arc::default();
    let url = format!(
        "ws://{}/api/v1/sessions/{}/terminal",
        d.server.http, session.id
    );
    web_terminal(url, d.api.authorization(), COUNTER.to_owned(), web.clone());
    let command = d.cli.pty_command().args(d.cli.ssh_args(&agent.name));
    let (mut ssh, _) = term::spawn("postern ssh", command)?;
    ssh.first_output(LIMIT).await?;
    ssh.write(COUNTER.as_bytes()).await?;
    let cli: Shared = Arc::default();
    let reader = pty_reader(ssh.pty, cli.clone());
    for (seen, name) in [(&web, "web terminal"), (&cli, "postern ssh")] {
        until(seen, &format!("the {name}'s counter"), |s| s.last() >= 50).await?;
    }

    let (mut to_web, mut to_cli) = (Vec::new(), Vec::new());
    for i in 0..plan.restarts {
        // Each restart finds the agent's link up for longer than the agent's stable period
        // (60 s), as a restart in service does: back-to-back restarts would measure the
        // agent's growing reconnection backoff (a flapping server) instead.
        if i > 0 {
            tokio::time::sleep(plan.spacing).await;
        }
        // Both clients know their connection is gone before the new server starts, so that
        // nothing the old one sent can count as new.
        for seen in [&web, &cli] {
            lock(seen).lost = false;
        }
        d.server.kill().await?;
        for (seen, name) in [(&web, "web terminal"), (&cli, "postern ssh")] {
            until(seen, &format!("the {name} to see the server gone"), |s| {
                s.lost
            })
            .await?;
        }
        let (last_web, last_cli) = (lock(&web).last(), lock(&cli).last());
        let spawned = d.server.start_again().await?;
        for (seen, last, out, name) in [
            (&web, last_web, &mut to_web, "web terminal"),
            (&cli, last_cli, &mut to_cli, "postern ssh"),
        ] {
            until(
                seen,
                &format!("new output in the {name} after restart {}", i + 1),
                |s| s.first_above(last).is_some_and(|at| at > spawned),
            )
            .await?;
            let at = lock(seen)
                .first_above(last)
                .ok_or_else(|| anyhow!("no new output"))?;
            out.push(at.duration_since(spawned).as_secs_f64() * 1e3);
        }
    }
    let (web_lost, web_repeated) = lock(&web).lost_and_repeated();
    let (cli_lost, cli_repeated) = lock(&cli).lost_and_repeated();

    // Memory: detached shells printing without pause, each left by its `postern ssh` as soon
    // as it started printing (a client that stopped reading would hold its output back).
    let before = procfs::rss_kib(agent.proc.pid())?;
    for n in 0..plan.shells {
        let command = d.cli.pty_command().args(d.cli.ssh_args(&agent.name));
        let (mut flood, _) = term::spawn("postern ssh (flood)", command)?;
        flood
            .first_output(LIMIT)
            .await
            .with_context(|| format!("detached shell {}", n + 1))?;
        flood.pty.write_all(FLOOD.as_bytes()).await?;
        flood.read_until(b"\n", LIMIT).await?;
        flood.proc.kill().await?;
    }
    // The rings fill within moments of printing without pause; read until the agent's size
    // settles (two readings a second apart within 1%).
    let mut after = procfs::rss_kib(agent.proc.pid())?;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = procfs::rss_kib(agent.proc.pid())?;
        let settled = now.abs_diff(after) * 100 <= after;
        after = now;
        if settled {
            break;
        }
    }
    let per_shell = after.saturating_sub(before) as f64 / plan.shells.max(1) as f64;
    drop(reader);
    let _ = d.api.stop_session(&session.id).await;
    drop(agent);

    let baseline = "the OpenSSH tunnel's shell is a child of its sshd: it dies with it, and nothing re-attaches";
    let (sw, sc) = (stats::summarize(&to_web), stats::summarize(&to_cli));
    let mut figures = Vec::new();
    for (id, name, summary, samples) in [
        ("survive.web", "web terminal", &sw, &to_web),
        ("survive.ssh", "postern ssh", &sc, &to_cli),
    ] {
        for (q, value) in [("p50", summary.p50), ("p99", summary.p99)] {
            figures.push(
                Figure::new(
                    &format!("{id}.restart.{q}"),
                    format!("server killed and restarted → new output, {name}, {q}"),
                    "ms",
                )
                .postern(value)
                .details(json!({ "summary": summary, "samples_ms": samples, "baseline": baseline }))
                .judged(),
            );
        }
    }
    figures.push(
        Figure::new(
            "survive.bytes_lost",
            format!("bytes lost or repeated over {} restarts", plan.restarts),
            "bytes",
        )
        .postern((web_lost + web_repeated + cli_lost + cli_repeated) as f64)
        .bound(Bound::AtMost(0.0))
        .details(json!({
            "web": { "lost": web_lost, "repeated": web_repeated, "lines": lock(&web).numbers.len() },
            "ssh": { "lost": cli_lost, "repeated": cli_repeated, "lines": lock(&cli).numbers.len() },
            "baseline": baseline,
        }))
        .judged(),
    );
    figures.push(
        Figure::new(
            "survive.agent_kib_per_detached_shell",
            format!(
                "agent memory per detached shell ({} printing without pause)",
                plan.shells
            ),
            "KiB",
        )
        .postern(per_shell)
        .details(json!({ "agent_rss_kib_before": before, "agent_rss_kib_after": after, "shells": plan.shells }))
        .judged(),
    );
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_missing_or_repeated_are_counted_in_bytes() {
        let mut seen = Seen::default();
        let at = Instant::now();
        seen.feed(at, b"$ i=0; while\r\n\x1b[?2004l\rc1\r\nc2\r");
        seen.feed(
            at,
            b"\nc4\r\nc4\r\npostern: connection lost; re-attaching\r\nc5\r\n",
        );
        assert_eq!(seen.last(), 5);
        assert!(seen.lost);
        assert_eq!(seen.lost_and_repeated(), (4, 4), "c3 missing, c4 twice");
    }
}
