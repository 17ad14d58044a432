//! The SSH client of `postern ssh`: end to end with the agent's SSH server over the data path,
//! with an ephemeral key and a fresh certificate, checking the agent's registered host key.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use russh::client::{self, Msg};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{Certificate, PrivateKey, PublicKey, PublicKeyOrCertificate};
use russh::{Channel, ChannelMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::session::{DataPath, PathEnd, PathEnded};

/// Accepts exactly the host key the server registered for the agent: no prompt, no TOFU.
pub struct KnownHost {
    expected: PublicKey,
}

impl client::Handler for KnownHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.key_data() == self.expected.key_data()
            }
            PublicKeyOrCertificate::Certificate(_) => false,
        })
    }
}

/// A key that lives only as long as this process.
pub fn ephemeral_key() -> Result<PrivateKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("no randomness for a key: {e}"))?;
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}

/// SSH keepalives of a watched connection (an interactive shell that re-attaches): one after
/// `KEEPALIVE.0` without a word from the agent, and the connection is given up when
/// `KEEPALIVE.1` in a row go unanswered — a silent cut (the user's network, a dead node) is
/// noticed within about 20 s, and the shell re-attached once the path is back, instead of
/// waiting on a dead TCP connection for TCP's own timeout (many minutes). Any answer resets the
/// count, so a busy agent or a slow link does not trip it: it answers within a round trip.
pub const KEEPALIVE: (std::time::Duration, usize) = (std::time::Duration::from_secs(5), 3);

pub struct Connection {
    handle: client::Handle<KnownHost>,
    path: PathEnded,
}

impl Connection {
    pub fn handle(&self) -> &client::Handle<KnownHost> {
        &self.handle
    }

    /// How the data path under this connection ended, once it has.
    pub fn path_end(&self) -> Option<PathEnd> {
        self.path.get()
    }

    pub async fn establish(
        path: DataPath,
        host_key: &str,
        login: &str,
        key: PrivateKey,
        certificate: &str,
        watched: bool,
    ) -> Result<Self> {
        let expected = PublicKey::from_openssh(host_key.trim())
            .context("the server's record of the agent's host key is unreadable")?;
        let certificate = Certificate::from_openssh(certificate.trim())
            .context("the server sent an unreadable certificate")?;
        let config = client::Config {
            preferred: postern_agent::ssh_preferred(),
            window_size: 8 * 1024 * 1024,
            maximum_packet_size: 65535,
            inactivity_timeout: None,
            keepalive_interval: watched.then_some(KEEPALIVE.0),
            keepalive_max: KEEPALIVE.1,
            ..Default::default()
        };
        let DataPath { stream, ended } = path;
        let mut handle = client::connect_stream(Arc::new(config), stream, KnownHost { expected })
            .await
            .map_err(|e| match e {
                russh::Error::UnknownKey => {
                    anyhow!(
                        "the device's host key does not match the one registered for this agent"
                    )
                }
                other => anyhow!("SSH handshake with the device failed: {other}"),
            })?;
        let auth = handle
            .authenticate_openssh_cert(login, Arc::new(key), certificate)
            .await
            .map_err(|e| anyhow!("SSH authentication failed: {e}"))?;
        if !auth.success() {
            bail!("the device refused the certificate for login {login:?}");
        }
        Ok(Self {
            handle,
            path: ended,
        })
    }

    /// Runs `command` (or a login shell), wires it to this terminal or these pipes, and
    /// returns the remote exit status; `None` when the connection closed without one.
    pub async fn run(&self, command: Option<String>) -> Result<Option<u32>> {
        let channel = self.handle.channel_open_session().await?;
        // Like OpenSSH: a terminal for an interactive shell, plain pipes for a command.
        let interactive =
            command.is_none() && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let _raw = if interactive {
            let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
            let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
            channel
                .request_pty(true, &term, u32::from(cols), u32::from(rows), 0, 0, &[])
                .await?;
            Some(RawMode::enable()?)
        } else {
            None
        };
        for (name, value) in std::env::vars() {
            if name == "LANG" || name.starts_with("LC_") {
                let _ = channel.set_env(false, name, value).await;
            }
        }
        match command {
            Some(cmd) => channel.exec(true, cmd).await?,
            None => channel.request_shell(true).await?,
        }
        pump(channel, interactive).await
    }
}

/// Restores the terminal when dropped, however `run` ends.
pub struct RawMode;

impl RawMode {
    pub fn enable() -> Result<Self> {
        crossterm::terminal::enable_raw_mode().context("cannot switch the terminal to raw mode")?;
        Ok(Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

async fn pump(channel: Channel<Msg>, interactive: bool) -> Result<Option<u32>> {
    let (mut read, write) = channel.split();
    let write = Arc::new(write);
    let input = {
        let write = write.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut sink = write.make_writer();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        let _ = sink.flush().await;
                    }
                }
            }
            let _ = write.eof().await;
        })
    };
    let resize = interactive.then(|| {
        let write = write.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Ok((cols, rows)) = crossterm::terminal::size() {
                    let _ = write
                        .window_change(u32::from(cols), u32::from(rows), 0, 0)
                        .await;
                }
            }
        })
    });

    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut status = None;
    while let Some(message) = read.wait().await {
        match message {
            ChannelMsg::Data { data } => {
                stdout.write_all(&data).await?;
                stdout.flush().await?;
            }
            ChannelMsg::ExtendedData { data, .. } => {
                stderr.write_all(&data).await?;
                stderr.flush().await?;
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                status = Some(128 + signal_number(&signal_name));
            }
            ChannelMsg::Failure => bail!("the device refused to start the command"),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    input.abort();
    if let Some(task) = resize {
        task.abort();
    }
    Ok(status)
}

pub fn signal_number(signal: &russh::Sig) -> u32 {
    use russh::Sig;
    match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::USR1 => 10,
        _ => 1,
    }
}
