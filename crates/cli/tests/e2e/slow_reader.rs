//! One slow reader holds up only its own session: user A's SSH client is stopped (SIGSTOP)
//! while far more output than every buffer on the way holds is coming, and on the same
//! agent's one link user B's `postern ssh` commands still get their answers and the agent's
//! heartbeats still count — for three heartbeat timeouts. Then A resumes and every byte
//! arrives.
//!
//! A is paramiko (through `postern proxy`) with a 1 GiB channel window: how much the device
//! may send before A's client reads is the client's choice, and the link must not depend on
//! it being small. (`postern ssh`'s own 8 MiB window is mostly absorbed by the sockets on the
//! way before the gateway's channel queue fills, so it shows the defect only with small
//! packets, not reliably.) Before russh's flow control on consumption (third_party/README.md,
//! 6) the gateway parked the agent's whole link once A's channel queue was full: B's commands
//! hung and the agent went offline after the heartbeat timeout.

use std::process::Stdio;
use std::time::Duration;

use postern_protocol::api::{EventKind, Liveness, Role};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::harness::{TestAgent, TestServer, approved, cli_home, run_cli};

/// A's output: far beyond what the pipes, the sockets, the gateway's channel queue (256
/// messages of up to 64 KiB) and the relays on the way hold together.
const TOTAL: u64 = 128 << 20;

/// The server declares a silent agent offline after this: the test watches the link for
/// three times as long while A is stopped.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_reader_that_stops_reading_holds_up_only_its_own_session() {
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.heartbeat_timeout = HEARTBEAT_TIMEOUT;
    })
    .await;
    let token = server.create_token(600, 1).await;
    let agent = TestAgent::start_with(&server, "busy", Some(token), |o| {
        o.sync_rate = Duration::from_secs(1);
    });
    agent.wait_state("approved", approved).await;
    server
        .wait_agent("busy", "online", |a| a.liveness == Liveness::Online)
        .await;
    server.add_user("bob", Role::Operator).await;
    let alice = cli_home(&server, "admin", &server.admin_password).await;
    let bob = cli_home(&server, "bob", "bob-password-123").await;

    let (mut a, mut a_out) = start_download(alice.path()).await;
    // A stops reading: its process is stopped while the output keeps coming.
    signal(&a, "-STOP");

    let since = server.events().await.last().map_or(0, |e| e.id);
    let start = last_seen(&server).await;
    let mut answers = 0;
    let watched = tokio::time::timeout(Duration::from_secs(120), async {
        // Until the server has taken the agent's heartbeats for three timeouts.
        while last_seen(&server).await < start + 3 * HEARTBEAT_TIMEOUT.as_millis() as i64 {
            let (ok, out, err) =
                run_cli(bob.path(), &["ssh", "-q", "busy", "--", "echo", "ok"], None).await;
            assert!(ok && out == "ok\n", "B's command failed: {out:?} {err}");
            answers += 1;
            let view = server.agent("busy").await.unwrap();
            assert!(
                view.online && view.liveness == Liveness::Online,
                "the agent's link suffered: {view:?}"
            );
        }
    })
    .await;
    assert!(watched.is_ok(), "the agent's heartbeats stopped counting");
    assert!(answers >= 3, "B got {answers} answers");
    let troubles: Vec<_> = server
        .events()
        .await
        .into_iter()
        .filter(|e| {
            e.id > since
                && matches!(
                    e.kind,
                    EventKind::AgentNotResponding | EventKind::AgentOffline
                )
        })
        .collect();
    assert!(troubles.is_empty(), "{troubles:#?}");

    // A resumes: everything arrives.
    signal(&a, "-CONT");
    let mut report = String::new();
    let finished = tokio::time::timeout(Duration::from_secs(300), async {
        a_out.read_to_string(&mut report).await.unwrap();
        a.wait().await.unwrap()
    })
    .await;
    let status = finished.expect("A's output never ended");
    assert!(status.success(), "A's client failed: {status}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        report["received"], TOTAL,
        "A lost or gained bytes: {report}"
    );
    assert_eq!(report["status"], 0, "{report}");
}

/// Starts A's paramiko client on `head -c TOTAL /dev/zero` (with the certificate `postern
/// ssh-cert` writes, as `postern ssh-config`'s OpenSSH block would); returns once the first
/// byte arrived.
async fn start_download(
    home: &std::path::Path,
) -> (
    tokio::process::Child,
    BufReader<tokio::process::ChildStdout>,
) {
    let login = postern_agent::facts::own_login();
    let (ok, _, err) = run_cli(home, &["ssh-cert", "busy.postern", &login], None).await;
    assert!(ok, "{err}");
    let files = home.join("ssh");
    let script = home.join("paramiko_client.py");
    std::fs::write(&script, include_str!("paramiko_client.py")).unwrap();
    let config = serde_json::json!({
        "mode": "download",
        "proxy": format!(
            "env POSTERN_HOME={} {} proxy busy.postern",
            home.display(),
            env!("CARGO_BIN_EXE_postern")
        ),
        "login": login,
        "key": files.join("id_ed25519"),
        "cert": files.join("certs/busy.postern-cert.pub"),
        "command": format!("head -c {TOTAL} /dev/zero"),
    });
    let python = std::env::var("POSTERN_TEST_PYTHON")
        .expect("POSTERN_TEST_PYTHON must name a Python with paramiko (scripts/test makes one)");
    let mut child = tokio::process::Command::new(python)
        .arg(&script)
        .arg(config.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let flowing = tokio::time::timeout(crate::harness::DEADLINE, out.read_line(&mut line)).await;
    assert!(
        matches!(flowing, Ok(Ok(_))) && line == "flowing\n",
        "A's output never came: {line:?}"
    );
    (child, out)
}

/// Sends `signal` (`-STOP`, `-CONT`) to `child`.
fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// The server's last sign of life from the agent, in Unix milliseconds.
async fn last_seen(server: &TestServer) -> i64 {
    server
        .agent("busy")
        .await
        .and_then(|a| a.last_seen)
        .unwrap()
}
