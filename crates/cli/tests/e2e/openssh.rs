//! Real shells through Postern: `postern ssh`, and the stock OpenSSH client (`ssh`, `scp -O`)
//! through `postern ssh-config` and `postern proxy`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{DEADLINE, TestServer, approved_agent, cli_home, postern, run_cli};

/// A logged-in POSTERN_HOME with the OpenSSH config written into it.
pub struct OpenSsh {
    pub home: tempfile::TempDir,
    pub config: PathBuf,
}

impl OpenSsh {
    pub async fn new(server: &TestServer) -> Self {
        let home = cli_home(server, "admin", &server.admin_password).await;
        let (ok, out, err) = run_cli(home.path(), &["ssh-config"], None).await;
        assert!(ok, "{err}");
        assert!(out.contains("ProxyCommand"), "{out}");
        let config = home.path().join("ssh_config");
        std::fs::write(&config, out).unwrap();
        Self { home, config }
    }

    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.env("POSTERN_HOME", self.home.path())
            .arg("-F")
            .arg(&self.config)
            .args(["-o", "BatchMode=yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    pub async fn ssh(
        &self,
        host: &str,
        remote: &str,
        input: Option<Vec<u8>>,
    ) -> (i32, Vec<u8>, String) {
        let mut cmd = self.command("ssh");
        cmd.arg(host).arg(remote);
        run(cmd, input).await
    }
}

pub async fn run(
    mut cmd: tokio::process::Command,
    input: Option<Vec<u8>>,
) -> (i32, Vec<u8>, String) {
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().unwrap();
        tokio::spawn(async move {
            stdin.write_all(&bytes).await.unwrap();
        });
    }
    let out = tokio::time::timeout(DEADLINE * 3, child.wait_with_output())
        .await
        .expect("command timed out")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).unwrap();
    v
}

#[tokio::test]
async fn stock_ssh_runs_commands_moves_binary_data_and_scp_works() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "pi").await;
    let ssh = OpenSsh::new(&server).await;

    let (code, out, err) = ssh
        .ssh(
            "pi.postern",
            "echo hello-from-device; echo oops >&2; exit 7",
            None,
        )
        .await;
    assert_eq!(code, 7, "{err}");
    assert_eq!(out, b"hello-from-device\n");
    assert!(err.contains("oops"), "{err}");

    let data = random_bytes(10 * 1024 * 1024);
    let (code, out, err) = ssh.ssh("pi.postern", "cat", Some(data.clone())).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out == data,
        "10 MiB came back different ({} bytes)",
        out.len()
    );

    // scp -O both ways.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("up.bin");
    let payload = random_bytes(1024 * 1024 + 17);
    std::fs::write(&local, &payload).unwrap();
    let remote_path = dir.path().join("remote-copy.bin");
    let mut up = ssh.command("scp");
    up.arg("-O")
        .arg(&local)
        .arg(format!("pi.postern:{}", remote_path.display()));
    let (code, _, err) = run(up, None).await;
    assert_eq!(code, 0, "scp upload: {err}");
    assert_eq!(std::fs::read(&remote_path).unwrap(), payload);
    let back = dir.path().join("down.bin");
    let mut down = ssh.command("scp");
    down.arg("-O")
        .arg(format!("pi.postern:{}", remote_path.display()))
        .arg(&back);
    let (code, _, err) = run(down, None).await;
    assert_eq!(code, 0, "scp download: {err}");
    assert_eq!(std::fs::read(&back).unwrap(), payload);

    // rsync -e ssh, and plain scp (which speaks SFTP).
    let synced = dir.path().join("synced.bin");
    let mut rsync = tokio::process::Command::new("rsync");
    rsync
        .env("POSTERN_HOME", ssh.home.path())
        .arg("-e")
        .arg(format!("ssh -F {} -o BatchMode=yes", ssh.config.display()))
        .arg(&local)
        .arg(format!("pi.postern:{}", synced.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (code, _, err) = run(rsync, None).await;
    assert_eq!(code, 0, "rsync: {err}");
    assert_eq!(std::fs::read(&synced).unwrap(), payload);
    let sftp_copy = dir.path().join("sftp.bin");
    let mut sftp = ssh.command("scp");
    sftp.arg(format!("pi.postern:{}", remote_path.display()))
        .arg(&sftp_copy);
    let (code, _, err) = run(sftp, None).await;
    assert_eq!(code, 0, "scp over SFTP: {err}");
    assert_eq!(std::fs::read(&sftp_copy).unwrap(), payload);
}

/// Runs `program args` on a real PTY of `rows`×`cols`; returns the PTY and the child.
fn on_pty(
    program: &str,
    args: &[&str],
    home: &Path,
    rows: u16,
    cols: u16,
) -> (pty_process::Pty, tokio::process::Child) {
    let (pty, pts) = pty_process::open().unwrap();
    pty.resize(pty_process::Size::new(rows, cols)).unwrap();
    let child = pty_process::Command::new(program)
        .args(args)
        .env("POSTERN_HOME", home)
        .env("TERM", "xterm-256color")
        .kill_on_drop(true)
        .spawn(pts)
        .unwrap();
    (pty, child)
}

/// Reads the PTY until `needle` shows up; returns everything read.
async fn read_until(pty: &mut pty_process::Pty, needle: &str, seen: &mut String) {
    let found = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = pty.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        true
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "never saw {needle:?} in {seen:?}"
    );
}

async fn check_terminal(mut pty: pty_process::Pty, mut child: tokio::process::Child) {
    let mut seen = String::new();
    pty.write_all(b"echo TERM=$TERM; stty size\n")
        .await
        .unwrap();
    read_until(&mut pty, "TERM=xterm-256color", &mut seen).await;
    read_until(&mut pty, "30 100", &mut seen).await;
    // The local terminal is resized: the remote one follows.
    pty.resize(pty_process::Size::new(40, 120)).unwrap();
    // Resizes travel as window-change messages; ask until the new size shows.
    let resized = tokio::time::timeout(DEADLINE, async {
        loop {
            pty.write_all(b"stty size\n").await.unwrap();
            let mut buf = [0u8; 4096];
            let n = pty.read(&mut buf).await.unwrap_or(0);
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("40 120") {
                return;
            }
        }
    })
    .await;
    assert!(resized.is_ok(), "resize never reached the device: {seen:?}");
    pty.write_all(b"exit 5\n").await.unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(5), "{seen:?}");
}

#[tokio::test]
async fn stock_ssh_with_a_pty_sees_term_and_resizes() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "tty").await;
    let ssh = OpenSsh::new(&server).await;
    let config = ssh.config.display().to_string();
    let (pty, child) = on_pty(
        "ssh",
        &["-F", &config, "-o", "BatchMode=yes", "-tt", "tty.postern"],
        ssh.home.path(),
        30,
        100,
    );
    check_terminal(pty, child).await;
}

#[tokio::test]
async fn postern_ssh_gives_an_interactive_terminal_that_follows_resizes() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "term").await;
    let home = cli_home(&server, "admin", &server.admin_password).await;
    let (pty, child) = on_pty(
        env!("CARGO_BIN_EXE_postern"),
        &["ssh", "-q", "term"],
        home.path(),
        30,
        100,
    );
    check_terminal(pty, child).await;
}

#[tokio::test]
async fn postern_ssh_runs_commands_binary_clean_and_reports_states() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "cmd").await;
    let home = cli_home(&server, "admin", &server.admin_password).await;

    let (ok, out, err) = run_cli(
        home.path(),
        &["ssh", "cmd", "--", "echo", "hi;", "exit", "3"],
        None,
    )
    .await;
    assert!(!ok);
    assert_eq!(out, "hi\n");
    for state in ["requested", "starting", "running"] {
        assert!(
            err.contains(&format!("session {state}")),
            "{state} missing from {err}"
        );
    }
    let mut cmd = postern();
    cmd.env("POSTERN_HOME", home.path())
        .args(["ssh", "-q", "cmd", "--", "cat"]);
    let data = random_bytes(10 * 1024 * 1024);
    let (code, out, err) = run(cmd, Some(data.clone())).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out == data,
        "10 MiB came back different ({} bytes)",
        out.len()
    );
    assert!(err.is_empty(), "-q prints nothing: {err}");

    let mut cmd = postern();
    cmd.env("POSTERN_HOME", home.path())
        .args(["ssh", "-q", "cmd", "--", "exit 42"]);
    let (code, _, _) = run(cmd, None).await;
    assert_eq!(code, 42);

    // The session is listed, and stopping it by agent name works.
    let (ok, out, _) = run_cli(home.path(), &["sessions"], None).await;
    assert!(
        ok && out.contains("cmd") && out.contains("running"),
        "{out}"
    );
    let (ok, out, err) = run_cli(home.path(), &["sessions", "stop", "cmd"], None).await;
    assert!(ok, "{err}");
    assert!(out.contains("stopped"), "{out}");
}

#[tokio::test]
async fn plain_keys_passwords_and_another_agents_certificate_are_refused_end_to_end() {
    let server = TestServer::start().await;
    let _a = approved_agent(&server, "alpha").await;
    let _b = approved_agent(&server, "beta").await;
    let ssh = OpenSsh::new(&server).await;
    // A working connection to alpha writes alpha's certificate.
    let (code, _, err) = ssh.ssh("alpha.postern", "true", None).await;
    assert_eq!(code, 0, "{err}");

    let home = ssh.home.path();
    let files = home.join("ssh");
    // Straight to beta's SSH server through the proxy, with chosen credentials only.
    let to_beta = |extra: &[String]| {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.env("POSTERN_HOME", home)
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .arg("-o")
            .arg(format!(
                "ProxyCommand={} proxy beta",
                env!("CARGO_BIN_EXE_postern")
            ))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                files.join("known_hosts").display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "HostKeyAlias=beta.postern",
            ])
            .args(extra)
            .args(["beta.postern", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    };
    let key = format!("IdentityFile={}", files.join("id_ed25519").display());
    let alpha_cert = format!(
        "CertificateFile={}",
        files.join("certs/alpha.postern-cert.pub").display()
    );

    let (code, _, err) = run(
        to_beta(&["-o".into(), key.clone(), "-o".into(), alpha_cert]),
        None,
    )
    .await;
    assert_eq!(
        code, 255,
        "another agent's certificate must be refused: {err}"
    );
    assert!(err.contains("Permission denied"), "{err}");

    let (code, _, err) = run(to_beta(&["-o".into(), key]), None).await;
    assert_eq!(code, 255, "a plain key must be refused: {err}");
    assert!(err.contains("Permission denied"), "{err}");

    let (code, _, err) = run(
        to_beta(&[
            "-o".into(),
            "PreferredAuthentications=password,keyboard-interactive".into(),
        ]),
        None,
    )
    .await;
    assert_eq!(code, 255, "passwords must be refused: {err}");
}

#[tokio::test]
async fn an_agent_with_local_ssh_hands_sessions_to_the_devices_own_server() {
    // Stands in for the device's sshd: whatever connects gets its banner.
    let sshd = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = sshd.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = sshd.accept().await {
            let _ = s.write_all(b"SSH-2.0-DeviceSshd\r\n").await;
        }
    });
    let server = TestServer::start().await;
    let token = server.create_token(600, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut options = crate::harness::TestAgent::options(&server, "legacy", &tmp.path().join("a"));
    options.token = Some(token.parse().unwrap());
    options.local_ssh = Some(addr);
    let agent = postern_agent::Agent::start(options).unwrap();
    crate::harness::wait_agent_state(&agent, "approved", crate::harness::approved).await;

    let admin = server.admin_token.clone();
    let (_, body) = server.start_session("legacy", &admin).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let port = server
        .wait_session(&id, &admin, postern_protocol::SessionState::Running)
        .await
        .port
        .unwrap();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut banner = vec![0u8; 20];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut banner))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&banner, b"SSH-2.0-DeviceSshd\r\n");
}
