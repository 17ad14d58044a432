//! Several nodes on one database (issue 12, "Nodes" and "Losing a node"): every node shows
//! every agent's true state whichever node holds its link; idle agents write nothing; a node
//! killed with `kill -9` is taken over by the others — its sessions end with `node lost`, its
//! agents dial the others by themselves, and none stays online because the dead node said so.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use postern_protocol::api::{AgentCounts, AgentView, EventKind, Liveness, PresenceChanges};
use postern_protocol::{AgentId, SessionState};
use postern_server::ServerConfig;
use reqwest::Method;
use serde_json::json;

use crate::cluster::{Cluster, shared_database};
use crate::harness::{TestAgent, TestServer, approved, eventually, free_port};
use crate::server_process::ServerProcess;

/// Quick node timings, so that a death is found within seconds (slack for a loaded machine:
/// a false death would only make a live node register again).
fn quick(config: &mut ServerConfig) {
    config.node_heartbeat = Duration::from_millis(250);
    config.node_dead_after = Duration::from_secs(2);
}

async fn counts(node: &TestServer) -> AgentCounts {
    let (status, body) = node
        .call(
            Method::GET,
            "/api/v1/fleet/counts",
            Some(&node.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

/// The names `GET /api/v1/agents?online=…` lists.
pub async fn listed(node: &TestServer, online: bool) -> BTreeSet<String> {
    let (status, body) = node
        .call(
            Method::GET,
            &format!("/api/v1/agents?online={online}"),
            Some(&node.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let agents: Vec<AgentView> = serde_json::from_value(body).unwrap();
    agents.into_iter().map(|a| a.name).collect()
}

/// The ids of the online agents in a full presence list (no cursor).
async fn present(node: &TestServer) -> BTreeSet<AgentId> {
    let (status, body) = node
        .call(
            Method::GET,
            "/api/v1/presence/changes",
            Some(&node.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let changes: PresenceChanges = serde_json::from_value(body).unwrap();
    assert!(changes.full);
    changes.agents.into_iter().map(|a| a.id).collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// What each node wrote since `before`, left out the node heartbeats.
fn written_since(before: &[BTreeMap<String, u64>], nodes: &[TestServer]) -> Vec<String> {
    let mut writes = Vec::new();
    for (node, before) in nodes.iter().zip(before) {
        for (table, n) in node.server().rows_written() {
            let was = before.get(&table).copied().unwrap_or(0);
            if table != "nodes" && n != was {
                writes.push(format!("{table}: {} rows", n - was));
            }
        }
    }
    writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_shows_every_agent_truly_and_idle_agents_write_nothing() {
    let cluster = Cluster::start_with(2, |_, c| quick(c)).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let token = a.create_token(600, 10).await;
    // Heartbeats five times a second: plenty of them in the window below.
    let fast = |o: &mut postern_agent::AgentOptions| o.sync_rate = Duration::from_millis(200);
    let on_a = TestAgent::start_with(a, "on-a", Some(token.clone()), fast);
    let mut on_b = TestAgent::start_with(b, "on-b", Some(token), fast);
    on_a.wait_state("approved", approved).await;
    on_b.wait_state("approved", approved).await;

    for node in [a, b] {
        for name in ["on-a", "on-b"] {
            node.wait_agent(name, "online", |v| {
                v.online && v.liveness == Liveness::Online
            })
            .await;
        }
        eventually("both agents counted online", || async {
            (counts(node).await.online == 2).then_some(())
        })
        .await;
        assert_eq!(listed(node, true).await, names(&["on-a", "on-b"]));
        assert!(listed(node, false).await.is_empty());
        assert_eq!(present(node).await.len(), 2);
    }

    // Idle: the agents heartbeat, the nodes heartbeat; nothing but the nodes' own rows is
    // written. The window is five heartbeats of each node (counted, not slept). Measured where
    // the store counts its writes (SQLite; the writes come from the same code on PostgreSQL).
    if a.server().rows_written().is_empty() {
        eprintln!("idle writes not measured: this store does not count its writes");
    } else {
        idle_agents_write_nothing(&cluster.nodes).await;
    }

    // A link going down is seen on the other node too.
    on_b.stop().await;
    a.wait_agent("on-b", "offline", |v| !v.online).await;
    assert_eq!(listed(a, true).await, names(&["on-a"]));
}

async fn idle_agents_write_nothing(nodes: &[TestServer]) {
    let before: Vec<BTreeMap<String, u64>> =
        nodes.iter().map(|n| n.server().rows_written()).collect();
    let beats = |node: &TestServer| {
        node.server()
            .rows_written()
            .get("nodes")
            .copied()
            .unwrap_or(0)
    };
    let targets: Vec<u64> = nodes.iter().map(|n| beats(n) + 5).collect();
    eventually("five heartbeats of every node", || async {
        nodes
            .iter()
            .zip(&targets)
            .all(|(n, t)| beats(n) >= *t)
            .then_some(())
    })
    .await;
    assert_eq!(written_since(&before, nodes), Vec::<String>::new());
}

/// Node timings of a `postern server` process: as `quick`.
const QUICK_ARGS: [&str; 4] = ["--node-heartbeat", "250ms", "--node-dead-after", "2s"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_taken_over_its_sessions_end_as_node_lost_and_its_agents_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let database = shared_database(dir.path()).await;
    // Node A, a real process to kill -9, is started first: the agents that dial it meet only
    // it, as B's and C's gateways (reserved ports) do not answer yet.
    let mut node_a =
        ServerProcess::spawn(&dir.path().join("a"), &database, &QUICK_ARGS, None).await;
    let password = node_a.password.clone().unwrap();
    let (gateway_b, gateway_c) = (free_port(), free_port());
    let client = reqwest::Client::new();
    let call = |method: Method, path: String, token: Option<String>, body: serde_json::Value| {
        let mut request = client
            .request(method, format!("{}{path}", node_a.url))
            .json(&body);
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
        "/api/v1/login".into(),
        None,
        json!({"user": "admin", "password": password}),
    )
    .await;
    let admin = login["token"].as_str().unwrap().to_owned();
    let enrollment = call(
        Method::POST,
        "/api/v1/tokens".into(),
        Some(admin.clone()),
        json!({"uses": 10}),
    )
    .await;
    let token = enrollment["token"].as_str().unwrap().to_owned();

    let every_node = vec![
        node_a.gateway.clone(),
        format!("127.0.0.1:{gateway_b}"),
        format!("127.0.0.1:{gateway_c}"),
    ];
    let agent = |name: &str, servers: Vec<String>| {
        let tmp = tempfile::tempdir().unwrap();
        let mut options = postern_agent::AgentOptions::new(String::new(), tmp.path().join("agent"));
        options.servers = servers;
        options.name = Some(name.into());
        options.token = Some(token.parse().unwrap());
        options.reconnect_min = Duration::from_millis(50);
        options.reconnect_max = Duration::from_millis(500);
        (tmp, postern_agent::Agent::start(options).unwrap())
    };
    let movers = [
        agent("mover-1", every_node.clone()),
        agent("mover-2", every_node.clone()),
    ];
    // Knows node A only: once A is gone it stays offline, and must show so.
    let lonely = agent("lonely", vec![node_a.gateway.clone()]);
    for (_, a) in movers.iter().chain([&lonely]) {
        crate::harness::wait_agent_state(a, "approved on node A", approved).await;
    }

    // B and C join on the reserved gateway ports.
    let join = |gateway: u16| {
        let password = password.clone();
        let database = database.clone();
        async move {
            let node_dir = tempfile::tempdir().unwrap();
            let mut config = TestServer::test_config(&node_dir);
            config.database = Some(database);
            config.agent_listen = format!("127.0.0.1:{gateway}").parse().unwrap();
            quick(&mut config);
            TestServer::launch(node_dir, config, Some(password)).await
        }
    };
    let node_b = join(gateway_b).await;
    let node_c = join(gateway_c).await;
    let on_b = TestAgent::start(&node_b, "on-b", Some(token.clone()));
    on_b.wait_state("approved", approved).await;
    let everyone = names(&["mover-1", "mover-2", "lonely", "on-b"]);
    for node in [&node_b, &node_c] {
        eventually("every agent online on every node", || async {
            (listed(node, true).await == everyone).then_some(())
        })
        .await;
    }

    // A session held by node A: created there, its tunnel bound there.
    let session = call(
        Method::POST,
        "/api/v1/agents/mover-1/sessions".into(),
        Some(admin.clone()),
        json!({}),
    )
    .await;
    let id = session["id"].as_str().unwrap().to_owned();
    node_c
        .wait_session(&id, &node_c.admin_token, SessionState::Running)
        .await;

    node_a.kill().await;

    // The survivors end its session, whichever of them took it over.
    let ended = node_b
        .wait_session(&id, &node_b.admin_token, SessionState::Stopped)
        .await;
    assert_eq!(ended.reason.as_deref(), Some("node lost"));
    // The movers dial B or C by themselves; `lonely` has nowhere to go and shows offline.
    let survivors = names(&["mover-1", "mover-2", "on-b"]);
    for node in [&node_b, &node_c] {
        eventually("the movers back and lonely offline", || async {
            (listed(node, true).await == survivors).then_some(())
        })
        .await;
        node.wait_agent("lonely", "offline", |v| {
            !v.online && v.liveness == Liveness::Offline
        })
        .await;
        assert_eq!(listed(node, false).await, names(&["lonely"]));
        assert_eq!(counts(node).await.online, 3);
        let online_ids = present(node).await;
        let lonely_id = node.agent("lonely").await.unwrap().id;
        assert!(!online_ids.contains(&lonely_id), "no phantom online");
        assert_eq!(online_ids.len(), 3);
    }
    node_c
        .wait_event("lonely offline as its node was lost", |e| {
            e.kind == EventKind::AgentOffline
                && e.agent.as_ref().is_some_and(|a| a.name == "lonely")
                && e.detail.contains("node was lost")
        })
        .await;
}
