//! What `kill -9` takes away, and what it does not: the server process killed and started
//! again on its ports and data, and, with three nodes on one database, the node that holds the
//! agent's link killed for good. Either way `postern ssh` goes on with its shell, the counter
//! contiguous and what was typed meanwhile taken once. Both run on the shared SQLite file, or
//! on PostgreSQL when `POSTERN_TEST_POSTGRES` names a server (as nodes.rs).

use std::time::Duration;

use postern_protocol::SessionId;
use postern_protocol::SessionState;
use tokio::io::AsyncWriteExt;

use super::{
    TYPED, continues, counter, counting, detached_then_running, finish, session_at, session_of,
    ssh_on_pty, steps,
};
use crate::cluster::shared_database;
use crate::harness::{TestServer, approved, cli_home, cli_home_at, eventually, free_port};
use crate::link_proxy::Proxy;
use crate::server_process::ServerProcess;

/// Quick node timings, so that a death is found within seconds (as nodes.rs).
pub const QUICK_ARGS: [&str; 4] = ["--node-heartbeat", "250ms", "--node-dead-after", "2s"];

/// An agent given `servers`, redialling quickly.
pub fn agent(
    name: &str,
    servers: Vec<String>,
    token: &str,
) -> (tempfile::TempDir, postern_agent::Agent) {
    let tmp = tempfile::tempdir().unwrap();
    let options = agent_options(name, servers, token, &tmp.path().join("agent"));
    let agent = postern_agent::Agent::start(options).unwrap();
    (tmp, agent)
}

/// The options of `agent`, its data in `data_dir` (to start it again as the same agent).
pub fn agent_options(
    name: &str,
    servers: Vec<String>,
    token: &str,
    data_dir: &std::path::Path,
) -> postern_agent::AgentOptions {
    let mut options = postern_agent::AgentOptions::new(String::new(), data_dir);
    options.servers = servers;
    options.name = Some(name.into());
    options.token = Some(token.parse().unwrap());
    options.reconnect_min = Duration::from_millis(50);
    options.reconnect_max = Duration::from_millis(500);
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postern_ssh_keeps_its_shell_through_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let database = shared_database(dir.path()).await;
    let mut server = ServerProcess::spawn(&dir.path().join("server"), &database, &[], None).await;
    let password = server.password.clone().unwrap();
    let admin = server.login("admin", &password).await;
    let token = server.create_token(&admin, 1).await;
    let (_tmp, agent) = agent("hardy", vec![server.gateway.clone()], &token);
    crate::harness::wait_agent_state(&agent, "approved", approved).await;
    let home = cli_home_at(&server.url, "admin", &password).await;
    let (mut pty, mut child) = ssh_on_pty(home.path(), "hardy");
    let mut seen = counting(&mut pty).await;
    let before = *counter(&seen).last().unwrap();
    let session = session_at(&server.url, &admin, "hardy").await;

    server.kill().await;
    pty.write_all(TYPED).await.unwrap();
    server.start_again().await;
    continues(&mut pty, &mut seen, before).await;
    detached_then_running(&steps(server.events(&admin).await, session.id.as_str()));
    finish(&mut pty, &mut child, &mut seen).await;
}

/// Node A holds the agent's link (the session's tunnel is bound there); the user's terminal
/// reaches it through node B. A is killed for good: a survivor takes it over and detaches the
/// session (`node lost`: the agent keeps its shell), the agent links to B or C and the shell
/// goes on. The way to B and C is held shut until the session has detached, so that the
/// takeover comes first, as when a node dies where its agents cannot see it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postern_ssh_keeps_its_shell_when_the_node_holding_the_agent_link_is_killed() {
    let mut three = ThreeNodes::start("wanderer").await;
    let password = three.password.clone();

    let home = cli_home(&three.node_b, "admin", &password).await;
    let (mut pty, mut child) = ssh_on_pty(home.path(), "wanderer");
    let mut seen = counting(&mut pty).await;
    let before = *counter(&seen).last().unwrap();
    let session = session_of(&three.node_b, "wanderer").await;
    // Node A recorded that the agent keeps the session's shell (its `Kept`).
    let store = three.node_b.store().await;
    let id = SessionId::parse(session.id.as_str()).unwrap();
    eventually("the session's shell recorded as kept", || async {
        let s = store.session(&id).await.unwrap().unwrap();
        s.shells_kept.then_some(())
    })
    .await;

    three.to_b.freeze();
    three.to_c.freeze();
    three.node_a.kill().await;
    pty.write_all(TYPED).await.unwrap();
    let detached = three
        .node_b
        .wait_session(
            session.id.as_str(),
            &three.node_b.admin_token,
            SessionState::Detached,
        )
        .await;
    assert_eq!(detached.reason.as_deref(), Some("node lost"));
    three.to_b.thaw();
    three.to_c.thaw();
    continues(&mut pty, &mut seen, before).await;
    detached_then_running(&steps(three.node_b.events().await, session.id.as_str()));
    finish(&mut pty, &mut child, &mut seen).await;
}

/// Three nodes of one database, the agent `name` (given all three) linked to node A; B and C
/// are reached through forwarders a test can freeze.
pub struct ThreeNodes {
    pub password: String,
    pub node_a: ServerProcess,
    pub node_b: TestServer,
    pub to_b: Proxy,
    pub to_c: Proxy,
    _node_c: TestServer,
    _agent: (tempfile::TempDir, postern_agent::Agent),
    _dir: tempfile::TempDir,
}

impl ThreeNodes {
    pub async fn start(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = shared_database(dir.path()).await;
        let (gateway_b, gateway_c) = (free_port(), free_port());
        let to_b = Proxy::start(format!("127.0.0.1:{gateway_b}").parse().unwrap()).await;
        let to_c = Proxy::start(format!("127.0.0.1:{gateway_c}").parse().unwrap()).await;
        // A first, alone: the agent, given all three, can only link to A (B and C do not
        // answer yet behind their forwarders). Every node takes
        // node streams (the user on B reaches the agent's node).
        let node_listen = format!("127.0.0.1:{}", free_port());
        let mut args = QUICK_ARGS.to_vec();
        args.extend(["--node-listen", &node_listen]);
        let node_a = ServerProcess::spawn(&dir.path().join("a"), &database, &args, None).await;
        let password = node_a.password.clone().unwrap();
        let admin_a = node_a.login("admin", &password).await;
        let token = node_a.create_token(&admin_a, 1).await;
        let servers = vec![
            node_a.gateway.clone(),
            to_b.addr.to_string(),
            to_c.addr.to_string(),
        ];
        let (tmp, agent) = agent(name, servers, &token);
        crate::harness::wait_agent_state(&agent, "approved on node A", approved).await;
        let join = |gateway: u16| {
            let (password, database) = (password.clone(), database.clone());
            async move {
                let node_dir = tempfile::tempdir().unwrap();
                let mut config = TestServer::test_config(&node_dir);
                config.database = Some(database);
                config.agent_listen = format!("127.0.0.1:{gateway}").parse().unwrap();
                config.node_heartbeat = Duration::from_millis(250);
                config.node_dead_after = Duration::from_secs(2);
                config.node_listen = Some("127.0.0.1:0".parse().unwrap());
                TestServer::launch(node_dir, config, Some(password)).await
            }
        };
        let node_b = join(gateway_b).await;
        let node_c = join(gateway_c).await;
        Self {
            password,
            node_a,
            node_b,
            to_b,
            to_c,
            _node_c: node_c,
            _agent: (tmp, agent),
            _dir: dir,
        }
    }
}
