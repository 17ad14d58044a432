//! Liveness from heartbeats: an agent whose link goes silent (a frozen forwarder between it
//! and the server) is shown not responding after its missed heartbeats, then taken offline
//! with its sessions ended; one that speaks again in time is online again.

use std::time::Duration;

use postern_protocol::api::{EventKind, EventView, Liveness, PresenceChanges};
use postern_protocol::{AgentId, SessionState};

use crate::harness::{TestAgent, TestServer, approved, eventually};
use crate::link_proxy::Proxy;

/// An approved agent that reaches `server` through a `Proxy`, heartbeating every second.
async fn agent_behind_proxy(server: &TestServer, name: &str) -> (TestAgent, Proxy) {
    let proxy = Proxy::start(server.agent_addr()).await;
    let token = server.create_token(600, 1).await;
    let agent = TestAgent::start_with(server, name, Some(token), |o| {
        o.servers = vec![proxy.addr.to_string()];
        o.sync_rate = Duration::from_secs(1);
    });
    agent.wait_state("approved", approved).await;
    server
        .wait_agent(name, "online", |a| a.liveness == Liveness::Online)
        .await;
    (agent, proxy)
}

/// The id of the newest stored event: what follows it happened after this point.
async fn mark(server: &TestServer) -> i64 {
    server.events().await.last().map_or(0, |e| e.id)
}

async fn event_after(server: &TestServer, after: i64, name: &str, kind: EventKind) -> EventView {
    server
        .wait_event(&format!("{kind} for {name}"), |e| {
            e.id > after && e.kind == kind && e.agent.as_ref().is_some_and(|a| a.name == name)
        })
        .await
}

#[tokio::test]
async fn a_silent_agent_is_not_responding_then_offline_and_its_session_ends() {
    // Not responding after 3 missed 1 s heartbeats; dropped after 5 s of silence.
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.heartbeat_timeout = Duration::from_secs(5);
    })
    .await;
    let (_agent, proxy) = agent_behind_proxy(&server, "quiet").await;
    let token = server.admin_token.clone();
    let (status, body) = server.start_session("quiet", &token).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    server
        .wait_session(&id, &token, SessionState::Running)
        .await;

    let before = mark(&server).await;
    proxy.freeze();
    let quiet = event_after(&server, before, "quiet", EventKind::AgentNotResponding).await;
    let offline = event_after(&server, quiet.id, "quiet", EventKind::AgentOffline).await;
    assert!(
        offline.detail.contains("no sign of life"),
        "{}",
        offline.detail
    );
    let view = server.agent("quiet").await.unwrap();
    assert_eq!(view.liveness, Liveness::Offline);
    assert!(!view.online);
    let session = server
        .wait_session(&id, &token, SessionState::Stopped)
        .await;
    assert_eq!(session.reason.as_deref(), Some("agent link lost"));

    // The network comes back: the agent finds its link gone and dials again.
    let before = mark(&server).await;
    proxy.thaw();
    event_after(&server, before, "quiet", EventKind::AgentOnline).await;
    server
        .wait_agent("quiet", "online again", |a| {
            a.online && a.liveness == Liveness::Online
        })
        .await;
}

#[tokio::test]
async fn a_not_responding_agent_that_speaks_again_is_online_and_keeps_its_link() {
    // A timeout no test run reaches: the link must survive the silence.
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.heartbeat_timeout = Duration::from_secs(600);
    })
    .await;
    let (_agent, proxy) = agent_behind_proxy(&server, "hiccup").await;
    let id = server.agent("hiccup").await.unwrap().id;
    let cursor = presence_changes(&server, None).await.cursor;

    let before = mark(&server).await;
    proxy.freeze();
    event_after(&server, before, "hiccup", EventKind::AgentNotResponding).await;
    let view = server.agent("hiccup").await.unwrap();
    assert_eq!(view.liveness, Liveness::NotResponding);
    assert!(view.online, "the link is still registered");
    let presence = presence(&server).await;
    assert_eq!(presence, vec![Liveness::NotResponding]);
    // A poller of presence changes learns it too, without the event.
    let quiet = presence_changes(&server, Some(&cursor)).await;
    assert!(!quiet.full);
    assert_eq!(
        changes_of(&quiet),
        [(id.clone(), true, Liveness::NotResponding)]
    );

    let before_thaw = mark(&server).await;
    proxy.thaw();
    let back = event_after(&server, before_thaw, "hiccup", EventKind::AgentOnline).await;
    assert_eq!(back.detail, "responding again");
    server
        .wait_agent("hiccup", "responding", |a| a.liveness == Liveness::Online)
        .await;
    let again = presence_changes(&server, Some(&quiet.cursor)).await;
    assert_eq!(changes_of(&again), [(id, true, Liveness::Online)]);
    let events = server.events().await;
    assert!(
        !events
            .iter()
            .any(|e| e.id > before && e.kind == EventKind::AgentOffline),
        "the link was kept: {events:#?}"
    );
}

async fn presence_changes(server: &TestServer, since: Option<&str>) -> PresenceChanges {
    let path = match since {
        Some(cursor) => format!("/api/v1/presence/changes?since={cursor}"),
        None => "/api/v1/presence/changes".to_owned(),
    };
    let (status, body) = server
        .call(reqwest::Method::GET, &path, Some(&server.admin_token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

fn changes_of(changes: &PresenceChanges) -> Vec<(AgentId, bool, Liveness)> {
    changes
        .agents
        .iter()
        .map(|c| (c.id.clone(), c.online, c.liveness))
        .collect()
}

async fn presence(server: &TestServer) -> Vec<Liveness> {
    let (status, body) = server
        .call(
            reqwest::Method::GET,
            "/api/v1/presence",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value::<Vec<postern_protocol::api::AgentPresence>>(body)
        .unwrap()
        .into_iter()
        .map(|p| p.liveness)
        .collect()
}

/// The agent states its heartbeat in its hello: an agent with a slower one than the server
/// expects by default is not taken for silent.
#[tokio::test]
async fn the_server_counts_missed_heartbeats_against_the_rate_the_agent_states() {
    // By this expectation, the agent's 1 s heartbeat would miss three every second.
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_secs(600);
    })
    .await;
    let (_agent, _proxy) = agent_behind_proxy(&server, "steady").await;
    let before = mark(&server).await;
    let first = server.agent("steady").await.unwrap().last_seen.unwrap();
    // Five heartbeats later, by the server's own clock.
    eventually("five more heartbeats", || async {
        let seen = server.agent("steady").await?.last_seen?;
        (seen >= first + 5_000).then_some(())
    })
    .await;
    let events = server.events().await;
    assert!(
        !events
            .iter()
            .any(|e| e.id > before && e.kind == EventKind::AgentNotResponding),
        "{events:#?}"
    );
}
