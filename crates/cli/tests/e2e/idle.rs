//! What keeps a session from going idle: a connection logged in through it (OpenSSH on the
//! tunnel port, `postern ssh` on the data path), as the agent reports — not connections to its
//! tunnel port that never log in, however many or however often they come back.

use std::process::Stdio;
use std::time::Duration;

use postern_agent::AgentOptions;
use postern_protocol::SessionState;
use postern_protocol::api::SessionView;
use reqwest::Method;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{TestAgent, TestServer, approved, cli_home, postern, read_until, run_cli};

/// An approved agent whose SSH server gives a handshake an hour to log in: long past the
/// test, so that only the server's idle rule can end a session held by stalled handshakes.
async fn patient_agent(server: &TestServer, name: &str) -> TestAgent {
    let token = server.create_token(600, 1).await;
    let agent = TestAgent::start_with(server, name, Some(token), |o: &mut AgentOptions| {
        o.login_grace = Duration::from_secs(3600);
    });
    agent.wait_state("approved", approved).await;
    agent
}

/// Connections to `port` that never log in: half never send a banner, half stall in the key
/// exchange. Each is open (the agent's server answered it) when this returns.
async fn stalled_handshakes(port: u16, count: usize) -> Vec<TcpStream> {
    let mut stalled = Vec::new();
    for i in 0..count {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut banner = [0u8; 8];
        tcp.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"SSH-2.0-");
        if i % 2 == 1 {
            tcp.write_all(b"SSH-2.0-Stalled\r\n").await.unwrap();
        }
        stalled.push(tcp);
    }
    stalled
}

/// A client that connects, hears the banner, leaves and comes back, until dropped.
fn reconnecting(port: u16) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await {
                let mut banner = [0u8; 8];
                let _ = tcp.read_exact(&mut banner).await;
            }
            // Pacing only, so that the loop does not take a core.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn running_session(server: &TestServer, agent: &str) -> SessionView {
    let (_, list) = server
        .call(
            Method::GET,
            "/api/v1/sessions",
            Some(&server.admin_token),
            None,
        )
        .await;
    let sessions: Vec<SessionView> = serde_json::from_value(list).unwrap();
    sessions
        .into_iter()
        .find(|s| s.agent.name == agent && s.state == SessionState::Running)
        .unwrap()
}

#[tokio::test]
async fn handshakes_that_never_log_in_do_not_keep_a_session_from_going_idle_a_login_does() {
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_secs(3)).await;
    let admin = server.admin_token.clone();
    let _busy = patient_agent(&server, "busy").await;
    let _cli = patient_agent(&server, "cli").await;
    let _quiet = patient_agent(&server, "quiet").await;
    let home = cli_home(&server, "admin", &server.admin_password).await;
    let login = postern_agent::facts::own_login();

    // "busy": a real OpenSSH client logged in through the session's tunnel port, running a
    // command that lasts until its input ends.
    let (ok, _, err) = run_cli(home.path(), &["ssh-cert", "busy.postern", &login], None).await;
    assert!(ok, "{err}");
    let busy = running_session(&server, "busy").await;
    let ssh_dir = home.path().join("ssh");
    let mut ssh = tokio::process::Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "HostKeyAlias=busy.postern",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            ssh_dir.join("known_hosts").display()
        ))
        .arg("-o")
        .arg(format!(
            "IdentityFile={}",
            ssh_dir.join("id_ed25519").display()
        ))
        .arg("-o")
        .arg(format!(
            "CertificateFile={}",
            ssh_dir.join("certs/busy.postern-cert.pub").display()
        ))
        .args(["-p", &busy.port.unwrap().to_string(), "-l", &login])
        .args(["127.0.0.1", "echo logged-in; cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(ssh.stdout.take().unwrap()).lines();
    read_until(&mut out, "logged-in").await;
    let _stalled_on_busy = stalled_handshakes(busy.port.unwrap(), 10).await;

    // "cli": `postern ssh`, logged in through the data path, running a long command.
    let mut cli = postern()
        .env("POSTERN_HOME", home.path())
        .args([
            "ssh",
            "-q",
            "cli",
            "--",
            "echo",
            "logged-in;",
            "sleep",
            "1000",
        ])
        .spawn()
        .unwrap();
    let mut cli_out = BufReader::new(cli.stdout.take().unwrap()).lines();
    read_until(&mut cli_out, "logged-in").await;
    let cli_session = running_session(&server, "cli").await;

    // "quiet", started after "busy" was logged in: 50 stalled handshakes and a client that
    // reconnects in a loop, all through its tunnel port.
    let (status, body) = server.start_session("quiet", &admin).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let port = server
        .wait_session(&id, &admin, SessionState::Running)
        .await
        .port
        .unwrap();
    let _stalled = stalled_handshakes(port, 50).await;
    let looping = reconnecting(port);
    let quiet = server
        .wait_session(&id, &admin, SessionState::Stopped)
        .await;
    assert_eq!(quiet.reason.as_deref(), Some("idle timeout"), "{quiet:?}");
    looping.abort();

    // "busy" and "cli" ran longer than "quiet" without their logins' help: the logins are
    // what kept them.
    for held in [&busy, &cli_session] {
        let now = server.session(held.id.as_str(), &admin).await;
        assert_eq!(now.state, SessionState::Running, "{now:?}");
    }
    cli.kill().await.unwrap();

    // The client leaves: with only stalled handshakes left, "busy" goes idle too.
    drop(ssh.stdin.take());
    let exited = tokio::time::timeout(crate::harness::DEADLINE, ssh.wait())
        .await
        .expect("ssh did not end")
        .unwrap();
    assert!(exited.success(), "{exited:?}");
    let busy = server
        .wait_session(busy.id.as_str(), &admin, SessionState::Stopped)
        .await;
    assert_eq!(busy.reason.as_deref(), Some("idle timeout"), "{busy:?}");
}
