//! The agent's built-in SSH server. It runs on the byte stream of each channel the server
//! forwards for a session (`russh::server::run_stream`) — never on a listening socket. Its
//! host key is the agent's SSH key, registered at enrollment; it accepts nothing but user
//! certificates from the server's CA bound to this agent (see `auth`).
//!
//! The russh handler only translates: it checks authentication, answers each channel request
//! in order (russh keeps one "wants reply" flag per channel, so answers cannot be deferred),
//! and starts the program; a task per channel (`channel`) carries the program's I/O.

mod account;
mod auth;
mod channel;
mod process;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_protocol::AgentDid;
use russh::keys::{Certificate, PrivateKey, PublicKey};
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Pty};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use account::Account;
use process::{Process, Program, PtyRequest};

/// The server's configuration, built once per approval and shared by every connection.
pub struct SshdConfig {
    russh: Arc<server::Config>,
    user_ca: PublicKey,
    did: AgentDid,
    /// Logins certificates may name: the agent's own user, then (as root) the allowed ones.
    logins: Vec<String>,
}

impl SshdConfig {
    pub fn new(
        host_key: PrivateKey,
        user_ca: PublicKey,
        did: AgentDid,
        logins: Vec<String>,
    ) -> Self {
        let russh = server::Config {
            server_id: russh::SshId::Standard(
                format!("SSH-2.0-postern_{}", env!("CARGO_PKG_VERSION")).into(),
            ),
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            keys: vec![host_key],
            // OpenSSH opens with a "none" probe; answering it at once saves a second.
            auth_rejection_time_initial: Some(Duration::ZERO),
            auth_rejection_time: Duration::from_millis(500),
            max_auth_attempts: 6,
            // The link below has its own keepalives; the server ends idle sessions.
            inactivity_timeout: None,
            keepalive_interval: None,
            // Only AES-GCM: OpenSSH clients take ChaCha20 whenever it is offered, and it moves
            // half the bytes here (docs/PERFORMANCE.md); every OpenSSH since 6.2 has AES-GCM.
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(&[russh::cipher::AES_256_GCM]),
                ..russh::Preferred::DEFAULT
            },
            window_size: 8 * 1024 * 1024,
            maximum_packet_size: 65535,
            channel_buffer_size: 64,
            nodelay: true,
            ..Default::default()
        };
        Self {
            russh: Arc::new(russh),
            user_ca,
            did,
            logins,
        }
    }
}

/// Serves one SSH connection on `stream` until the client leaves or `stop` fires.
pub async fn serve<S>(
    config: Arc<SshdConfig>,
    stream: S,
    stop: CancellationToken,
) -> Result<(), russh::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handler = Connection {
        config: config.clone(),
        account: None,
        channels: HashMap::new(),
    };
    let running = server::run_stream(config.russh.clone(), stream, handler).await?;
    let handle = running.handle();
    tokio::select! {
        ended = running => ended,
        _ = stop.cancelled() => {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "session stopped".into(), "en".into())
                .await;
            Ok(())
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A session channel before its program starts: what the client asked for so far.
#[derive(Default)]
struct Setup {
    pty: Option<PtyRequest>,
    env: Vec<(String, String)>,
    /// Hands the started program to the channel's task; taken when it starts.
    start: Option<oneshot::Sender<Process>>,
}

struct Connection {
    config: Arc<SshdConfig>,
    account: Option<Account>,
    channels: HashMap<ChannelId, Setup>,
}

impl Connection {
    fn reply(session: &mut Session, channel: ChannelId, ok: bool) -> Result<(), russh::Error> {
        if ok {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    /// Starts `program` on `channel` if it is a fresh session channel of a logged-in user.
    fn start(&mut self, channel: ChannelId, program: Program) -> bool {
        let (Some(account), Some(setup)) = (&self.account, self.channels.get_mut(&channel)) else {
            return false;
        };
        let Some(start) = setup.start.take() else {
            return false; // a program runs on this channel already
        };
        match process::spawn(account, &program, setup.pty.as_ref(), &setup.env) {
            Ok(process) => {
                tracing::info!(login = %account.name, ?program, pty = setup.pty.is_some(), "started");
                start.send(process).is_ok()
            }
            Err(error) => {
                tracing::warn!(%error, login = %account.name, ?program, "could not start");
                false
            }
        }
    }
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        tracing::warn!(%user, "refused a plain key: only certificates from the server's CA are accepted");
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let config = &self.config;
        if let Err(refusal) =
            auth::check_certificate(cert, user, &config.user_ca, config.did.as_str(), now_secs())
        {
            tracing::warn!(%user, key_id = cert.key_id(), %refusal, "refused a certificate");
            return Ok(Auth::reject());
        }
        match Account::resolve(user, &config.logins) {
            Ok(account) => {
                tracing::info!(%user, key_id = cert.key_id(), "certificate accepted");
                self.account = Some(account);
                Ok(Auth::Accept)
            }
            Err(error) => {
                tracing::warn!(%user, %error, "refused a login");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.account.is_none() {
            return Ok(()); // dropping the reply refuses the channel
        }
        let (start, started) = oneshot::channel();
        self.channels.insert(
            channel.id(),
            Setup {
                start: Some(start),
                ..Default::default()
            },
        );
        reply.accept().await;
        tokio::spawn(channel::run(channel, session.handle(), started));
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match self.channels.get_mut(&channel) {
            Some(setup) if setup.start.is_some() => {
                let size = |n: u32| u16::try_from(n).unwrap_or(u16::MAX).max(1);
                setup.pty = Some(PtyRequest {
                    term: term
                        .chars()
                        .filter(|c| c.is_ascii_graphic())
                        .take(64)
                        .collect(),
                    cols: if col_width == 0 { 80 } else { size(col_width) },
                    rows: if row_height == 0 {
                        24
                    } else {
                        size(row_height)
                    },
                });
                true
            }
            _ => false,
        };
        Self::reply(session, channel, ok)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match self.channels.get_mut(&channel) {
            Some(setup) if process::env_allowed(name) && setup.env.len() < 64 => {
                setup.env.push((name.to_owned(), value.to_owned()));
                true
            }
            _ => false,
        };
        Self::reply(session, channel, ok)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = self.start(channel, Program::Shell);
        Self::reply(session, channel, ok)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match String::from_utf8(data.to_vec()) {
            Ok(command) => self.start(channel, Program::Exec(command)),
            Err(_) => false,
        };
        Self::reply(session, channel, ok)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match (name, process::sftp_server()) {
            ("sftp", Some(path)) => self.start(channel, Program::Subsystem(path)),
            _ => false,
        };
        Self::reply(session, channel, ok)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Self::reply(session, channel, false)
    }

    // window-change and signal need no answer: the channel's task applies them.
}
