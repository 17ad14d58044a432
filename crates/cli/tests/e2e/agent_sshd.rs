//! The agent's SSH server and link, end to end: a certificate works only through its own
//! session's tunnel; handshakes that never log in are closed at the login grace (and the
//! session then goes idle); a dead network is logged as such; bad agent flags are refused.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postern_protocol::SessionState;
use postern_protocol::api::Role;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{
    DEADLINE, TestAgent, TestServer, approved, approved_agent, cli_home, postern, read_until,
    run_cli, wait_agent_state,
};

async fn ssh(args: &[String]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(DEADLINE * 2, cmd.output())
        .await
        .expect("ssh timed out")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_certificate_is_refused_through_another_users_session_on_the_same_agent() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "shared").await;
    let login = postern_agent::facts::own_login();
    let mut homes = Vec::new();
    for user in ["ann", "bob"] {
        server.add_user(user, Role::Operator).await;
        let home = cli_home(&server, user, &format!("{user}-password-123")).await;
        // Each opens a session of their own on the agent and gets a certificate for it.
        let (ok, _, err) =
            run_cli(home.path(), &["ssh-cert", "shared.postern", &login], None).await;
        assert!(ok, "{err}");
        homes.push(home);
    }
    let ann = homes[0].path().join("ssh");
    // Ann's key and certificate, carried by `proxy_home`'s session.
    let as_ann_through = |proxy_home: &std::path::Path| {
        [
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "HostKeyAlias=shared.postern",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([
            "-o".into(),
            format!(
                "ProxyCommand=env POSTERN_HOME={} {} proxy shared",
                proxy_home.display(),
                env!("CARGO_BIN_EXE_postern")
            ),
            "-o".into(),
            format!("UserKnownHostsFile={}", ann.join("known_hosts").display()),
            "-o".into(),
            format!("IdentityFile={}", ann.join("id_ed25519").display()),
            "-o".into(),
            format!(
                "CertificateFile={}",
                ann.join("certs/shared.postern-cert.pub").display()
            ),
            "-l".into(),
            login.clone(),
            "shared.postern".into(),
            "echo through-own-session".into(),
        ])
        .collect::<Vec<String>>()
    };
    let (code, err) = ssh(&as_ann_through(homes[1].path())).await;
    assert_eq!(code, 255, "ann's certificate through bob's session: {err}");
    assert!(err.contains("Permission denied"), "{err}");
    let (code, err) = ssh(&as_ann_through(homes[0].path())).await;
    assert_eq!(code, 0, "ann's certificate through her own session: {err}");
}

#[tokio::test]
async fn handshakes_that_never_log_in_are_closed_and_the_session_then_goes_idle() {
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_secs(2)).await;
    let token = server.create_token(600, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut options = TestAgent::options(&server, "stalled", &tmp.path().join("a"));
    options.token = Some(token.parse().unwrap());
    options.login_grace = Duration::from_millis(300);
    let agent = postern_agent::Agent::start(options).unwrap();
    wait_agent_state(&agent, "approved", approved).await;

    let admin = server.admin_token.clone();
    let (_, body) = server.start_session("stalled", &admin).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let port = server
        .wait_session(&id, &admin, SessionState::Running)
        .await
        .port
        .unwrap();
    let mut stalled = Vec::new();
    for i in 0..6 {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        // The agent's server answers: its channel is open (but, not logged in, no activity).
        let mut banner = [0u8; 8];
        tcp.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"SSH-2.0-");
        if i % 2 == 1 {
            // Half send a banner and stall in the key exchange; half never send anything.
            tcp.write_all(b"SSH-2.0-Stalled\r\n").await.unwrap();
        }
        stalled.push(tcp);
    }
    for mut tcp in stalled {
        let closed = tokio::time::timeout(DEADLINE, async {
            let mut buf = [0u8; 4096];
            while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        assert!(closed.is_ok(), "a stalled handshake was never closed");
    }
    let ended = server
        .wait_session(&id, &admin, SessionState::Stopped)
        .await;
    assert_eq!(ended.reason.as_deref(), Some("idle timeout"), "{ended:?}");
    agent.shutdown().await.unwrap();
}

/// A relay that can stop forwarding without closing either side, like a dead network.
struct Relay {
    addr: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, flag.clone()));
                tokio::spawn(pump(ro, wi, flag.clone()));
            }
        });
        Self { addr, frozen }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
        if frozen.load(Ordering::SeqCst) {
            // Keep both sockets open and drop everything.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn an_agent_logs_a_dead_network_as_no_answer_not_as_the_server_closing() {
    let server = TestServer::start().await;
    let relay = Relay::start(server.agent_addr()).await;
    let token = server.create_token(600, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = postern()
        .args(["agent", "--server", &relay.addr.to_string()])
        .arg("--data-dir")
        .arg(tmp.path().join("agent"))
        .args(["--name", "cut-off", "--token", &token, "--keepalive", "1s"])
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    read_until(&mut log, "approved; link up").await;
    relay.frozen.store(true, Ordering::SeqCst);
    let lines = read_until(&mut log, "link to server lost").await;
    let lost = lines.last().unwrap();
    assert!(
        lost.contains("no answer from the server within 4 s"),
        "{lost}"
    );
    assert!(!lost.contains("closed the link"), "{lost}");
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test]
async fn postern_agent_refuses_bad_durations_and_a_server_without_a_port_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let dir = dir.to_str().unwrap();
    for (args, says) in [
        (
            &["--server", "localhost:2200", "--sync-rate", "0s"][..],
            "between 1s and 10m",
        ),
        (
            &["--server", "localhost:2200", "--keepalive", "0s"],
            "between 1s and 1h",
        ),
        (&["--server", "localhost"], "no port"),
    ] {
        let out = postern()
            .args(["agent", "--data-dir", dir])
            .args(args)
            .output();
        let out = tokio::time::timeout(DEADLINE, out)
            .await
            .expect("the agent did not refuse at once")
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!std::path::Path::new(dir).exists(), "nothing was created");
}
