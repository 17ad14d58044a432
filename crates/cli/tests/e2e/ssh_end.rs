//! `postern ssh` whose connection is dropped rather than ended says why, from the session's
//! recorded end, and exits 255 as OpenSSH does: stopped by a user, agent revoked, server
//! restarted, the agent's link lost, the idle timeout.

use std::time::Duration;

use postern_protocol::SessionState;
use postern_protocol::api::SessionView;
use reqwest::Method;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::harness::{
    DEADLINE, TestAgent, TestServer, approved, approved_agent, cli_home, postern, read_until,
};
use crate::link_proxy::Proxy;

/// `postern ssh AGENT -- sleep 1000` as a real process, once the command runs, and its
/// session.
async fn long_command(
    server: &TestServer,
    home: &std::path::Path,
    agent: &str,
) -> (Child, SessionView) {
    let mut child = postern()
        .env("POSTERN_HOME", home)
        .args([
            "ssh", "-q", agent, "--", "echo", "started;", "sleep", "1000",
        ])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    read_until(&mut stdout, "started").await;
    let (_, list) = server
        .call(
            Method::GET,
            "/api/v1/sessions",
            Some(&server.admin_token),
            None,
        )
        .await;
    let sessions: Vec<SessionView> = serde_json::from_value(list).unwrap();
    let session = sessions
        .into_iter()
        .find(|s| s.agent.name == agent && s.state == SessionState::Running)
        .unwrap();
    (child, session)
}

/// The process's exit code and the last line of its stderr.
async fn ended(child: Child) -> (Option<i32>, String) {
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("postern ssh did not end")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.code(),
        err.lines().last().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_dropped_connection_says_why_the_session_ended_and_exits_255() {
    let mut server = TestServer::start().await;
    let _agent = approved_agent(&server, "far").await;
    let home = cli_home(&server, "admin", &server.admin_password).await;

    // Stopped by a user.
    let (child, session) = long_command(&server, home.path(), "far").await;
    let (status, body) = server
        .admin_post(
            &format!("/api/v1/sessions/{}/stop", session.id),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ended(child).await,
        (
            Some(255),
            "error: the session ended: it was stopped by admin".to_owned()
        )
    );

    // The server restarted under it.
    let (child, _) = long_command(&server, home.path(), "far").await;
    server.restart().await;
    assert_eq!(
        ended(child).await,
        (
            Some(255),
            "error: the session ended: the server restarted".to_owned()
        )
    );

    // The agent was revoked.
    server.wait_agent("far", "online again", |a| a.online).await;
    let (child, _) = long_command(&server, home.path(), "far").await;
    let (status, body) = server
        .admin_post("/api/v1/agents/far/revoke", serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ended(child).await,
        (
            Some(255),
            "error: the session ended: the agent was revoked".to_owned()
        )
    );
}

#[tokio::test]
async fn a_lost_agent_link_is_named_and_exits_255() {
    // The server gives a silent link up after 5 s (heartbeats every second).
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.heartbeat_timeout = Duration::from_secs(5);
    })
    .await;
    let proxy = Proxy::start(server.agent_addr()).await;
    let token = server.create_token(600, 1).await;
    let agent = TestAgent::start_with(&server, "cut", Some(token), |o| {
        o.servers = vec![proxy.addr.to_string()];
        o.sync_rate = Duration::from_secs(1);
    });
    agent.wait_state("approved", approved).await;
    let home = cli_home(&server, "admin", &server.admin_password).await;

    let (child, _) = long_command(&server, home.path(), "cut").await;
    // The network between agent and server dies silently.
    proxy.freeze();
    assert_eq!(
        ended(child).await,
        (
            Some(255),
            "error: the session ended: the agent's link to the server was lost".to_owned()
        )
    );
}

#[tokio::test]
async fn an_idle_timeout_is_named_and_exits_255() {
    // A logged-in connection keeps a session from going idle, so what a user can meet is a
    // session that went idle before their login: here at once.
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_millis(1)).await;
    let _agent = approved_agent(&server, "dozy").await;
    let home = cli_home(&server, "admin", &server.admin_password).await;
    let child = postern()
        .env("POSTERN_HOME", home.path())
        .args(["ssh", "-q", "dozy", "--", "echo", "started"])
        .spawn()
        .unwrap();
    assert_eq!(
        ended(child).await,
        (
            Some(255),
            "error: the session ended: it was idle for too long (the server's idle timeout)"
                .to_owned()
        )
    );
}
