//! `postern ssh` whose connection is dropped rather than ended says why, from the session's
//! recorded end, and exits 255 as OpenSSH does: stopped by a user, agent revoked, server
//! restarted.

use postern_protocol::SessionState;
use postern_protocol::api::SessionView;
use reqwest::Method;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::harness::{DEADLINE, TestServer, approved_agent, cli_home, postern, read_until};

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
