//! An agent that gives up on a silent link to one node and links to another is online, and
//! only online, on every node: the node it left cuts its stale link as soon as it reads the
//! agent's newer row, and says nothing of an agent that is not offline. Found at 15,000
//! agents on three nodes, where a link's row written late took the row from the agent's newer
//! link and the old link's end then left a connected agent shown offline for good.

use std::time::Duration;

use postern_protocol::api::{EventKind, Liveness};

use crate::cluster::Cluster;
use crate::harness::{TestAgent, TestServer, approved, eventually, free_port};
use crate::link_proxy::Proxy;

/// The node's `postern_links_closed_total{reason="stale"}`.
async fn stale_links_cut(node: &TestServer) -> u64 {
    let addr = node.server().metrics_addr.expect("a metrics listener");
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("postern_links_closed_total{reason=\"stale\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_agent_that_left_a_silent_node_for_another_is_never_shown_offline() {
    // The node it leaves would hold its silent link for 60 s: long past the test, so only
    // its reading of the store can end it.
    let cluster = Cluster::start_with(2, |_, c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.heartbeat_timeout = Duration::from_secs(60);
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let to_a = Proxy::start(a.agent_addr()).await;
    // Nothing listens there yet: the agent's first link can only be to A.
    let b_port = free_port();
    let token = a.create_token(600, 1).await;
    let agent = TestAgent::start_with(a, "mover", Some(token), |o| {
        o.servers = vec![to_a.addr.to_string(), format!("127.0.0.1:{b_port}")];
        o.sync_rate = Duration::from_secs(1);
        o.keepalive = Duration::from_secs(1);
    });
    agent.wait_state("approved", approved).await;
    a.wait_agent("mover", "online", |x| x.liveness == Liveness::Online)
        .await;
    let before = a.events().await.last().map_or(0, |e| e.id);

    let _to_b = Proxy::start_on(b_port, b.agent_addr()).await;
    to_a.shun();
    // Its keepalives unanswered, the agent gives up on A and links to B.
    let moved = a
        .wait_event("the agent linked to B", |e| {
            e.id > before
                && e.kind == EventKind::AgentOnline
                && e.detail == "link up"
                && e.agent.as_ref().is_some_and(|x| x.name == "mover")
        })
        .await;
    // A, reading the agent's newer row on B, cuts the silent link it still holds.
    eventually("A to cut its stale link", || async {
        (stale_links_cut(a).await == 1).then_some(())
    })
    .await;

    for node in [a, b] {
        let agent = node.agent("mover").await.unwrap();
        assert_eq!(agent.liveness, Liveness::Online);
    }
    let offline: Vec<_> = a
        .events()
        .await
        .into_iter()
        .filter(|e| {
            e.id > moved.id
                && e.kind == EventKind::AgentOffline
                && e.agent.as_ref().is_some_and(|x| x.name == "mover")
        })
        .collect();
    assert!(
        offline.is_empty(),
        "the agent linked to B was said offline: {offline:?}"
    );
}
