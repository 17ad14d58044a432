//! Administrators' decisions take effect and stand: a rejected agent stays rejected whatever
//! token it presents, and a user who is deleted or demoted below operator loses their running
//! sessions at once, with the reason recorded.

use postern_protocol::api::Role;
use postern_protocol::{AgentStatus, SessionState};
use serde_json::json;

use crate::harness::{TestAgent, TestServer, approved, approved_agent};

#[tokio::test]
async fn an_enrollment_token_does_not_overturn_a_rejection() {
    let server = TestServer::start().await;
    let mut agent = TestAgent::start(&server, "unwanted", None);
    agent
        .wait_state("pending", |s| {
            s.connected && s.status == Some(AgentStatus::Pending)
        })
        .await;
    let (status, body) = server
        .admin_post("/api/v1/agents/unwanted/reject", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    agent
        .wait_state("rejected", |s| s.status == Some(AgentStatus::Rejected))
        .await;

    // The same agent comes back with a valid token.
    agent.stop().await;
    let token = server.create_token(600, 1).await;
    agent.options.token = Some(token.parse().unwrap());
    agent.restart();
    let state = agent
        .wait_state("told its rejection stands", |s| {
            s.connected && s.message.as_deref().is_some_and(|m| m.contains("rejected"))
        })
        .await;
    assert_eq!(state.status, Some(AgentStatus::Rejected));
    let listed = server.agent("unwanted").await.unwrap();
    assert_eq!(listed.status, AgentStatus::Rejected);
    let (status, tokens) = server
        .call(
            reqwest::Method::GET,
            "/api/v1/tokens",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        tokens.as_array().unwrap().iter().all(|t| t["uses"] == 0),
        "the token was not used up: {tokens}"
    );

    // An administrator can still change their mind.
    let (status, _) = server
        .admin_post("/api/v1/agents/unwanted/approve", json!({}))
        .await;
    assert_eq!(status, 200);
    agent.wait_state("approved", approved).await;
}

/// A running session of a new operator `name` on `agent`; returns its id.
async fn running_session_of(server: &TestServer, name: &str, agent: &str) -> String {
    let token = server.add_user(name, Role::Operator).await;
    let (status, body) = server.start_session(agent, &token).await;
    assert!(status == 201 || status == 200, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    server
        .wait_session(&id, &server.admin_token, SessionState::Running)
        .await;
    id
}

#[tokio::test]
async fn deleting_or_demoting_a_user_ends_their_sessions_at_once() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "shared").await;
    let deleted = running_session_of(&server, "dora", "shared").await;
    let demoted = running_session_of(&server, "dmitri", "shared").await;
    let kept = running_session_of(&server, "kim", "shared").await;

    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            "/api/v1/users/dora",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = server
        .call(
            reqwest::Method::PATCH,
            "/api/v1/users/dmitri",
            Some(&server.admin_token),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Ended by the time the administrator's request was answered.
    for (id, reason) in [(&deleted, "user deleted"), (&demoted, "user demoted")] {
        let session = server.session(id, &server.admin_token).await;
        assert_eq!(session.state, SessionState::Stopped, "{id}");
        assert_eq!(session.reason.as_deref(), Some(reason), "{id}");
    }
    let session = server.session(&kept, &server.admin_token).await;
    assert_eq!(session.state, SessionState::Running);
}
