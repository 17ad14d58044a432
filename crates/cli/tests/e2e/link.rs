//! The always-on link: online state that tells the truth, reconnection after server restarts,
//! dead links found by keepalives, and an agent that never listens.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postern_protocol::api::EventKind;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{TestAgent, TestServer, approved, eventually, postern, wait_agent_state};

#[tokio::test]
async fn every_agent_comes_back_after_a_server_restart_without_anyone_acting() {
    let mut server = TestServer::start().await;
    let token = server.create_token(3600, 3).await;
    let agents: Vec<TestAgent> = (0..3)
        .map(|i| TestAgent::start(&server, &format!("fleet-{i}"), Some(token.clone())))
        .collect();
    for agent in &agents {
        agent.wait_state("approved", approved).await;
    }
    eventually("three agents online", || async {
        (server.server().online_agents() == 3).then_some(())
    })
    .await;

    server.restart().await;
    // Every link notices the restart...
    for agent in &agents {
        agent
            .wait_state("disconnected or reconnected", |s| {
                !s.connected || s.status.is_some()
            })
            .await;
    }
    // ...and all are back, approved and online, in the new server's eyes.
    eventually("all agents back online", || async {
        (server.server().online_agents() == 3).then_some(())
    })
    .await;
    for i in 0..3 {
        server
            .wait_agent(&format!("fleet-{i}"), "online", |a| a.online)
            .await;
    }
    for agent in &agents {
        agent.wait_state("approved", approved).await;
    }
}

/// A TCP relay that can be frozen: it stops moving bytes but keeps both sockets open, like a
/// NAT that silently dropped the flow.
struct FreezableRelay {
    addr: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl FreezableRelay {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, flag.clone()));
                tokio::spawn(pump(ro, wi, flag.clone()));
            }
        });
        Self { addr, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        if frozen.load(Ordering::SeqCst) {
            // Hold both sockets open and drop everything: the link is dead but not closed.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_silently_dead_link_shows_offline_after_missed_keepalives_and_a_live_one_never_does() {
    let keepalive = Duration::from_millis(500);
    let server = TestServer::start_with(|c| c.keepalive = keepalive).await;
    let relay = FreezableRelay::start(server.agent_addr()).await;
    let token = server.create_token(3600, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut options = TestAgent::options(&server, "behind-nat", &tmp.path().join("a"));
    options.servers = vec![relay.addr.to_string()];
    options.token = Some(token.parse().unwrap());
    // Heartbeats far apart: only SSH keepalives keep the link alive in between.
    options.sync_rate = Duration::from_secs(3600);
    let agent = postern_agent::Agent::start(options).unwrap();
    wait_agent_state(&agent, "approved", approved).await;
    server
        .wait_agent("behind-nat", "online", |a| a.online)
        .await;

    // Several keepalive periods with no heartbeat: a live link stays online throughout.
    tokio::time::sleep(keepalive * 6).await;
    assert!(server.agent("behind-nat").await.unwrap().online);
    assert!(
        !server
            .events()
            .await
            .iter()
            .any(|e| e.kind == EventKind::AgentOffline)
    );

    relay.freeze();
    server
        .wait_agent("behind-nat", "offline", |a| !a.online)
        .await;
    server
        .wait_event("agent offline", |e| e.kind == EventKind::AgentOffline)
        .await;
    agent.shutdown().await.unwrap();
}

/// Socket inodes of a process, from /proc/PID/fd.
fn socket_inodes(pid: u32) -> HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect()
}

/// (state, inode) of every socket in a /proc/net table.
fn proc_net(table: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/net/{table}"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            Some((cols.get(3)?.to_string(), cols.get(9)?.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn a_real_agent_process_logs_its_did_listens_nowhere_and_goes_offline_when_killed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = postern()
        .args(["agent", "--server", &server.agent_addr().to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .args(["--name", "proc-agent"])
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let waiting_line = tokio::time::timeout(crate::harness::DEADLINE, async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("waiting for approval") {
                return line;
            }
        }
        panic!("agent exited");
    })
    .await
    .expect("the agent never said it was waiting for approval");
    let pending = server
        .wait_agent("proc-agent", "online", |a| a.online)
        .await;
    assert!(waiting_line.contains(&pending.did), "{waiting_line}");
    // Keep draining the log so the agent never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });

    server
        .admin_post("/api/v1/agents/proc-agent/approve", serde_json::json!({}))
        .await;
    server
        .wait_agent("proc-agent", "approved", |a| {
            a.online && a.status == postern_protocol::AgentStatus::Approved
        })
        .await;

    // The agent holds sockets (its link) but none of them listens.
    let inodes = socket_inodes(pid);
    assert!(
        !inodes.is_empty(),
        "the agent should hold its outbound link"
    );
    let mut established = 0;
    for table in ["tcp", "tcp6"] {
        for (state, inode) in proc_net(table) {
            if inodes.contains(&inode) {
                assert_ne!(state, "0A", "the agent has a listening TCP socket");
                established += usize::from(state == "01");
            }
        }
    }
    for table in ["udp", "udp6"] {
        for (_, inode) in proc_net(table) {
            assert!(!inodes.contains(&inode), "the agent has a UDP socket");
        }
    }
    assert_eq!(established, 1, "exactly one outbound link");

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    server
        .wait_agent("proc-agent", "offline", |a| !a.online)
        .await;
    server
        .wait_event("proc-agent offline", |e| {
            e.kind == EventKind::AgentOffline
                && e.agent.as_ref().is_some_and(|a| a.name == "proc-agent")
        })
        .await;
}

#[tokio::test]
async fn presence_lists_connected_agents_with_last_seen_moving_with_heartbeats() {
    let server = TestServer::start().await;
    let token = server.create_token(600, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut options = TestAgent::options(&server, "beating", &tmp.path().join("a"));
    options.token = Some(token.parse().unwrap());
    options.sync_rate = Duration::from_millis(200);
    let agent = postern_agent::Agent::start(options).unwrap();
    wait_agent_state(&agent, "approved", approved).await;
    let presence = || async {
        let (status, body) = server
            .call(
                reqwest::Method::GET,
                "/api/v1/presence",
                Some(&server.admin_token),
                None,
            )
            .await;
        assert_eq!(status, 200);
        serde_json::from_value::<Vec<postern_protocol::api::AgentPresence>>(body).unwrap()
    };
    let first = presence().await;
    assert_eq!(first.len(), 1);
    let later = eventually("a heartbeat to move last_seen", || async {
        let now = presence().await;
        (now[0].last_seen > first[0].last_seen).then_some(now)
    })
    .await;
    assert_eq!(later[0].id, first[0].id);

    agent.shutdown().await.unwrap();
    eventually("the agent to leave the presence list", || async {
        presence().await.is_empty().then_some(())
    })
    .await;
}
