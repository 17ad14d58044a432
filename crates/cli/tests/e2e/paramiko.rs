//! paramiko (Python; what Ansible and many scripts use) as a second real SSH client beside
//! OpenSSH: through `postern proxy` to an agent's SSH server with the key and certificate
//! that `postern ssh-cert` writes, and straight to the gateway with two keys on one
//! connection. The client is `paramiko_client.py`, run by the interpreter named in
//! POSTERN_TEST_PYTHON (scripts/test makes a venv with paramiko and exports it).

use std::path::Path;
use std::process::Stdio;

use russh::keys::ssh_key::LineEnding;
use serde_json::Value;

use crate::harness::{DEADLINE, TestServer, approved_agent, cli_home, run_cli, test_key};

const CLIENT: &str = include_str!("paramiko_client.py");

/// Runs the paramiko client with `config`; returns what it reports.
async fn paramiko(dir: &Path, config: Value) -> Value {
    let python = std::env::var("POSTERN_TEST_PYTHON").expect(
        "POSTERN_TEST_PYTHON must name a Python with paramiko (scripts/test makes one in \
         target/test-venv)",
    );
    let script = dir.join("paramiko_client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let run = tokio::process::Command::new(python)
        .arg(&script)
        .arg(config.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE * 3, run)
        .await
        .expect("paramiko timed out")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "paramiko failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).unwrap();
    v
}

#[tokio::test]
async fn paramiko_logs_in_with_a_certificate_after_a_refused_key_and_runs_exec_pty_and_sftp() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "pyhost").await;
    let home = cli_home(&server, "admin", &server.admin_password).await;
    let login = postern_agent::facts::own_login();
    // What the OpenSSH config runs before each connection: session, certificate, known host.
    let (ok, _, err) = run_cli(home.path(), &["ssh-cert", "pyhost.postern", &login], None).await;
    assert!(ok, "{err}");
    let files = home.path().join("ssh");
    let known = std::fs::read_to_string(files.join("known_hosts")).unwrap();
    let host_key = known
        .lines()
        .find_map(|l| l.strip_prefix("pyhost.postern ssh-ed25519 "))
        .unwrap()
        .trim()
        .to_owned();

    let dir = tempfile::tempdir().unwrap();
    let payload = random_bytes(1024 * 1024 + 17);
    std::fs::write(dir.path().join("up.bin"), &payload).unwrap();
    let proxy = format!(
        "env POSTERN_HOME={} {} proxy pyhost.postern",
        home.path().display(),
        env!("CARGO_BIN_EXE_postern")
    );
    let report = paramiko(
        dir.path(),
        serde_json::json!({
            "mode": "agent",
            "proxy": proxy,
            "login": login,
            "key": files.join("id_ed25519"),
            "cert": files.join("certs/pyhost.postern-cert.pub"),
            "host_key": host_key,
            "upload": dir.path().join("up.bin"),
            "remote": dir.path().join("remote.bin"),
            "download": dir.path().join("down.bin"),
        }),
    )
    .await;

    assert_eq!(report["host_key_matches"], true, "{report}");
    assert_eq!(report["plain_key_refused"], true, "{report}");
    assert_eq!(report["authenticated"], true, "{report}");
    assert_eq!(report["exec"]["out"], "out-from-device\n", "{report}");
    assert_eq!(report["exec"]["err"], "err-from-device\n", "{report}");
    assert_eq!(report["exec"]["status"], 7, "{report}");
    let shell = report["shell"]["out"].as_str().unwrap();
    assert!(shell.contains("TERM=xterm-256color"), "{shell}");
    assert!(shell.contains("30 100"), "{shell}");
    assert!(shell.contains("/dev/pts/"), "{shell}");
    assert_eq!(report["shell"]["status"], 5, "{report}");
    // Byte for byte, both ways.
    assert_eq!(
        std::fs::read(dir.path().join("remote.bin")).unwrap(),
        payload
    );
    assert_eq!(std::fs::read(dir.path().join("down.bin")).unwrap(), payload);
    assert_eq!(report["sftp_remote_size"], payload.len(), "{report}");
}

#[tokio::test]
async fn the_gateway_answers_a_second_authentication_attempt_on_one_connection() {
    let server = TestServer::start().await;
    let revoked = approved_agent(&server, "revoked").await;
    let (status, body) = server
        .admin_post("/api/v1/agents/revoked/revoke", serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    revoked
        .wait_state("revoked", |s| {
            s.status == Some(postern_protocol::AgentStatus::Revoked)
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh_key");
    std::fs::write(&fresh, test_key(42).to_openssh(LineEnding::LF).unwrap()).unwrap();
    let report = paramiko(
        dir.path(),
        serde_json::json!({
            "mode": "gateway",
            "host": server.agent_addr().ip().to_string(),
            "port": server.agent_addr().port(),
            "revoked_key": revoked.dir.join(postern_agent::identity::SSH_KEY_FILE),
            "fresh_key": fresh,
        }),
    )
    .await;
    assert_eq!(report["revoked_key_refused"], true, "{report}");
    assert_eq!(report["authenticated"], true, "{report}");
}
