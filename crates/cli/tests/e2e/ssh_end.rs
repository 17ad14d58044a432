//! `postern ssh` whose connection is dropped rather than ended says why, from the session's
//! recorded end, and exits 255 as OpenSSH does: stopped by a user, agent revoked, server
//! restarted, the agent's link lost, the idle timeout. A server killed under a running command
//! leaves nobody to say why: the connection to it was lost, and that is what is said.

use std::time::Duration;

use postern_protocol::SessionState;
use postern_protocol::api::{AgentView, SessionView};
use reqwest::Method;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::cluster::shared_database;
use crate::harness::{
    DEADLINE, TestAgent, TestServer, approved, approved_agent, cli_home, cli_home_at, eventually,
    postern, read_until, wait_agent_state,
};
use crate::link_proxy::Proxy;
use crate::server_process::ServerProcess;

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
    // Twice the harness's deadline: `postern ssh` may ask the server for up to 20 s why the
    // session ended.
    let out = tokio::time::timeout(DEADLINE * 2, child.wait_with_output())
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

/// The server carrying a streaming command is killed (`kill -9`): no exit status comes, and
/// no close of the data path — nobody is left to say why. Once it is back, a command that
/// ends has its own status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_a_running_command_is_named_and_exits_255() {
    let dir = tempfile::tempdir().unwrap();
    let database = shared_database(dir.path()).await;
    let mut server = ServerProcess::spawn(&dir.path().join("server"), &database, &[], None).await;
    let password = server.password.clone().unwrap();
    let admin = server.login("admin", &password).await;
    let token = server.create_token(&admin, 1).await;
    let (_tmp, agent) =
        crate::survive::killed::agent("doomed", vec![server.gateway.clone()], &token);
    wait_agent_state(&agent, "approved", approved).await;
    let home = cli_home_at(&server.url, "admin", &password).await;

    // A command that streams output until it is ended.
    let mut child = postern()
        .env("POSTERN_HOME", home.path())
        .args([
            "ssh",
            "-q",
            "doomed",
            "--",
            "sh",
            "-c",
            "'echo started; while :; do echo tick; sleep 0.05; done'",
        ])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    read_until(&mut stdout, "started").await;
    // Read on, as a user's terminal or pipe does, until the output ends.
    let reading = tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });

    server.kill().await;
    assert_eq!(
        ended(child).await,
        (
            Some(255),
            "error: the connection to the server was lost while the command ran: its output may \
             be incomplete, and whether it finished is unknown"
                .to_owned()
        )
    );
    reading.await.unwrap();

    // The server back, a command that ends has its own status, as always.
    server.start_again().await;
    eventually("the agent online again", || async {
        let (_, agents) = server
            .try_call(Method::GET, "/api/v1/agents", Some(&admin), None)
            .await?;
        let agents: Vec<AgentView> = serde_json::from_value(agents).ok()?;
        agents
            .iter()
            .any(|a| a.name == "doomed" && a.online)
            .then_some(())
    })
    .await;
    let out = postern()
        .env("POSTERN_HOME", home.path())
        .args(["ssh", "-q", "doomed", "--", "echo", "done;", "exit", "7"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(7), "done\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The node that holds the agent's link is killed while the user's node carries the command:
/// the user's node closes the connection, and the session's end says the node was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_node_killed_under_a_running_command_is_named_and_exits_255() {
    let mut three = crate::survive::killed::ThreeNodes::start("stranded").await;
    let home = cli_home(&three.node_b, "admin", &three.password).await;
    let (child, _) = long_command(&three.node_b, home.path(), "stranded").await;

    three.node_a.kill().await;
    assert_eq!(
        ended(child).await,
        (
            Some(255),
            "error: the session ended: the server node that held the agent's link was lost"
                .to_owned()
        )
    );
}

/// A request joins the user's open session on the agent (one per user and agent). One that
/// joined a session on its way out — detached by a server restart, its agent back without
/// its shells — runs its command in a new session, rather than failing with the old one's
/// end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_joined_a_session_on_its_way_out_runs_in_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let database = shared_database(dir.path()).await;
    let mut server = ServerProcess::spawn(&dir.path().join("server"), &database, &[], None).await;
    let password = server.password.clone().unwrap();
    let admin = server.login("admin", &password).await;
    let token = server.create_token(&admin, 1).await;
    let agent_dir = tempfile::tempdir().unwrap();
    let options = crate::survive::killed::agent_options(
        "returning",
        vec![server.gateway.clone()],
        &token,
        agent_dir.path(),
    );
    let agent = postern_agent::Agent::start(options.clone()).unwrap();
    wait_agent_state(&agent, "approved", approved).await;
    let home = cli_home_at(&server.url, "admin", &password).await;
    let mut first = postern()
        .env("POSTERN_HOME", home.path())
        .args([
            "ssh",
            "-q",
            "returning",
            "--",
            "echo",
            "started;",
            "sleep",
            "1000",
        ])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(first.stdout.take().unwrap()).lines();
    read_until(&mut stdout, "started").await;

    // The server dies with the session running; the agent stops meanwhile (its processes with
    // it). Back, the server detaches the session: its agent may keep its shells.
    server.kill().await;
    let _ = first.wait().await;
    agent.shutdown().await.unwrap();
    server.start_again().await;

    // The command joins the detached session and waits for it.
    let mut second = postern()
        .env("POSTERN_HOME", home.path())
        .args(["ssh", "returning", "--", "echo", "done;", "exit", "7"])
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(second.stderr.take().unwrap()).lines();
    read_until(&mut stderr, "session detached").await;

    // The agent is back without the session's shells: that session ends, the command runs.
    let _agent = postern_agent::Agent::start(options).unwrap();
    let mut stdout = second.stdout.take().unwrap();
    let (status, out, said) = tokio::time::timeout(DEADLINE, async {
        let mut said = Vec::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            said.push(line);
        }
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out)
            .await
            .unwrap();
        (second.wait().await.unwrap(), out, said)
    })
    .await
    .expect("the command never ended");
    assert_eq!(
        (status.code(), out.as_str()),
        (Some(7), "done\n"),
        "{said:?}"
    );
}
