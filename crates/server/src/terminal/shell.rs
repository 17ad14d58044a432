//! The server as an SSH client of the agent, for the web terminal: over a session's data
//! path, with a key that never leaves this process and a certificate for the logged-in
//! user, accepting only the host key the agent registered at enrollment.

use std::sync::Arc;

use russh::Channel;
use russh::client::{self, Msg};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{Certificate, PrivateKey, PublicKey, PublicKeyOrCertificate};

use super::TerminalError;
use crate::sessions::TunnelStream;

/// Accepts exactly the registered host key: no prompt, no trust on first use.
pub struct RegisteredHost {
    expected: PublicKey,
}

impl client::Handler for RegisteredHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(
            matches!(offered, PublicKeyOrCertificate::PublicKey { key, .. }
            if key.key_data() == self.expected.key_data()),
        )
    }
}

/// A fresh Ed25519 key for one terminal.
pub fn ephemeral_key() -> Result<PrivateKey, TerminalError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| TerminalError::Ssh(format!("no randomness: {e}")))?;
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}

/// Logs in to the agent's SSH server over `stream` and starts a login shell on a PTY — a
/// shell the agent keeps, new or re-attached, as `keep` (an `env` request) asks.
pub async fn open(
    stream: TunnelStream,
    host_key: &str,
    login: &str,
    key: PrivateKey,
    certificate: Certificate,
    (cols, rows): (u16, u16),
    keep: (&str, String),
) -> Result<(client::Handle<RegisteredHost>, Channel<Msg>), TerminalError> {
    let ssh = |e: russh::Error| TerminalError::Ssh(e.to_string());
    let expected = PublicKey::from_openssh(host_key.trim()).map_err(|e| {
        TerminalError::Ssh(format!(
            "the agent's registered host key is unreadable: {e}"
        ))
    })?;
    let config = client::Config {
        inactivity_timeout: None,
        // As the agent's own clients: AES-GCM, on the CPU's AES instructions.
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(&[
                russh::cipher::AES_256_GCM,
                russh::cipher::CHACHA20_POLY1305,
            ]),
            ..russh::Preferred::DEFAULT
        },
        window_size: 2 * 1024 * 1024,
        ..Default::default()
    };
    let mut handle = client::connect_stream(Arc::new(config), stream, RegisteredHost { expected })
        .await
        .map_err(ssh)?;
    let auth = handle
        .authenticate_openssh_cert(login, Arc::new(key), certificate)
        .await
        .map_err(ssh)?;
    if !auth.success() {
        return Err(TerminalError::Ssh(format!(
            "the device refused the certificate for {login}"
        )));
    }
    let channel = handle.channel_open_session().await.map_err(ssh)?;
    channel
        .request_pty(
            true,
            "xterm-256color",
            u32::from(cols),
            u32::from(rows),
            0,
            0,
            &[],
        )
        .await
        .map_err(ssh)?;
    channel
        .set_env(false, "LANG", "C.UTF-8")
        .await
        .map_err(ssh)?;
    channel.set_env(false, keep.0, keep.1).await.map_err(ssh)?;
    channel.request_shell(true).await.map_err(ssh)?;
    Ok((handle, channel))
}
