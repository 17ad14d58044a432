//! Enrollment floods: new agents without a valid token are limited per source address and
//! in number waiting for approval; known agents and token enrollments are not.

use std::time::Duration;

use postern_protocol::api::EventKind;
use postern_protocol::{AgentStatus, ErrorCode, ServerMessage};

use crate::harness::{TestAgent, TestServer, approved_agent, test_key};
use crate::raw;

/// Enrolls a fresh key through a raw link; returns the answer and what to hold open.
async fn enroll(server: &TestServer, seed: u8, name: &str) -> (Option<ServerMessage>, impl Drop) {
    let key = test_key(seed);
    let (handle, ok) = raw::connect(server.agent_addr(), &key).await;
    assert!(ok);
    let fingerprint = server.server().host_key_fingerprint.clone();
    let (link, answer) = raw::enroll(&handle, &key, seed, name, &fingerprint).await;
    (answer, Box::new((handle, link)))
}

fn pending(answer: &Option<ServerMessage>) -> bool {
    matches!(answer, Some(ServerMessage::Status(s)) if s.status == AgentStatus::Pending)
}

fn refused_with(answer: &Option<ServerMessage>, words: &str) -> bool {
    matches!(answer, Some(ServerMessage::Error { code: ErrorCode::Refused, message }) if message.contains(words))
}

async fn limit_events(server: &TestServer) -> usize {
    server
        .events()
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::AgentPendingLimit)
        .count()
}

const CAP_REFUSAL: &str = "agents are waiting for approval";

#[tokio::test]
async fn at_the_pending_cap_new_agents_are_refused_with_one_event_and_tokens_still_enroll() {
    let server = TestServer::start_with(|c| c.max_pending_agents = 2).await;
    let mut held = Vec::new();
    for (seed, name) in [(101, "p1"), (102, "p2")] {
        let (answer, link) = enroll(&server, seed, name).await;
        assert!(pending(&answer), "{answer:?}");
        held.push(link);
    }
    for (seed, name) in [(103, "p3"), (104, "p4")] {
        let (answer, _) = enroll(&server, seed, name).await;
        assert!(refused_with(&answer, CAP_REFUSAL), "{answer:?}");
    }
    // The event is published before the refusal is sent: it is there, once.
    assert_eq!(limit_events(&server).await, 1);

    // A real agent hears why; a token still enrolls.
    let late = TestAgent::start(&server, "late", None);
    late.wait_state("refused", |s| {
        s.link_error
            .as_deref()
            .is_some_and(|e| e.contains(CAP_REFUSAL))
    })
    .await;
    approved_agent(&server, "with-token").await;
    assert_eq!(
        limit_events(&server).await,
        1,
        "one event, not one per refusal"
    );

    // An administrator decides on one: there is room again, the waiting agent gets in, and
    // when the cap is reached anew it is reported anew.
    let (status, body) = server
        .admin_post("/api/v1/agents/p1/approve", serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    server
        .wait_agent("late", "pending", |a| a.status == AgentStatus::Pending)
        .await;
    let (answer, _) = enroll(&server, 105, "p5").await;
    assert!(refused_with(&answer, CAP_REFUSAL), "{answer:?}");
    assert_eq!(limit_events(&server).await, 2);
    drop(held);
}

#[tokio::test]
async fn new_agents_from_one_address_are_rate_limited_and_known_agents_and_tokens_are_not() {
    let server = TestServer::start_with(|c| {
        c.enrollments_per_source = 2;
        c.enrollment_window = Duration::from_secs(3600);
    })
    .await;
    let waiting =
        |s: &postern_agent::LinkState| s.connected && s.status == Some(AgentStatus::Pending);
    let mut first = TestAgent::start(&server, "first", None);
    first.wait_state("pending", waiting).await;
    let second = TestAgent::start(&server, "second", None);
    second.wait_state("pending", waiting).await;

    let third = TestAgent::start(&server, "third", None);
    third
        .wait_state("refused", |s| {
            s.link_error
                .as_deref()
                .is_some_and(|e| e.contains("too many new agents from this address"))
        })
        .await;

    // A known agent reconnecting is not a new one.
    first.stop().await;
    first.restart();
    first.wait_state("pending again", waiting).await;
    // Nor is a token enrollment limited.
    approved_agent(&server, "with-token").await;
    let names: Vec<String> = server.agents().await.into_iter().map(|a| a.name).collect();
    assert!(!names.contains(&"third".to_owned()), "{names:?}");
    assert_eq!(limit_events(&server).await, 0);
}
