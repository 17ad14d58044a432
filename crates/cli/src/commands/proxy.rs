//! `postern proxy HOST` (an OpenSSH ProxyCommand) and `postern ssh-cert HOST LOGIN` (run by
//! the generated config before each connection, to refresh the certificate and known host).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use postern_protocol::api::{CertificateRequest, CertificateResponse};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;

use crate::client::Client;
use crate::credentials;
use crate::session;
use crate::ssh_client::ephemeral_key;

pub const HOST_SUFFIX: &str = ".postern";

pub fn agent_of(host: &str) -> &str {
    host.strip_suffix(HOST_SUFFIX).unwrap_or(host)
}

/// Where the OpenSSH integration keeps its files.
pub struct SshFiles {
    pub dir: PathBuf,
}

impl SshFiles {
    pub fn new() -> Result<Self> {
        Ok(Self {
            dir: credentials::home()?.join("ssh"),
        })
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    pub fn certificate(&self, host: &str) -> PathBuf {
        self.dir.join("certs").join(format!("{host}-cert.pub"))
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    fn ensure_dirs(&self) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.dir.join("certs"))
            .with_context(|| format!("cannot create {}", self.dir.display()))
    }

    /// The key OpenSSH authenticates with; created once, kept private.
    pub fn load_or_create_key(&self) -> Result<PrivateKey> {
        self.ensure_dirs()?;
        let path = self.key();
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            return PrivateKey::from_openssh(text.trim())
                .with_context(|| format!("{} is not a valid key", path.display()));
        }
        let key = ephemeral_key()?;
        write_file(&path, key.to_openssh(LineEnding::LF)?.as_bytes(), 0o600)?;
        write_file(
            &path.with_extension("pub"),
            format!("{}\n", key.public_key().to_openssh()?).as_bytes(),
            0o644,
        )?;
        Ok(key)
    }

    /// Replaces the known-hosts line of `host` with the key the server registered.
    pub fn set_known_host(&self, host: &str, key: &str) -> Result<()> {
        self.ensure_dirs()?;
        let path = self.known_hosts();
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines: Vec<String> = old
            .lines()
            .filter(|l| l.split_whitespace().next() != Some(host))
            .map(str::to_owned)
            .collect();
        let key_only: Vec<&str> = key.split_whitespace().take(2).collect();
        lines.push(format!("{host} {}", key_only.join(" ")));
        write_file(&path, format!("{}\n", lines.join("\n")).as_bytes(), 0o600)
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Starts the session if needed and certifies the OpenSSH key for `login` on `host`.
pub async fn refresh(host: &str, login: &str) -> Result<()> {
    let outcome = async {
        let client = Client::logged_in()?;
        let files = SshFiles::new()?;
        let key = files.load_or_create_key()?;
        let session = session::open(&client, agent_of(host), true).await?;
        let cert: CertificateResponse = client
            .post(
                &format!("/api/v1/sessions/{}/certificate", session.id),
                &CertificateRequest {
                    public_key: key.public_key().to_openssh()?,
                    login: Some(login.to_owned()),
                },
            )
            .await?;
        write_file(
            &files.certificate(host),
            format!("{}\n", cert.certificate).as_bytes(),
            0o644,
        )?;
        files.set_known_host(host, &cert.host_key)
    }
    .await;
    // OpenSSH reads this command's status as "does the block apply": it must, so that the
    // ProxyCommand runs and reports the same problem in its own words.
    if let Err(e) = outcome {
        eprintln!("postern: {}", crate::output::error_text(&e));
    }
    Ok(())
}

/// Connects stdin/stdout to the agent's SSH server through the session's data path.
pub async fn proxy(host: &str) -> Result<()> {
    let client = Client::logged_in()?;
    let session = session::open(&client, agent_of(host), true).await?;
    let stream = session::data_path(&client, &session).await?.stream;
    let (from_device, mut to_device) = tokio::io::split(stream);
    // tokio's stdin and stdout go through its blocking pool, one round trip per read or
    // write: big buffers keep those few during bulk transfers (scp, rsync).
    const BUFFER: usize = 256 * 1024;
    let upload = async {
        let mut stdin = tokio::io::BufReader::with_capacity(BUFFER, tokio::io::stdin());
        let _ = tokio::io::copy_buf(&mut stdin, &mut to_device).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_device).await;
    };
    let download = async {
        let mut from_device = tokio::io::BufReader::with_capacity(BUFFER, from_device);
        let mut stdout = tokio::io::stdout();
        let _ = tokio::io::copy_buf(&mut from_device, &mut stdout).await;
        let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
    };
    // The device closing the connection ends the proxy, whatever stdin still holds;
    // the end of stdin only ends the upload.
    tokio::pin!(download);
    tokio::select! {
        _ = &mut download => {}
        _ = upload => download.await,
    }
    Ok(())
}
