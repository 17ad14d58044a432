//! The test's SSH server: the agent's `sshd::serve` on a loopback listener, the keys,
//! certificates and files OpenSSH needs to reach it, and running `ssh` against it.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use postern_agent::facts;
use postern_agent::sshd::{SessionProcesses, SshdConfig, serve};
use postern_protocol::session::{CERT_AGENT_EXTENSION, CERT_SESSION_EXTENSION};
use postern_protocol::{AgentDid, SessionId};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

/// A built-in SSH server on a loopback port, and the files OpenSSH needs to reach it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub host_key: PrivateKey,
    pub ca: PrivateKey,
    pub login: String,
    /// The DID of the agent this server belongs to.
    pub did: String,
    /// The session every connection to this server arrives for.
    pub session: SessionId,
    /// Connections logged in now, as the agent counts them (the `log_in` hook of `serve`).
    pub logged_in: tokio::sync::watch::Receiver<usize>,
    pub _stop: tokio_util::sync::DropGuard,
}

/// One connection counted as logged in until dropped.
pub struct Counted(pub Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

pub const SESSION: &str = "0123456789abcdef0123456789abcdef";

impl Fixture {
    pub async fn start(extra_logins: &[String]) -> Self {
        Self::start_with(extra_logins, |_| {}).await
    }

    pub async fn start_with(extra_logins: &[String], tweak: impl FnOnce(&mut SshdConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (host_key, ca) = (key(1), key(2));
        let did = AgentDid::from_public_key(&[7; 32]);
        let logins = facts::logins(extra_logins);
        let session = SessionId::parse(SESSION).unwrap();
        let mut config = SshdConfig::new(
            host_key.clone(),
            ca.public_key().clone(),
            did.clone(),
            logins.clone(),
            Arc::new(SessionProcesses::new(dir.path())),
        );
        tweak(&mut config);
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let id = session.clone();
        let (count, logged_in) = tokio::sync::watch::channel(0);
        let count = Arc::new(count);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let count = count.clone();
                let log_in = move || {
                    count.send_modify(|n| *n += 1);
                    Counted(count)
                };
                tokio::spawn(serve(
                    config.clone(),
                    id.clone(),
                    tcp,
                    token.clone(),
                    log_in,
                ));
            }
        });
        let fixture = Self {
            dir,
            port,
            host_key,
            ca,
            login: logins[0].clone(),
            did: did.as_str().to_owned(),
            session,
            logged_in,
            _stop: stop.drop_guard(),
        };
        write_key(&fixture.path("ca"), &fixture.ca);
        write_key(&fixture.path("other_ca"), &key(3));
        write_key(&fixture.path("user"), &key(4));
        std::fs::write(
            fixture.path("known_hosts"),
            format!(
                "[127.0.0.1]:{port} {}\n",
                fixture.host_key.public_key().to_openssh().unwrap()
            ),
        )
        .unwrap();
        fixture
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Signs the user key with `ssh-keygen -s`, as an OpenSSH CA would, for this session.
    pub async fn certify(
        &self,
        ca: &str,
        principal: &str,
        validity: &str,
        agent: Option<&str>,
    ) -> PathBuf {
        self.certify_for(ca, principal, validity, agent, Some(self.session.as_str()))
            .await
    }

    pub async fn certify_for(
        &self,
        ca: &str,
        principal: &str,
        validity: &str,
        agent: Option<&str>,
        session: Option<&str>,
    ) -> PathBuf {
        let user = self.path("user");
        let cert = self.path("user-cert.pub");
        let _ = std::fs::remove_file(&cert);
        let mut cmd = tokio::process::Command::new("ssh-keygen");
        cmd.arg("-q")
            .arg("-s")
            .arg(self.path(ca))
            .args(["-I", "test", "-n", principal, "-V", validity]);
        if let Some(did) = agent {
            cmd.arg("-O")
                .arg(format!("extension:{CERT_AGENT_EXTENSION}={did}"));
        }
        if let Some(session) = session {
            cmd.arg("-O")
                .arg(format!("extension:{CERT_SESSION_EXTENSION}={session}"));
        }
        cmd.arg(user.with_extension("pub"));
        let out = cmd.output().await.unwrap();
        assert!(
            out.status.success(),
            "ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cert
    }

    pub fn ssh(
        &self,
        cert: Option<&Path>,
        extra: &[&str],
        remote: &str,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(["-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!(
            "UserKnownHostsFile={}",
            self.path("known_hosts").display()
        ))
        .arg("-i")
        .arg(self.path("user"))
        .args(["-p", &self.port.to_string(), "-l", &self.login]);
        if let Some(cert) = cert {
            cmd.arg("-o")
                .arg(format!("CertificateFile={}", cert.display()));
        }
        cmd.args(extra)
            .arg("127.0.0.1")
            .arg(remote)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
}

pub fn write_key(path: &Path, key: &PrivateKey) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, key.to_openssh(LineEnding::LF).unwrap()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        path.with_extension("pub"),
        format!("{}\n", key.public_key().to_openssh().unwrap()),
    )
    .unwrap();
}

pub async fn output(mut cmd: tokio::process::Command) -> Output {
    tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("ssh timed out")
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
