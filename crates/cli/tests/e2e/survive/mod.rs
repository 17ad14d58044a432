//! Shells that survive (issue 13), end to end with real processes: `postern ssh` on a real
//! terminal keeps its shell through a server restart and a silent cut of the agent's link;
//! the session shows `detached` meanwhile, the user's terminal re-attaches by itself, and the
//! shell's output — a counter printed every 10 ms — arrives contiguous: no number missing or
//! repeated. What is typed while detached is delivered once. A server killed with `kill -9`
//! and the node holding the agent's link lost: `killed`; the user's own network cut and a
//! client that does not read: `client`.

mod client;
pub mod killed;

use std::path::Path;
use std::time::{Duration, Instant};

use postern_protocol::SessionState;
use postern_protocol::api::{EventKind, SessionView};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{DEADLINE, TestAgent, TestServer, approved, approved_agent, cli_home};
use crate::link_proxy::Proxy;

/// The shell's counter: one line every 10 ms, until it is typed `stop` (no interrupt: bash
/// may take one twice, or not end the loop). Between two it shows each whole line of input it
/// has (`got:LINE`; `read -t 0` only asks whether one is there, so no timeout cuts a line),
/// the terminal's echo off: what was typed shows exactly as many times as the shell took it.
const COUNTER: &[u8] = b"stty -echo; i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); echo c$i; \
    if read -t 0; then read -r l; echo got:$l; [ \"$l\" = stop ] && break; fi; sleep 0.01; \
    done\n";
/// A line typed while the shell is out of reach.
const TYPED: &[u8] = b"typed-while-away\n";
/// How the shell shows `TYPED`, once taken.
const TAKEN: &str = "got:typed-while-away\r\n";
/// How long the scenarios of a silent cut last (the figure).
const CUT: Duration = Duration::from_secs(30);

/// `postern ssh -q AGENT` on a real terminal.
fn ssh_on_pty(home: &Path, agent: &str) -> (pty_process::Pty, tokio::process::Child) {
    let (pty, pts) = pty_process::open().unwrap();
    pty.resize(pty_process::Size::new(40, 120)).unwrap();
    let child = pty_process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["ssh", "-q", agent])
        .env("POSTERN_HOME", home)
        .env("TERM", "xterm-256color")
        .kill_on_drop(true)
        .spawn(pts)
        .unwrap();
    (pty, child)
}

/// Reads the terminal until `done` holds for what it showed.
async fn read_until(pty: &mut pty_process::Pty, seen: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    let found = tokio::time::timeout(DEADLINE * 3, async {
        let mut buf = [0u8; 8192];
        while !done(seen) {
            let n = pty.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        true
    })
    .await;
    if !matches!(found, Ok(true)) {
        // What the terminal showed besides the counter, and the counter's extent.
        let text = String::from_utf8_lossy(seen);
        let other: Vec<&str> = text
            .split("\r\n")
            .filter(|l| {
                l.strip_prefix('c')
                    .is_none_or(|n| n.parse::<u64>().is_err())
            })
            .collect();
        let numbers = counter(seen);
        panic!(
            "never saw it; besides the counter ({:?} to {:?}, {} lines): {:?}",
            numbers.first(),
            numbers.last(),
            numbers.len(),
            &other[other.len().saturating_sub(40)..]
        );
    }
}

/// The counter's numbers, in the order shown.
fn counter(seen: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(seen)
        .split(['\r', '\n'])
        .filter_map(|line| line.strip_prefix('c')?.parse().ok())
        .collect()
}

fn contains(seen: &[u8], needle: &str) -> bool {
    String::from_utf8_lossy(seen).contains(needle)
}

/// The only session of `agent`, as the server has it now.
async fn session_of(server: &TestServer, agent: &str) -> SessionView {
    session_at(&server.url(), &server.admin_token, agent).await
}

/// The only session of `agent`, as the server at `url` has it now.
async fn session_at(url: &str, token: &str, agent: &str) -> SessionView {
    let sessions: Vec<SessionView> = reqwest::Client::new()
        .get(format!("{url}/api/v1/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    sessions
        .into_iter()
        .find(|s| s.agent.name == agent)
        .unwrap()
}

/// The states session `id` went through, in order, from the stored events.
fn steps(mut events: Vec<postern_protocol::api::EventView>, id: &str) -> Vec<SessionState> {
    events.sort_by_key(|e| e.id);
    events
        .iter()
        .filter(|e| e.kind == EventKind::SessionState)
        .filter_map(|e| e.session.as_ref().filter(|s| s.id.as_str() == id))
        .map(|s| s.state)
        .collect()
}

/// The session detached and ran again, recorded as its last two steps.
fn detached_then_running(steps: &[SessionState]) {
    assert!(
        steps.ends_with(&[SessionState::Detached, SessionState::Running]),
        "the detach and the re-attach are not both recorded: {steps:?}"
    );
}

/// Starts the counter in a surviving `postern ssh` shell and waits until it has printed a
/// while; returns what the terminal showed.
async fn counting(pty: &mut pty_process::Pty) -> Vec<u8> {
    let mut seen = Vec::new();
    pty.write_all(COUNTER).await.unwrap();
    read_until(pty, &mut seen, |s| counter(s).len() >= 30).await;
    seen
}

/// After an outage: the terminal re-attached by itself, the counter went on, what was typed
/// meanwhile (`TYPED`) reached the shell, and the stream is contiguous.
async fn continues(pty: &mut pty_process::Pty, seen: &mut Vec<u8>, before: u64) {
    read_until(pty, seen, |s| {
        contains(s, "postern: re-attached")
            && contains(s, TAKEN)
            && counter(s).last().is_some_and(|n| *n > before)
    })
    .await;
    let numbers = counter(seen);
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "the counter is not contiguous");
}

/// Waits for a shell prompt shown after what was read so far.
async fn prompt_after(pty: &mut pty_process::Pty, seen: &mut Vec<u8>) {
    let mark = seen.len();
    read_until(pty, seen, |s| {
        let after = &s[mark.min(s.len())..];
        after.contains(&b'\n') && (contains(after, "# ") || contains(after, "$ "))
    })
    .await;
}

/// Stops the counter, checks a command typed afterwards runs once and what was typed while
/// away was taken once, and exits.
async fn finish(pty: &mut pty_process::Pty, child: &mut tokio::process::Child, seen: &mut Vec<u8>) {
    pty.write_all(b"stop\n").await.unwrap();
    prompt_after(pty, seen).await;
    pty.write_all(b"echo typed-$((6*7))\n").await.unwrap();
    read_until(pty, seen, |s| contains(s, "typed-42\r\n")).await;
    let numbers = counter(seen);
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "the counter is not contiguous");
    pty.write_all(b"exit 3\n").await.unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("postern ssh did not end")
        .unwrap();
    assert_eq!(status.code(), Some(3), "{}", String::from_utf8_lossy(seen));
    let text = String::from_utf8_lossy(seen);
    assert_eq!(text.matches("typed-42\r\n").count(), 1, "{text}");
    assert!(text.matches(TAKEN).count() <= 1, "taken twice: {text}");
}

#[tokio::test]
async fn postern_ssh_keeps_its_shell_through_a_server_restart() {
    let mut server = TestServer::start().await;
    let _agent = approved_agent(&server, "steadfast").await;
    let home = cli_home(&server, "admin", &server.admin_password).await;
    let (mut pty, mut child) = ssh_on_pty(home.path(), "steadfast");
    let mut seen = counting(&mut pty).await;
    let before = *counter(&seen).last().unwrap();
    let session = session_of(&server, "steadfast").await;

    server.restart().await;
    // Typed while the shell is out of reach: delivered once it is back.
    pty.write_all(TYPED).await.unwrap();
    continues(&mut pty, &mut seen, before).await;
    detached_then_running(&steps(server.events().await, session.id.as_str()));
    assert_eq!(session_of(&server, "steadfast").await.id, session.id);
    finish(&mut pty, &mut child, &mut seen).await;
}

#[tokio::test]
async fn postern_ssh_keeps_its_shell_through_a_30_s_silent_cut_of_the_agent_link() {
    // The server gives a silent link up after 3 s; the agent its own after 3 missed
    // keepalives a second apart. The cut lasts 30 s, far longer than both.
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.heartbeat_timeout = Duration::from_secs(3);
    })
    .await;
    let proxy = Proxy::start(server.agent_addr()).await;
    let token = server.create_token(600, 1).await;
    let agent = TestAgent::start_with(&server, "islander", Some(token), |o| {
        o.servers = vec![proxy.addr.to_string()];
        o.sync_rate = Duration::from_secs(1);
        o.keepalive = Duration::from_secs(1);
        o.reconnect_max = Duration::from_secs(1);
    });
    agent.wait_state("approved", approved).await;
    let home = cli_home(&server, "admin", &server.admin_password).await;
    let (mut pty, mut child) = ssh_on_pty(home.path(), "islander");
    let mut seen = counting(&mut pty).await;
    let before = *counter(&seen).last().unwrap();
    let session = session_of(&server, "islander").await;

    proxy.freeze();
    let cut = Instant::now();
    let detached = server
        .wait_session(
            session.id.as_str(),
            &server.admin_token,
            SessionState::Detached,
        )
        .await;
    assert_eq!(detached.reason.as_deref(), Some("agent link lost"));
    pty.write_all(TYPED).await.unwrap();
    // The scenario's length: the network stays down for `CUT` in all.
    tokio::time::sleep_until((cut + CUT).into()).await;
    proxy.thaw();
    continues(&mut pty, &mut seen, before).await;
    detached_then_running(&steps(server.events().await, session.id.as_str()));
    finish(&mut pty, &mut child, &mut seen).await;
}

#[tokio::test]
async fn a_cut_longer_than_the_grace_ends_the_shell_and_says_why() {
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.heartbeat_timeout = Duration::from_secs(3);
    })
    .await;
    let proxy = Proxy::start(server.agent_addr()).await;
    let token = server.create_token(600, 1).await;
    let agent = TestAgent::start_with(&server, "castaway", Some(token), |o| {
        o.servers = vec![proxy.addr.to_string()];
        o.sync_rate = Duration::from_secs(1);
        o.keepalive = Duration::from_secs(1);
        o.reconnect_max = Duration::from_secs(1);
        o.shell_grace = Duration::from_secs(2);
    });
    agent.wait_state("approved", approved).await;
    let home = cli_home(&server, "admin", &server.admin_password).await;
    let (mut pty, mut child) = ssh_on_pty(home.path(), "castaway");
    let mut seen = Vec::new();
    pty.write_all(b"echo pid=$$ re\"\"ady\n").await.unwrap();
    read_until(&mut pty, &mut seen, |s| contains(s, " ready\r\n")).await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    let pid: i32 = text
        .split("pid=")
        .filter_map(|s| s.split(' ').next()?.parse().ok())
        .next()
        .unwrap();
    counting(&mut pty).await;
    let session = session_of(&server, "castaway").await;

    proxy.freeze();
    server
        .wait_session(
            session.id.as_str(),
            &server.admin_token,
            SessionState::Detached,
        )
        .await;
    // The agent drops its link, and its grace runs out while the network is still down: the
    // shell is ended.
    agent.wait_state("the link dropped", |s| !s.connected).await;
    // Gone from /proc: ended, and reaped by the agent.
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    crate::harness::eventually("the shell to be ended at its grace", || async {
        (!proc.exists()).then_some(())
    })
    .await;
    proxy.thaw();
    let ended = server
        .wait_session(
            session.id.as_str(),
            &server.admin_token,
            SessionState::Stopped,
        )
        .await;
    assert_eq!(ended.reason.as_deref(), Some("grace expired"));
    let out = tokio::time::timeout(DEADLINE * 3, child.wait())
        .await
        .expect("postern ssh did not end")
        .unwrap();
    assert_eq!(out.code(), Some(255));
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), pty.read_to_end(&mut rest)).await;
    assert!(
        contains(&rest, "grace expired"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
}
