//! The session life cycle through the API: states in order, ports, stops, timeouts, link
//! loss, restarts, revocation, exhausted ports, and who may do what.

use std::time::Duration;

use postern_protocol::SessionState;
use postern_protocol::api::{EventKind, Role};
use reqwest::Method;
use serde_json::json;

use crate::harness::{
    TestServer, approved_agent, eventually, free_port, nothing_answers_on, postern, read_until,
    test_key,
};
use crate::raw;

fn session_states(events: &[postern_protocol::api::EventView], id: &str) -> Vec<SessionState> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::SessionState)
        .filter_map(|e| e.session.as_ref())
        .filter(|s| s.id.as_str() == id)
        .map(|s| s.state)
        .collect()
}

fn listening_on(port: u16) -> Option<String> {
    // Local address of a LISTEN socket on `port`, from /proc (hex IP:PORT, little endian IPv4).
    let want = format!("{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (addr, p) = cols[1].split_once(':')?;
            (p == want && cols[3] == "0A").then(|| addr.to_owned())
        })
}

#[tokio::test]
async fn a_session_goes_requested_starting_running_stopping_stopped_and_frees_its_port() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "box").await;
    let token = server.admin_token.clone();

    let (status, body) = server.start_session("box", &token).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let running = server
        .wait_session(&id, &token, SessionState::Running)
        .await;
    let port = running.port.unwrap();
    let range = server.config.tunnel_ports;
    assert!((range.first..=range.last).contains(&port));

    // Asking again returns the same open session.
    let (status, again) = server.start_session("box", &token).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], id.as_str());

    // The tunnel port listens on loopback only, and carries SSH from the agent.
    assert_eq!(listening_on(port).as_deref(), Some("0100007F"));
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut banner = [0u8; 8];
    tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut banner)
        .await
        .unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    drop(tcp);

    let (status, stopped) = server
        .call(
            Method::POST,
            &format!("/api/v1/sessions/{id}/stop"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["reason"], "stopped by admin");
    assert!(nothing_answers_on(port).await, "port still open");

    let states = session_states(&server.events().await, &id);
    use SessionState::*;
    assert_eq!(
        states,
        vec![Requested, Starting, Running, Stopping, Stopped]
    );
    let history: Vec<SessionState> = server
        .session(&id, &token)
        .await
        .history
        .iter()
        .map(|h| h.state)
        .collect();
    assert_eq!(history, states);
}

/// A server whose agent `name` was approved and is offline now.
async fn with_offline_agent(
    name: &str,
    session_timeout: Duration,
) -> (TestServer, crate::harness::TestAgent) {
    let server = TestServer::start_with(|c| c.session_timeout = session_timeout).await;
    let mut agent = approved_agent(&server, name).await;
    agent.stop().await;
    server.wait_agent(name, "offline", |a| !a.online).await;
    (server, agent)
}

#[tokio::test]
async fn a_request_to_an_offline_agent_fails_with_a_reason_when_its_time_is_up() {
    let (server, _agent) = with_offline_agent("sleepy", Duration::from_secs(1)).await;
    let token = server.admin_token.clone();
    let (_, body) = server.start_session("sleepy", &token).await;
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["state"], "requested");
    let failed = server.wait_session(&id, &token, SessionState::Failed).await;
    assert_eq!(failed.reason.as_deref(), Some("agent offline"));
}

#[tokio::test]
async fn an_offline_agent_gets_the_request_when_it_returns() {
    // The default time to start (a minute) is longer than any wait of the test.
    let (server, mut agent) = with_offline_agent("napping", Duration::from_secs(60)).await;
    let token = server.admin_token.clone();
    let (_, body) = server.start_session("napping", &token).await;
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["state"], "requested");
    agent.restart();
    server
        .wait_session(&id, &token, SessionState::Running)
        .await;
}

#[tokio::test]
async fn losing_the_link_ends_the_session_with_a_reason() {
    let server = TestServer::start().await;
    let mut agent = approved_agent(&server, "fragile").await;
    let token = server.admin_token.clone();
    let (_, body) = server.start_session("fragile", &token).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let port = server
        .wait_session(&id, &token, SessionState::Running)
        .await
        .port
        .unwrap();
    agent.stop().await;
    let ended = server
        .wait_session(&id, &token, SessionState::Stopped)
        .await;
    assert_eq!(ended.reason.as_deref(), Some("agent link lost"));
    assert!(
        nothing_answers_on(port).await,
        "the tunnel port outlived the link"
    );
}

#[tokio::test]
async fn a_server_restart_leaves_no_session_running() {
    let mut server = TestServer::start().await;
    let _agent = approved_agent(&server, "steady").await;
    let token = server.admin_token.clone();
    let (_, body) = server.start_session("steady", &token).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let running = server
        .wait_session(&id, &token, SessionState::Running)
        .await;
    server.restart().await;
    let port = running.port.unwrap();
    assert!(
        nothing_answers_on(port).await,
        "the tunnel port outlived the server"
    );
    // Detached until its agent is back and keeps no shell for it (none was started).
    let s = server
        .wait_session(&id, &token, SessionState::Stopped)
        .await;
    assert_eq!(s.reason.as_deref(), Some("server restarted"));
    let history: Vec<SessionState> = s.history.iter().map(|step| step.state).collect();
    assert!(history.contains(&SessionState::Detached), "{history:?}");
}

/// A server that dies without a word (SIGKILL) leaves a running session in its store; the
/// next start detaches it, and once the agent is back and keeps no shell for it, it ends
/// with reason `server restarted`.
#[tokio::test]
async fn sessions_left_open_by_a_killed_server_end_as_server_restarted() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let (http, gateway) = (free_port(), free_port());
    let mut child = postern()
        .arg("server")
        .arg("--data-dir")
        .arg(&data)
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--agent-listen", &format!("127.0.0.1:{gateway}")])
        .args([
            "--tunnel-ports",
            &crate::harness::tunnel_ports().to_string(),
        ])
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let printed = read_until(&mut stdout, "agent gateway").await;
    let password = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .unwrap()
        .trim()
        .to_owned();

    let url = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::new();
    let call = |method: Method, path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut request = client.request(method, format!("{url}{path}")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            request
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let login = call(
        Method::POST,
        "/api/v1/login",
        None,
        json!({"user": "admin", "password": password}),
    )
    .await;
    let token = login["token"].as_str().unwrap().to_owned();
    let enrollment = call(Method::POST, "/api/v1/tokens", Some(&token), json!({})).await;
    let agent_dir = dir.path().join("agent");
    let mut options = postern_agent::AgentOptions::new(format!("127.0.0.1:{gateway}"), &agent_dir);
    options.name = Some("survivor".into());
    options.token = Some(enrollment["token"].as_str().unwrap().parse().unwrap());
    let agent = postern_agent::Agent::start(options).unwrap();
    crate::harness::wait_agent_state(&agent, "approved", crate::harness::approved).await;
    let session = call(
        Method::POST,
        "/api/v1/agents/survivor/sessions",
        Some(&token),
        json!({}),
    )
    .await;
    let id = session["id"].as_str().unwrap().to_owned();
    crate::harness::eventually("the session to run", || async {
        let s = call(
            Method::GET,
            &format!("/api/v1/sessions/{id}"),
            Some(&token),
            json!(null),
        )
        .await;
        (s["state"] == "running").then_some(())
    })
    .await;

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let mut config = postern_server::ServerConfig::new(&data);
    config.http = "127.0.0.1:0".parse().unwrap();
    // The same gateway, for the agent to come back to.
    config.agent_listen = format!("127.0.0.1:{gateway}").parse().unwrap();
    config.tunnel_ports = crate::harness::tunnel_ports();
    let server = crate::harness::eventually("the server to start again", || async {
        postern_server::Server::start(config.clone()).await.ok()
    })
    .await;
    use postern_server::store::SessionStore as _;
    let store = postern_server::store::SqliteStore::open(&data)
        .await
        .unwrap();
    let id = postern_protocol::SessionId::parse(&id).unwrap();
    let ended = crate::harness::eventually("the session to end", || async {
        let s = store.session(&id).await.unwrap().unwrap();
        s.state.is_final().then_some(s)
    })
    .await;
    assert_eq!(ended.state, SessionState::Stopped);
    assert_eq!(ended.reason.as_deref(), Some("server restarted"));
    server.shutdown().await;
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn revoking_an_agent_ends_its_sessions() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "doomed").await;
    let token = server.admin_token.clone();
    let (_, body) = server.start_session("doomed", &token).await;
    let id = body["id"].as_str().unwrap().to_owned();
    server
        .wait_session(&id, &token, SessionState::Running)
        .await;
    server
        .admin_post("/api/v1/agents/doomed/revoke", json!({}))
        .await;
    let s = server.session(&id, &token).await;
    assert_eq!(s.state, SessionState::Stopped);
    assert_eq!(s.reason.as_deref(), Some("agent revoked"));
}

#[tokio::test]
async fn with_one_tunnel_port_the_second_session_fails_with_a_clear_reason() {
    let port = crate::harness::tunnel_ports().first;
    let server = TestServer::start_with(|c| {
        c.tunnel_ports = postern_server::config::PortRange {
            first: port,
            last: port,
        }
    })
    .await;
    let _a = approved_agent(&server, "first").await;
    let _b = approved_agent(&server, "second").await;
    let token = server.admin_token.clone();
    let (_, one) = server.start_session("first", &token).await;
    let running = server
        .wait_session(one["id"].as_str().unwrap(), &token, SessionState::Running)
        .await;
    assert_eq!(running.port, Some(port));
    let (_, two) = server.start_session("second", &token).await;
    let failed = server
        .wait_session(two["id"].as_str().unwrap(), &token, SessionState::Failed)
        .await;
    assert_eq!(
        failed.reason,
        Some(format!("no free tunnel port in {port}-{port}"))
    );
}

#[tokio::test]
async fn an_idle_session_is_stopped() {
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_millis(500)).await;
    let _agent = approved_agent(&server, "idle").await;
    let token = server.admin_token.clone();
    let (_, body) = server.start_session("idle", &token).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let s = server
        .wait_session(&id, &token, SessionState::Stopped)
        .await;
    assert_eq!(s.reason.as_deref(), Some("idle timeout"));
}

#[tokio::test]
async fn only_operators_start_sessions_and_each_sees_and_stops_only_their_own() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "shared").await;
    let viewer = server.add_user("vic", Role::Viewer).await;
    let alice = server.add_user("alice", Role::Operator).await;
    let bob = server.add_user("bob", Role::Operator).await;

    let (status, _) = server.start_session("shared", &viewer).await;
    assert_eq!(status, 403);

    let (_, a) = server.start_session("shared", &alice).await;
    let (_, b) = server.start_session("shared", &bob).await;
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    assert_ne!(a, b, "two users get two sessions on one agent");
    let pa = server
        .wait_session(&a, &alice, SessionState::Running)
        .await
        .port;
    let pb = server
        .wait_session(&b, &bob, SessionState::Running)
        .await
        .port;
    assert_ne!(pa, pb, "each session has its own port");

    let (_, listed) = server
        .call(Method::GET, "/api/v1/sessions", Some(&alice), None)
        .await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str()]);
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/api/v1/sessions/{b}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/v1/sessions/{b}/stop"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let key = test_key(3).public_key().to_openssh().unwrap();
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/v1/sessions/{b}/certificate"),
            Some(&alice),
            Some(json!({"public_key": key})),
        )
        .await;
    assert_eq!(status, 404, "no certificate for someone else's session");

    // Admins see and stop every session.
    let (_, all) = server
        .call(
            Method::GET,
            "/api/v1/sessions",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/v1/sessions/{b}/stop"),
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_forward_is_granted_only_to_the_agent_whose_session_is_starting() {
    let server = TestServer::start().await;
    let owner = approved_agent(&server, "owner").await;
    let token = server.admin_token.clone();
    let (_, body) = server.start_session("owner", &token).await;
    let id = body["id"].as_str().unwrap().to_owned();
    server
        .wait_session(&id, &token, SessionState::Running)
        .await;

    // Another approved agent asks for the owner's session: refused.
    let intruder = approved_agent(&server, "intruder").await;
    let key = postern_agent::identity::Identity::load_or_create(&intruder.dir)
        .unwrap()
        .ssh_key;
    let (h, ok) = raw::connect(server.agent_addr(), &key).await;
    assert!(ok);
    let address = format!("{}{id}", postern_protocol::session::FORWARD_ADDRESS_PREFIX);
    assert!(
        h.tcpip_forward(address.clone(), 0).await.is_err(),
        "forward for another agent's session"
    );
    assert!(
        h.tcpip_forward("postern-session-nonsense", 0)
            .await
            .is_err()
    );
    // The owner itself may not forward a session that is already running.
    let key = postern_agent::identity::Identity::load_or_create(&owner.dir)
        .unwrap()
        .ssh_key;
    let (h, _) = raw::connect(server.agent_addr(), &key).await;
    assert!(
        h.tcpip_forward(address, 0).await.is_err(),
        "forward for a running session"
    );
    // An unknown key gets no forward at all.
    let (h, _) = raw::connect(server.agent_addr(), &test_key(99)).await;
    assert!(h.tcpip_forward("0.0.0.0", 0).await.is_err());
    eventually("the session to be untouched", || async {
        (server.session(&id, &token).await.state == SessionState::Running).then_some(())
    })
    .await;
}
