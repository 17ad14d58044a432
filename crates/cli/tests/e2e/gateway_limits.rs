//! The gateway's limits before an agent's control channel is up: one deadline from accept
//! over every stage, caps on connections in their handshake (in total and per source), the
//! file limit, and what the gateway answers or logs on the way (`env` requests, revoked keys).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_agent::{Agent, AgentOptions};
use postern_protocol::api::EventKind;
use postern_protocol::{AgentStatus, ErrorCode, ServerMessage};
use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::harness::{DEADLINE, TestAgent, TestServer, eventually, test_key, wait_agent_state};
use crate::raw::{self, AcceptAnyHost};

/// A TCP connection to `addr` from the loopback address `from` (every 127/8 address is this
/// host's: each stands for another source).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// The server's SSH banner, or `None` when the connection was closed without one.
async fn banner(tcp: &mut TcpStream) -> Option<String> {
    match tokio::time::timeout(DEADLINE, read_banner(tcp)).await {
        Ok(answer) => answer,
        Err(_) => panic!("neither a banner nor a close"),
    }
}

async fn read_banner(tcp: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tcp.read(&mut byte).await {
            Ok(0) | Err(_) => return (!line.is_empty()).then(|| lossy(&line)),
            Ok(_) if byte[0] == b'\n' => return Some(lossy(&line)),
            Ok(_) => line.push(byte[0]),
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads (and discards) until the server closes the connection.
async fn closed_by_server(tcp: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "{what}: the server never closed it");
}

/// Waits until the server ends an SSH connection the client keeps open.
async fn ssh_closed_by_server(handle: raw::Handle, what: &str) {
    assert!(
        tokio::time::timeout(DEADLINE, handle).await.is_ok(),
        "{what}: the server never closed it"
    );
}

#[tokio::test]
async fn every_stage_before_the_control_channel_is_up_ends_at_the_handshake_deadline() {
    let server = TestServer::start_with(|c| c.handshake_timeout = Duration::from_secs(3)).await;
    let addr = server.agent_addr();
    // An agent whose control channel is up (it waits for approval) is past the deadline.
    let agent = TestAgent::start(&server, "waiting", None);
    agent
        .wait_state("pending", |s| {
            s.connected && s.status == Some(AgentStatus::Pending)
        })
        .await;

    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut after_banner = TcpStream::connect(addr).await.unwrap();
    assert!(
        banner(&mut after_banner)
            .await
            .unwrap()
            .starts_with("SSH-2.0-")
    );
    after_banner.write_all(b"SSH-2.0-stalls\r\n").await.unwrap();
    let config = Arc::new(client::Config::default());
    let no_auth = client::connect(config, addr, AcceptAnyHost).await.unwrap();
    let (no_channel, ok) = raw::connect(addr, &test_key(71)).await;
    assert!(ok);
    let (no_subsystem, _) = raw::connect(addr, &test_key(72)).await;
    let _channel = no_subsystem.channel_open_session().await.unwrap();
    let (no_hello, _) = raw::connect(addr, &test_key(73)).await;
    let mut control = raw::control(&no_hello).await;

    closed_by_server(&mut silent, "a connection that sends nothing").await;
    closed_by_server(&mut after_banner, "a connection stalled after its banner").await;
    ssh_closed_by_server(no_auth, "a connection that never authenticates").await;
    ssh_closed_by_server(no_channel, "an authenticated connection with no channel").await;
    ssh_closed_by_server(no_subsystem, "a channel with no control subsystem").await;
    match raw::receive(&mut control).await {
        Some(ServerMessage::Error { code, message }) => {
            assert_eq!(code, ErrorCode::UnexpectedMessage);
            assert!(message.contains("too long"), "{message}");
        }
        other => panic!("a control channel that never says hello: {other:?}"),
    }
    ssh_closed_by_server(no_hello, "a control channel that never says hello").await;

    // The enrolled agent was never cut: its link never went down.
    assert!(agent.agent.as_ref().unwrap().state().borrow().connected);
    let offline = server
        .events()
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::AgentOffline)
        .count();
    assert_eq!(offline, 0, "the waiting agent's link went down");
    assert!(server.agents().await.iter().all(|a| a.name == "waiting"));
}

#[tokio::test]
async fn connections_over_the_handshake_limits_are_refused_at_once_and_agents_still_enroll() {
    let server = TestServer::start_with(|c| {
        c.max_handshakes = 4;
        c.max_handshakes_per_source = 3;
    })
    .await;
    let addr = server.agent_addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = connect_from("127.0.0.2", addr).await;
        assert!(
            banner(&mut tcp).await.is_some(),
            "within the per-source limit"
        );
        held.push(tcp);
    }
    let mut over = connect_from("127.0.0.2", addr).await;
    assert_eq!(
        banner(&mut over).await,
        None,
        "one over the per-source limit"
    );

    let mut other = connect_from("127.0.0.3", addr).await;
    assert!(
        banner(&mut other).await.is_some(),
        "another source still comes in"
    );
    let mut over_total = connect_from("127.0.0.4", addr).await;
    assert_eq!(banner(&mut over_total).await, None, "one over the total");

    // A slot freed is a slot to use.
    drop(other);
    eventually("a freed slot to be given out again", || async {
        let mut tcp = connect_from("127.0.0.4", addr).await;
        banner(&mut tcp).await.map(|_| tcp)
    })
    .await;

    // The full source is still held back, and an agent from elsewhere enrolls.
    let mut again = connect_from("127.0.0.2", addr).await;
    assert_eq!(banner(&mut again).await, None);
    let agent = TestAgent::start(&server, "elsewhere", None);
    agent
        .wait_state("enrolled", |s| {
            s.connected && s.status == Some(AgentStatus::Pending)
        })
        .await;
    drop(held);
}

#[tokio::test]
async fn an_env_request_that_wants_a_reply_gets_a_failure() {
    let server = TestServer::start().await;
    let (h, _) = raw::connect(server.agent_addr(), &test_key(81)).await;
    assert!(
        !raw::channel_request_granted(&h, async |c| c
            .set_env(true, "LANG", "C.UTF-8")
            .await
            .unwrap())
        .await,
        "env"
    );
}

/// A `postern server` process, started through `sh` so that `limits` (shell commands such as
/// `ulimit -n 256`) apply to it alone.
struct ServerProcess {
    child: tokio::process::Child,
    http: String,
    agents: SocketAddr,
    password: String,
    fingerprint: String,
    logs: mpsc::UnboundedReceiver<String>,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    async fn start(limits: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{limits}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_postern"))
            .args([
                "server",
                "--http",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Logs are read all along: a full pipe would stall the server.
        let (tx, logs) = mpsc::unbounded_channel();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let _ = tx.send(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let lines = crate::harness::read_until(&mut stdout, "host key:").await;
        let field = |label: &str| {
            lines
                .iter()
                .find_map(|l| l.trim().strip_prefix(label))
                .unwrap_or_else(|| panic!("no {label} in {lines:#?}"))
                .trim()
                .to_owned()
        };
        let http = field("HTTP API:").trim_end_matches("/api/v1").to_owned();
        Self {
            agents: field("agent gateway:").parse().unwrap(),
            password: field("password:"),
            fingerprint: field("host key:"),
            http,
            child,
            logs,
            _dir: dir,
        }
    }

    /// Reads the server's log until a line contains `needle`.
    async fn log_line(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = self.logs.recv().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("the server never logged {needle:?}"),
        }
    }

    /// The open-file limits (soft, hard) of the server process, as the kernel has them.
    fn file_limits(&self) -> (String, String) {
        let pid = self.child.id().unwrap();
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        file_limits(&limits)
    }

    async fn health(&self) -> u16 {
        let client = reqwest::Client::builder()
            .timeout(DEADLINE)
            .build()
            .unwrap();
        let response = client
            .get(format!("{}/api/v1/health", self.http))
            .send()
            .await
            .expect("/api/v1/health answers");
        response.status().as_u16()
    }

    async fn admin_token(&self) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/login", self.http))
            .json(&serde_json::json!({"user": "admin", "password": self.password}))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }
}

fn file_limits(proc_limits: &str) -> (String, String) {
    let line = proc_limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_soft_file_limit_is_raised_to_the_hard_limit_at_start() {
    let (_, hard) = file_limits(&std::fs::read_to_string("/proc/self/limits").unwrap());
    let mut server = ServerProcess::start("ulimit -Sn 200").await;
    assert_eq!(server.file_limits(), (hard.clone(), hard.clone()));
    let line = server.log_line("open-file limit").await;
    assert!(
        line.contains("soft_at_start=200") && line.contains(&format!("hard={hard}")),
        "{line}"
    );
}

#[tokio::test]
async fn a_server_with_few_files_keeps_its_api_and_enrolls_agents_under_a_flood() {
    let mut server = ServerProcess::start("ulimit -n 256").await;
    assert_eq!(server.file_limits(), ("256".into(), "256".into()));
    // More silent connections than the server has files.
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(connect_from("127.0.0.2", server.agents).await);
    }
    // Until the server has dealt with each: a banner, or closed at once. (A server out of
    // files deals with none of the rest: the wait is then bounded, and the checks fail.)
    let answers = futures::future::join_all(
        flood
            .iter_mut()
            .map(|tcp| async { tokio::time::timeout(DEADLINE, read_banner(tcp)).await }),
    )
    .await;
    assert_eq!(server.health().await, 200);
    let refused = answers.iter().filter(|a| matches!(a, Ok(None))).count();
    assert!(refused > 0, "the excess was not refused");
    server
        .log_line("refused agent connections over the handshake limits")
        .await;

    let dir = tempfile::tempdir().unwrap();
    let mut options = AgentOptions::new(server.agents.to_string(), dir.path().join("agent"));
    options.name = Some("under-flood".into());
    options.reconnect_min = Duration::from_millis(50);
    options.reconnect_max = Duration::from_millis(500);
    let agent = Agent::start(options).unwrap();
    wait_agent_state(&agent, "enrolled", |s| {
        s.connected && s.status == Some(AgentStatus::Pending)
    })
    .await;
    assert_eq!(server.health().await, 200);
    agent.shutdown().await.unwrap();
    drop(flood);
}

/// Connects with `key` and tries it `attempts` times; returns the client's port.
async fn try_key(addr: SocketAddr, key: &PrivateKey, attempts: usize) -> u16 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let config = Arc::new(client::Config::default());
    let mut handle = client::connect_stream(config, tcp, AcceptAnyHost)
        .await
        .unwrap();
    for _ in 0..attempts {
        let signed = PrivateKeyWithHashAlg::new(Arc::new(key.clone()), None);
        let result = handle
            .authenticate_publickey("agent", signed)
            .await
            .unwrap();
        assert!(!result.success(), "a revoked key must be refused");
    }
    port
}

#[tokio::test]
async fn a_revoked_keys_refused_login_is_logged_once_per_connection() {
    let mut server = ServerProcess::start("true").await;
    let key = test_key(91);
    let (handle, ok) = raw::connect(server.agents, &key).await;
    assert!(ok);
    let (_link, answer) = raw::enroll(&handle, &key, 92, "doomed", &server.fingerprint).await;
    assert!(
        matches!(answer, Some(ServerMessage::Status(_))),
        "{answer:?}"
    );
    let token = server.admin_token().await;
    let revoked = reqwest::Client::new()
        .post(format!("{}/api/v1/agents/doomed/revoke", server.http))
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    ssh_closed_by_server(handle, "the revoked agent's link").await;

    let first = try_key(server.agents, &key, 3).await;
    let second = try_key(server.agents, &key, 1).await;
    let line = server.log_line("refused a revoked agent's key").await;
    assert!(line.contains(&format!(":{first}")), "{line}");
    assert!(line.contains("doomed"), "{line}");
    // Three refusals on the first connection made one line: the next is the second's.
    let line = server.log_line("refused a revoked agent's key").await;
    assert!(line.contains(&format!(":{second}")), "{line}");
}
