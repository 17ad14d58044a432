//! Losing a node under a fleet (issue 12, "Tests"): 1,000 real agent links held by
//! `postern-bench agents` over three nodes of one database, then `kill -9` of one node.
//!
//! 900 `fleet-*` agents are given every node's gateway and spread over the three by the agent
//! library's own choice; 100 `pinned-*` agents are given only the node that is killed, so
//! afterwards nothing can truthfully show them online. The survivors must end up showing
//! exactly the 900 online — every one of them held by a survivor, as the kernel's socket
//! table confirms — and none of the 100 (0 phantom online), and the dead node's sessions
//! ended with a reason. The small, one-agent-at-a-time version of this is in nodes.rs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use postern_protocol::SessionState;
use postern_protocol::api::AgentView;
use serde_json::json;

use crate::cluster::shared_database;
use crate::harness::{TestServer, established_on, free_port};
use crate::server_process::ServerProcess;

const FLEET: usize = 900;
const PINNED: usize = 100;
/// How long a thousand links may take to come up, or to settle after the kill, on a loaded
/// machine in a debug build: a guard against hanging, not a timing asserted.
const FLEET_DEADLINE: Duration = Duration::from_secs(300);
/// Sessions held by the node that is killed.
const SESSIONS: usize = 3;

/// Quick node timings so that the death is found within seconds (as in nodes.rs).
const NODE_HEARTBEAT: &str = "250ms";
const NODE_DEAD_AFTER: &str = "2s";

/// The load-mode binary: `POSTERN_BENCH_BIN`, else beside the `postern` under test.
pub fn bench_binary() -> PathBuf {
    let path = std::env::var_os("POSTERN_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_BIN_EXE_postern")).with_file_name("postern-bench")
        });
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p postern-bench` (scripts/test does)",
        path.display()
    );
    path
}

/// Waits with the fleet's deadline until `probe` yields `Some`.
async fn settles<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let found = tokio::time::timeout(FLEET_DEADLINE, async {
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Node A: a `postern server` process (killed with SIGKILL), its log in `dir`.
async fn spawn_node(dir: &Path, database: &str, http: u16, gateway: u16) -> ServerProcess {
    let extra = [
        "--node-heartbeat",
        NODE_HEARTBEAT,
        "--node-dead-after",
        NODE_DEAD_AFTER,
        // A thousand agents dial from one address at once by construction.
        "--max-handshakes",
        "4096",
        "--max-handshakes-per-source",
        "4096",
    ];
    // A fleet's worth of log lines go to a file, not beside the test's.
    let log = Some(dir.join("node-a.log"));
    ServerProcess::spawn_on(&dir.join("node-a"), database, http, gateway, &extra, log).await
}

/// `postern-bench agents`: `count` agents named PREFIX-NNNNN, each given `servers`.
fn spawn_load(
    dir: &Path,
    prefix: &str,
    count: usize,
    servers: &[String],
    token: &str,
) -> tokio::process::Child {
    let log = std::fs::File::create(dir.join(format!("{prefix}.log"))).unwrap();
    tokio::process::Command::new(bench_binary())
        .arg("agents")
        .args(["--server", &servers.join(",")])
        .args(["--count", &count.to_string()])
        .args(["--name-prefix", prefix])
        .arg("--data-dir")
        .arg(dir.join(prefix))
        .env("POSTERN_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The names a node lists with `GET /api/v1/agents?online=…` (all of them: no limit).
async fn listed(base: &str, token: &str, online: bool) -> BTreeSet<String> {
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/agents?online={online}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let agents: Vec<AgentView> = response.json().await.unwrap();
    agents.into_iter().map(|a| a.name).collect()
}

fn names(prefix: &str, count: usize) -> BTreeSet<String> {
    (0..count).map(|i| format!("{prefix}-{i:05}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_a_thousand_agents_loses_none_and_shows_no_phantom() {
    let dir = tempfile::tempdir().unwrap();
    let database = shared_database(dir.path()).await;
    let (http_a, gateway_a) = (free_port(), free_port());
    let mut node_a = spawn_node(dir.path(), &database, http_a, gateway_a).await;
    let password = node_a
        .password
        .clone()
        .expect("the first node of a database prints the administrator's password");
    let url_a = format!("http://127.0.0.1:{http_a}");
    let join = || {
        let (password, database) = (password.clone(), database.clone());
        async move {
            let node_dir = tempfile::tempdir().unwrap();
            let mut config = TestServer::test_config(&node_dir);
            config.database = Some(database);
            config.node_heartbeat = Duration::from_millis(250);
            config.node_dead_after = Duration::from_secs(2);
            config.max_handshakes = 4096;
            config.max_handshakes_per_source = 4096;
            TestServer::launch(node_dir, config, Some(password)).await
        }
    };
    let node_b = join().await;
    let node_c = join().await;
    let admin_a = node_b.login("admin", &password).await;

    let token = node_b.create_token(3600, (FLEET + PINNED) as u32).await;
    let every_node: Vec<String> = [
        gateway_a,
        node_b.agent_addr().port(),
        node_c.agent_addr().port(),
    ]
    .iter()
    .map(|p| format!("127.0.0.1:{p}"))
    .collect();
    let _fleet = spawn_load(dir.path(), "fleet", FLEET, &every_node, &token);
    let _pinned = spawn_load(dir.path(), "pinned", PINNED, &every_node[..1], &token);
    let (fleet, pinned) = (names("fleet", FLEET), names("pinned", PINNED));
    let everyone: BTreeSet<String> = fleet.union(&pinned).cloned().collect();
    for (url, token) in [
        (url_a.as_str(), admin_a.as_str()),
        (&node_b.url(), &node_b.admin_token),
        (&node_c.url(), &node_c.admin_token),
    ] {
        settles("all 1,000 agents online on every node", || async {
            (listed(url, token, true).await == everyone).then_some(())
        })
        .await;
    }
    // The fleet is spread: node A holds the pinned agents and some of the others.
    let on_a = established_on(gateway_a, None);
    assert!(
        on_a > PINNED,
        "node A holds {on_a} links: no fleet agent chose it"
    );

    // Sessions node A holds: created there, on agents only it can reach.
    let mut sessions = Vec::new();
    for name in pinned.iter().take(SESSIONS) {
        let response = reqwest::Client::new()
            .post(format!("{url_a}/api/v1/agents/{name}/sessions"))
            .bearer_auth(&admin_a)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        node_c
            .wait_session(&id, &node_c.admin_token, SessionState::Running)
            .await;
        sessions.push(id);
    }

    node_a.kill().await;

    // Its sessions end with the reason, seen on either survivor.
    for id in &sessions {
        for node in [&node_b, &node_c] {
            let ended = node
                .wait_session(id, &node.admin_token, SessionState::Stopped)
                .await;
            assert_eq!(ended.reason.as_deref(), Some("node lost"), "session {id}");
        }
    }
    // Every fleet agent back online on the survivors, and nothing else online: the pinned
    // agents have nowhere to go and must not stay online on the dead node's word.
    for node in [&node_b, &node_c] {
        settles(
            "the fleet online on the survivors and the pinned offline",
            || async {
                let online = listed(&node.url(), &node.admin_token, true).await;
                (online == fleet).then_some(())
            },
        )
        .await;
        assert_eq!(listed(&node.url(), &node.admin_token, false).await, pinned);
    }
    // And the survivors really hold those 900 links (the kernel's count, not the API's).
    let (b, c) = (node_b.agent_addr().port(), node_c.agent_addr().port());
    settles("the survivors to hold the fleet's links", || async {
        (established_on(b, None) + established_on(c, None) == FLEET).then_some(())
    })
    .await;
}
