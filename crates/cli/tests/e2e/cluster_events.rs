//! Events, decisions, throttling, tokens and certificates across nodes of one database: one
//! ordered event stream whichever node serves it, a resume on another node that misses and
//! repeats nothing, a rolling restart that loses no event, a revocation on one node that closes
//! the link another holds, and limits that hold whichever node is asked.
//!
//! On a shared SQLite file only the poll wakes other nodes: the clusters poll every 100 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postern_protocol::AgentStatus;
use postern_protocol::api::{EventKind, EventView, Role};
use postern_protocol::sse::SseDecoder;
use russh::keys::{Certificate, HashAlg, PublicKey};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::harness::{DEADLINE, TestAgent, TestServer, approved, test_key};
use crate::raw;

async fn cluster(n: usize) -> Cluster {
    Cluster::start_with(n, |_, config| {
        config.event_poll = Duration::from_millis(100);
    })
    .await
}

/// What a client needs to reach one node; it stays valid across the node's restarts (same
/// ports, logins in the shared store).
#[derive(Clone)]
struct Node {
    url: String,
    http: reqwest::Client,
    token: String,
}

fn reach(cluster: &Cluster) -> Vec<Node> {
    cluster
        .nodes
        .iter()
        .map(|n| Node {
            url: n.url(),
            http: n.http.clone(),
            token: n.admin_token.clone(),
        })
        .collect()
}

/// The newest stored event's id.
async fn newest(server: &TestServer) -> i64 {
    server.events().await.last().map_or(0, |e| e.id)
}

/// Every stored event's id after `after`, in order.
async fn stored_after(server: &TestServer, after: i64) -> Vec<i64> {
    let ids = server.events().await.into_iter().map(|e| e.id);
    ids.filter(|id| *id > after).collect()
}

/// A client that follows the event stream as a browser does: whenever its stream ends it
/// connects again, to the next node, sending the last id it saw as `Last-Event-ID`.
struct Follower {
    /// The ids seen, in the order they came.
    seen: watch::Receiver<Vec<i64>>,
    task: JoinHandle<()>,
}

impl Follower {
    /// Follows from after `from`, starting on `nodes[0]`; with `switch_every`, it also drops
    /// its stream after that many events and resumes on the next node.
    fn start(nodes: Vec<Node>, from: i64, switch_every: Option<usize>) -> Self {
        let (tx, seen) = watch::channel(Vec::new());
        let task = tokio::spawn(async move {
            let mut last = from;
            for node in nodes.iter().cycle() {
                let response = node
                    .http
                    .get(format!("{}/api/v1/events", node.url))
                    .bearer_auth(&node.token)
                    .header("last-event-id", last.to_string())
                    .send()
                    .await;
                let mut response = match response {
                    Ok(r) if r.status() == 200 => r,
                    // That node is down: the next one, after a pause a browser would make too.
                    _ => {
                        tokio::time::sleep(Duration::from_millis(25)).await;
                        continue;
                    }
                };
                let mut decoder = SseDecoder::new(1 << 20);
                let mut here = 0;
                'stream: loop {
                    while let Some(event) = decoder.next_event().unwrap() {
                        let event: EventView = serde_json::from_str(&event.data).unwrap();
                        last = event.id;
                        tx.send_modify(|seen| seen.push(event.id));
                        here += 1;
                        if switch_every.is_some_and(|k| here >= k) {
                            break 'stream;
                        }
                    }
                    match response.chunk().await {
                        Ok(Some(bytes)) => decoder.push(&bytes),
                        _ => break,
                    }
                }
            }
        });
        Self { seen, task }
    }

    /// Waits until `pred` holds of the ids seen.
    async fn wait(&mut self, what: &str, pred: impl Fn(&[i64]) -> bool) {
        let waited = tokio::time::timeout(DEADLINE, self.seen.wait_for(|s| pred(s)))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(
            waited,
            "timed out waiting for the follower to see {what}; it saw {:?}",
            self.seen.borrow()
        );
    }

    fn count(&self) -> usize {
        self.seen.borrow().len()
    }

    fn stop(self) -> Vec<i64> {
        self.task.abort();
        self.seen.borrow().clone()
    }
}

/// Writes events (enrollment tokens) through `nodes`, starting at `first`, moving to the next
/// node when one does not answer, until `stop`; returns how many it wrote.
fn writer(nodes: Vec<Node>, first: usize, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let (mut at, mut written) = (first, 0);
        while !stop.load(Ordering::Relaxed) {
            let node = &nodes[at % nodes.len()];
            let answer = node
                .http
                .post(format!("{}/api/v1/tokens", node.url))
                .bearer_auth(&node.token)
                .json(&json!({"ttl_secs": 60, "uses": 1}))
                .send()
                .await;
            match answer {
                Ok(r) if r.status() == 200 => written += 1,
                _ => {
                    at += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        }
        written
    })
}

/// Stops the writers, then waits for the follower to see the newest stored event, and checks
/// that it saw exactly the stored events after `from`, in id order: none skipped, none twice.
async fn writers_stop_and_nothing_is_lost(
    stop: &AtomicBool,
    writers: Vec<JoinHandle<usize>>,
    mut follower: Follower,
    server: &TestServer,
    from: i64,
) {
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        assert!(w.await.unwrap() > 0, "every writer wrote");
    }
    let target = newest(server).await;
    follower
        .wait("the newest event", |s| {
            s.last().is_some_and(|l| *l >= target)
        })
        .await;
    let seen = follower.stop();
    let stored = stored_after(server, from).await;
    // The stored events in order, up to the newest at least (more may follow: a restart
    // records its own).
    assert_eq!(
        seen,
        stored[..seen.len().min(stored.len())],
        "the stream must be the stored events in order, each once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_written_on_two_nodes_stream_live_from_a_third_in_id_order() {
    let cluster = cluster(3).await;
    let nodes = reach(&cluster);
    let from = newest(&cluster.nodes[0]).await;
    // The follower is on C; A and B write.
    let mut follower = Follower::start(vec![nodes[2].clone()], from, None);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = vec![
        writer(nodes.clone(), 0, stop.clone()),
        writer(nodes.clone(), 1, stop.clone()),
    ];
    follower.wait("40 events", |s| s.len() >= 40).await;
    writers_stop_and_nothing_is_lost(&stop, writers, follower, &cluster.nodes[0], from).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_resumed_on_other_nodes_misses_and_repeats_nothing() {
    let cluster = cluster(3).await;
    let nodes = reach(&cluster);
    let from = newest(&cluster.nodes[0]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = vec![
        writer(nodes.clone(), 0, stop.clone()),
        writer(nodes.clone(), 1, stop.clone()),
    ];
    // Every 7 events the client drops its stream and resumes on the next node, while two
    // nodes write.
    let mut follower = Follower::start(nodes, from, Some(7));
    follower.wait("60 events", |s| s.len() >= 60).await;
    writers_stop_and_nothing_is_lost(&stop, writers, follower, &cluster.nodes[0], from).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_every_node_loses_and_repeats_no_event() {
    let mut cluster = cluster(3).await;
    let nodes = reach(&cluster);
    let from = newest(&cluster.nodes[0]).await;
    let stop = Arc::new(AtomicBool::new(false));
    // B and C write (each moves to the other while its node restarts); the follower starts on
    // A, and so sees their events only as A's bus reads them from the store.
    let writers = vec![
        writer(nodes[1..].to_vec(), 0, stop.clone()),
        writer(nodes[1..].to_vec(), 1, stop.clone()),
    ];
    let mut follower = Follower::start(nodes, from, None);
    // One node at a time, each while events are written and followed: the follower is on
    // the node restarted first, then moves on as a browser would.
    for i in 0..cluster.nodes.len() {
        let before = follower.count();
        follower
            .wait("more events", |s| s.len() >= before + 10)
            .await;
        cluster.nodes[i].restart().await;
    }
    let before = follower.count();
    follower
        .wait("events after the restarts", |s| s.len() >= before + 10)
        .await;
    writers_stop_and_nothing_is_lost(&stop, writers, follower, &cluster.nodes[0], from).await;
}

#[tokio::test]
async fn revoking_on_one_node_closes_the_link_another_holds_and_every_node_refuses_it() {
    let cluster = cluster(3).await;
    let (a, c) = (&cluster.nodes[0], &cluster.nodes[2]);
    let token = a.create_token(3600, 1).await;
    let mut agent = TestAgent::start(a, "far", Some(token));
    agent.wait_state("approved", approved).await;

    let (status, body) = c.admin_post("/api/v1/agents/far/revoke", json!({})).await;
    assert_eq!(status, 200, "{body}");
    // The agent hears it through node A's link, which A then closes.
    let ended = tokio::time::timeout(DEADLINE, agent.handle().wait()).await;
    assert!(
        matches!(ended, Ok(Err(postern_agent::AgentError::Revoked))),
        "{ended:?}"
    );
    a.wait_agent("far", "offline on the node that held it", |v| !v.online)
        .await;
    // Its key is refused by every node's gateway, whatever the agent's files say.
    let key = postern_agent::identity::Identity::load_or_create(&agent.dir)
        .unwrap()
        .ssh_key;
    for node in &cluster.nodes {
        let (_handle, authenticated) = raw::connect(node.agent_addr(), &key).await;
        assert!(!authenticated, "a revoked agent's key must be refused");
    }
}

#[tokio::test]
async fn failed_logins_spread_over_nodes_are_throttled_as_on_one() {
    let cluster = cluster(3).await;
    cluster.nodes[0].add_user("ann", Role::Viewer).await;
    let login = |node: &TestServer, password: &str| {
        let request = node
            .http
            .post(format!("{}/api/v1/login", node.url()))
            .json(&json!({"user": "ann", "password": password}));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // One wrong password on each node: three, the free ones for a user name.
    for node in &cluster.nodes {
        assert_eq!(login(node, "wrong").await, 401);
    }
    // Each node alone saw one failure; together they hold the name back.
    assert_eq!(login(&cluster.nodes[0], "ann-password-123").await, 429);
    let stored = cluster.nodes[1]
        .store()
        .await
        .login_attempts("user:ann")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.attempts.failures, 3, "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tokens_uses_on_two_nodes_at_once_never_exceed_its_limit() {
    let cluster = cluster(2).await;
    let token = cluster.nodes[0].create_token(3600, 2).await;
    let agents: Vec<TestAgent> = (0..6)
        .map(|i| {
            TestAgent::start(
                &cluster.nodes[i % 2],
                &format!("racer{i}"),
                Some(token.clone()),
            )
        })
        .collect();
    let mut approved_count = 0;
    for agent in &agents {
        let state = agent
            .wait_state("enrolled", |s| {
                matches!(s.status, Some(AgentStatus::Approved | AgentStatus::Pending))
            })
            .await;
        approved_count += usize::from(state.status == Some(AgentStatus::Approved));
    }
    assert_eq!(approved_count, 2, "a token of 2 uses approves 2 agents");
    let used: Vec<EventView> = cluster.nodes[1]
        .events()
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::AgentApproved)
        .collect();
    assert_eq!(used.len(), 2, "{used:?}");
}

#[tokio::test]
async fn a_certificate_from_any_node_is_valid_for_an_agent_linked_to_another() {
    let cluster = cluster(2).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let token = a.create_token(3600, 1).await;
    let agent = TestAgent::start(a, "near", Some(token));
    agent.wait_state("approved", approved).await;
    let (status, body) = a.start_session("near", &a.admin_token).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap();

    // Node B signs; the agent, linked to A, holds the CA A sent it.
    let subject = test_key(9).public_key().to_openssh().unwrap();
    let (status, body) = b
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/sessions/{id}/certificate"),
            Some(&b.admin_token),
            Some(json!({"public_key": subject})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let certificate = Certificate::from_openssh(body["certificate"].as_str().unwrap()).unwrap();
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(agent.dir.join(postern_agent::state::STATUS_FILE)).unwrap(),
    )
    .unwrap();
    let ca = PublicKey::from_openssh(status["user_ca"].as_str().unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The agent's own check: signed by its CA, within the validity window.
    certificate
        .validate_at(now, [&ca.fingerprint(HashAlg::Sha256)])
        .unwrap();
}
