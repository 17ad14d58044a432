//! The web terminal keeps its shell while the path to the device is broken and this server
//! lives: the agent's link cut silently for 30 s, the session `detached` (the socket is
//! told), and once the agent links again the server re-attaches by itself. The browser's
//! socket gets exactly what the shell printed meanwhile — a counter every 10 ms, contiguous —
//! and a line typed while detached arrives once. A cut longer than the agent's grace ends the
//! shell, and the socket says why. After a server restart, a cut still delivers what was on
//! its way, once. (A server killed and started again: the Chromium test
//! web/e2e/survive.test.mjs.)

use std::time::{Duration, Instant};

use postern_protocol::SessionState;
use postern_protocol::api::TerminalServerFrame;

use crate::harness::{TestAgent, TestServer, approved, eventually};
use crate::link_proxy::Proxy;
use crate::terminal::{Attached, running_session};

/// A counter every 10 ms until a line is typed (`read -t 0` only asks whether one is there).
const COUNTER: &str = "i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); echo c$i; \
     if read -t 0; then read -r line; echo \"stopped-by-$line\"; break; fi; sleep 0.01; done\n";

fn counter(output: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(output)
        .split(['\r', '\n'])
        .filter_map(|line| line.strip_prefix('c')?.parse().ok())
        .collect()
}

fn assert_contiguous(output: &[u8]) {
    let numbers = counter(output);
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "the counter is not contiguous");
}

/// The next session state the socket is told, skipping output.
async fn next_state(tab: &mut Attached) -> (SessionState, Option<String>) {
    loop {
        if let TerminalServerFrame::State { state, reason } = tab.next_frame().await {
            return (state, reason);
        }
    }
}

/// The outage: the agent's link cut silently this long.
const CUT: Duration = Duration::from_secs(30);

/// A server that gives a silent link up after 3 s, and an agent (through a link proxy the
/// test can freeze) that gives its own up after 3 missed keepalives a second apart.
async fn behind_a_proxy(name: &str, grace: Duration) -> (TestServer, Proxy, TestAgent) {
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.heartbeat_timeout = Duration::from_secs(3);
    })
    .await;
    let proxy = Proxy::start(server.agent_addr()).await;
    let token = server.create_token(600, 1).await;
    let agent = TestAgent::start_with(&server, name, Some(token), |o| {
        o.servers = vec![proxy.addr.to_string()];
        o.sync_rate = Duration::from_secs(1);
        o.keepalive = Duration::from_secs(1);
        o.reconnect_max = Duration::from_secs(1);
        o.shell_grace = grace;
    });
    agent.wait_state("approved", approved).await;
    (server, proxy, agent)
}

#[tokio::test]
async fn the_web_terminal_keeps_its_shell_through_a_silent_cut_of_the_agent_link() {
    let (server, proxy, _agent) = behind_a_proxy("webkeeper", Duration::from_secs(600)).await;
    let admin = server.admin_token.clone();
    let id = running_session(&server, "webkeeper", &admin).await;

    let mut tab = Attached::open(&server, &admin, &id, "from=0&cols=100&rows=30").await;
    tab.type_in(COUNTER).await;
    tab.read_until_with("the counter", |out| counter(out).len() >= 30)
        .await;
    let before = *counter(tab.output()).last().unwrap();

    proxy.freeze();
    let cut = Instant::now();
    let (state, reason) = next_state(&mut tab).await;
    assert_eq!(
        (state, reason.as_deref()),
        (SessionState::Detached, Some("agent link lost"))
    );
    // Typed while the device is out of reach: delivered once it is back.
    tab.type_in("halt\n").await;
    // The outage lasts its full length (the scenario, not a wait for something).
    tokio::time::sleep(CUT.saturating_sub(cut.elapsed())).await;
    proxy.thaw();
    assert_eq!(next_state(&mut tab).await.0, SessionState::Running);
    tab.read_until("stopped-by-halt\r\n").await;
    assert!(counter(tab.output()).last().unwrap() > &before);
    assert_contiguous(tab.output());

    tab.type_in("echo typed-$((6*7))\n").await;
    tab.read_until("typed-42\r\n").await;
    let text = String::from_utf8_lossy(tab.output()).into_owned();
    assert_eq!(text.matches("stopped-by-halt").count(), 1, "{text}");
    assert_eq!(text.matches("typed-42\r\n").count(), 1, "{text}");
    assert_contiguous(tab.output());
}

/// After a server restart the terminal re-attaches to the kept shell, whose input already
/// counts what was typed before; a link cut then must send again exactly what the shell did
/// not take, numbered as the shell numbers it (the carrier once counted from its own start,
/// and dropped the line typed just as the link went silent).
#[tokio::test]
async fn after_a_server_restart_a_cut_of_the_agent_link_still_delivers_what_was_in_flight() {
    let (mut server, proxy, _agent) = behind_a_proxy("restarted", Duration::from_secs(600)).await;
    let admin = server.admin_token.clone();
    let id = running_session(&server, "restarted", &admin).await;
    let mut tab = Attached::open(&server, &admin, &id, "from=0&cols=100&rows=30").await;
    let first = "echo one-$((1+1))\n";
    tab.type_in(first).await;
    tab.read_until("one-2\r\n").await;
    let TerminalServerFrame::Attached {
        shell: Some(shell), ..
    } = tab.frames[0].clone()
    else {
        panic!("no shell named: {:?}", tab.frames[0]);
    };
    let offset = tab.offset;
    drop(tab);

    server.restart().await;
    server
        .wait_session(&id, &admin, SessionState::Running)
        .await;
    let query = format!("from={offset}&shell={shell}&cols=100&rows=30");
    let mut tab = Attached::open(&server, &admin, &id, &query).await;
    assert!(
        matches!(tab.frames[0], TerminalServerFrame::Attached { input, .. } if input == first.len() as u64),
        "the shell's input count after the restart: {:?}",
        tab.frames[0]
    );

    // Typed as the link goes silent: on its way, never taken.
    proxy.freeze();
    tab.type_in("echo two-$((2+2))\n").await;
    loop {
        if next_state(&mut tab).await.0 == SessionState::Detached {
            break;
        }
    }
    proxy.thaw();
    tab.read_until("two-4\r\n").await;
    tab.type_in("echo three-$((3+3))\n").await;
    tab.read_until("three-6\r\n").await;
    let text = String::from_utf8_lossy(tab.output()).into_owned();
    assert_eq!(text.matches("two-4\r\n").count(), 1, "{text}");
}

#[tokio::test]
async fn a_cut_longer_than_the_grace_ends_the_web_terminals_shell_and_says_why() {
    let (server, proxy, agent) = behind_a_proxy("shortlived", Duration::from_secs(2)).await;
    let admin = server.admin_token.clone();
    let id = running_session(&server, "shortlived", &admin).await;
    let mut tab = Attached::open(&server, &admin, &id, "from=0&cols=100&rows=30").await;
    tab.type_in("echo pid=$$ re\"\"ady\n").await;
    tab.read_until(" ready\r\n").await;
    let text = String::from_utf8_lossy(tab.output()).into_owned();
    let pid: i32 = text
        .split("pid=")
        .filter_map(|s| s.split(' ').next()?.parse().ok())
        .next()
        .unwrap();

    proxy.freeze();
    assert_eq!(next_state(&mut tab).await.0, SessionState::Detached);
    // The agent gives its link up, and its grace runs out while the network is still down:
    // the shell is ended (gone from /proc: ended and reaped by the agent).
    agent.wait_state("the link dropped", |s| !s.connected).await;
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    eventually("the shell to be ended at its grace", || async {
        (!proc.exists()).then_some(())
    })
    .await;
    proxy.thaw();
    // The session ends with the reason, and the socket says so.
    let mut states = Vec::new();
    while !states.iter().any(|(s, _): &(SessionState, _)| s.is_final()) {
        states.push(next_state(&mut tab).await);
    }
    assert_eq!(
        states.last().map(|(s, r)| (*s, r.as_deref())),
        Some((SessionState::Stopped, Some("grace expired"))),
        "{states:?}"
    );
}

/// Node A holds the agent's link; the browser's terminal is on node B. A is killed for good: a
/// survivor detaches the session (`node lost`), the agent links to B or C, and B's terminal
/// re-attaches by itself — the socket open all along. The way to B and C is held shut until
/// the session has detached, so that the takeover comes first (as survive::killed does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_terminal_keeps_its_shell_when_the_node_holding_the_agent_link_is_killed() {
    let mut three = crate::survive::killed::ThreeNodes::start("webwanderer").await;
    let admin = three.node_b.admin_token.clone();
    let id = running_session(&three.node_b, "webwanderer", &admin).await;
    let mut tab = Attached::open(&three.node_b, &admin, &id, "from=0&cols=100&rows=30").await;
    tab.type_in(COUNTER).await;
    tab.read_until_with("the counter", |out| counter(out).len() >= 30)
        .await;
    let before = *counter(tab.output()).last().unwrap();
    // Node A recorded that the agent keeps the session's shell.
    let store = three.node_b.store().await;
    let session = postern_protocol::SessionId::parse(&id).unwrap();
    eventually("the session's shell recorded as kept", || async {
        let s = store.session(&session).await.unwrap().unwrap();
        s.shells_kept.then_some(())
    })
    .await;

    three.to_b.freeze();
    three.to_c.freeze();
    three.node_a.kill().await;
    let (state, reason) = next_state(&mut tab).await;
    assert_eq!(
        (state, reason.as_deref()),
        (SessionState::Detached, Some("node lost"))
    );
    tab.type_in("halt\n").await;
    three.to_b.thaw();
    three.to_c.thaw();
    assert_eq!(next_state(&mut tab).await.0, SessionState::Running);
    tab.read_until("stopped-by-halt\r\n").await;
    assert!(counter(tab.output()).last().unwrap() > &before);
    assert_contiguous(tab.output());
    let text = String::from_utf8_lossy(tab.output()).into_owned();
    assert_eq!(text.matches("stopped-by-halt").count(), 1, "{text}");
}
