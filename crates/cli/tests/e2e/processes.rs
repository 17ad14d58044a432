//! No process of a session outlives it: a command that forks background children is gone
//! after the session is stopped, after the agent is stopped (SIGTERM), and after the agent is
//! killed (SIGKILL: its leader dies with the agent, the rest at the agent's next start).
//! Checked in /proc by process group, polled until gone within the deadline.

use std::path::Path;
use std::process::Stdio;

use postern_protocol::SessionState;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{TestServer, approved_agent, cli_home, eventually, postern, read_until};

/// Two background children — one deaf to the hang-up, as under `nohup` — and a foreground
/// loop; the group id (the shell's pid) first.
const COMMAND: &str = "echo pgid=$$; sleep 1000 & (trap '' HUP; exec sleep 1000) & \
                       while true; do date; sleep 0.2; done";

/// (state, pgid) of a process from /proc/PID/stat, if it exists.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgid = fields.nth(1)?.parse().ok()?;
    Some((state, pgid))
}

/// The running (not zombie) processes of group `pgid`.
fn group(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, g)| g == pgid && state != 'Z'))
        .collect()
}

async fn all_gone(pgid: i32, when: &str) {
    eventually(
        &format!("every process of group {pgid} to end {when}"),
        || async { group(pgid).is_empty().then_some(()) },
    )
    .await;
}

/// Runs COMMAND through `postern ssh` as `home`'s user; returns the client and the group id
/// once the command runs with its children.
async fn start_command(home: &Path, agent: &str) -> (tokio::process::Child, i32) {
    let mut ssh = postern()
        .env("POSTERN_HOME", home)
        .args(["ssh", "-q", agent, "--", COMMAND])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(ssh.stdout.take().unwrap()).lines();
    let seen = read_until(&mut lines, "pgid=").await;
    let pgid: i32 = seen
        .last()
        .and_then(|l| l.strip_prefix("pgid="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    // Keep the output flowing, so the loop never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    eventually("the shell and both background children", || async {
        (group(pgid).len() >= 3).then_some(())
    })
    .await;
    (ssh, pgid)
}

#[tokio::test]
async fn a_stopped_session_leaves_no_process_behind() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "reaped").await;
    let home = cli_home(&server, "admin", &server.admin_password).await;
    let (mut ssh, pgid) = start_command(home.path(), "reaped").await;

    let admin = server.admin_token.clone();
    let sessions = server
        .call(reqwest::Method::GET, "/api/v1/sessions", Some(&admin), None)
        .await
        .1;
    let id = sessions[0]["id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/sessions/{id}/stop"),
            Some(&admin),
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server
        .wait_session(&id, &admin, SessionState::Stopped)
        .await;
    all_gone(pgid, "after the session stopped").await;
    let _ = ssh.wait().await;
}

/// A real `postern agent` process, enrolled with a token.
struct AgentProcess {
    child: tokio::process::Child,
}

impl AgentProcess {
    fn start(server: &TestServer, dir: &Path, name: &str, token: Option<&str>) -> Self {
        let mut cmd = postern();
        cmd.args(["agent", "--server", &server.agent_addr().to_string()])
            .arg("--data-dir")
            .arg(dir)
            .args(["--name", name])
            .stderr(Stdio::null());
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        Self {
            child: cmd.spawn().unwrap(),
        }
    }

    /// Sends `signal` (a name for kill(1)) to the agent.
    fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

async fn agent_process_with_command(
    server: &TestServer,
    dir: &Path,
    name: &str,
) -> (AgentProcess, tokio::process::Child, i32, tempfile::TempDir) {
    let token = server.create_token(600, 1).await;
    let agent = AgentProcess::start(server, dir, name, Some(&token));
    server
        .wait_agent(name, "approved and online", |a| {
            a.online && a.status == postern_protocol::AgentStatus::Approved
        })
        .await;
    let home = cli_home(server, "admin", &server.admin_password).await;
    let (ssh, pgid) = start_command(home.path(), name).await;
    (agent, ssh, pgid, home)
}

#[tokio::test]
async fn an_agent_stopped_with_sigterm_ends_its_sessions_processes_first() {
    let server = TestServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let (mut agent, mut ssh, pgid, _home) =
        agent_process_with_command(&server, &dir, "termed").await;

    agent.signal("TERM");
    let status = tokio::time::timeout(crate::harness::DEADLINE, agent.child.wait())
        .await
        .expect("the agent did not exit")
        .unwrap();
    assert!(status.success(), "{status:?}");
    // The agent waited for them: nothing of the session is left once it has exited.
    assert!(group(pgid).is_empty(), "left running: {:?}", group(pgid));
    let _ = ssh.wait().await;
}

#[tokio::test]
async fn a_killed_agents_session_leader_dies_with_it_and_the_rest_at_its_next_start() {
    let server = TestServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let (mut agent, mut ssh, pgid, _home) =
        agent_process_with_command(&server, &dir, "killed").await;

    agent.signal("KILL");
    agent.child.wait().await.unwrap();
    // The parent-death signal: the session's leader (the shell, pid = pgid) ends at once.
    eventually("the session leader to die with the agent", || async {
        stat(pgid)
            .is_none_or(|(state, _)| state == 'Z')
            .then_some(())
    })
    .await;
    let _ = ssh.wait().await;

    // Its background children are reaped when the agent starts again on its data dir.
    let mut again = AgentProcess::start(&server, &dir, "killed", None);
    all_gone(pgid, "after the agent started again").await;
    again.signal("TERM");
    let _ = again.child.wait().await;
}
