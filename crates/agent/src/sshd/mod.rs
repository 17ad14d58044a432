//! The agent's built-in SSH server. It runs on the byte stream of each channel the server
//! forwards for a session (`russh::server::run_stream`) — never on a listening socket. Its
//! host key is the agent's SSH key, registered at enrollment; it accepts nothing but user
//! certificates from the server's CA bound to this agent and to the session whose channel the
//! connection arrived on (see `auth`). A connection that has not logged in within
//! `LOGIN_GRACE` is closed, so a stalled handshake cannot hold a session's channel open. Every
//! program a session starts is ended with the session (see `reaper`).
//!
//! The russh handler only translates: it checks authentication, answers each channel request
//! in order (russh keeps one "wants reply" flag per channel, so answers cannot be deferred),
//! and starts the program; a task per channel (`channel`) carries the program's I/O.

mod account;
mod attach;
mod auth;
mod channel;
mod process;
mod reaper;
mod ring;
mod shells;
mod spawner;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_protocol::sever::Severable;
use postern_protocol::{AgentDid, SessionId};
use russh::keys::{Certificate, PrivateKey, PublicKey};
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Pty};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use account::Account;
use channel::Started;
use postern_protocol::shell::{RESUME_ENV, Resume, SHELL_ENV, ShellId};
use process::{Program, PtyRequest};
pub use reaper::{GROUPS_FILE, SessionProcesses};
pub use shells::{DEFAULT_GRACE, Feed, Owner, RING_BYTES, Shells};

/// How long a connection may take from its channel's opening to a successful login. It holds
/// one of the session's forwarded channels meanwhile (and so keeps the session from going
/// idle). OpenSSH gives 120 s; a Postern client has its certificate before it connects and
/// logs in within a round trip or two, so 30 s leaves a slow link room and no more.
pub const LOGIN_GRACE: Duration = Duration::from_secs(30);

/// The server's configuration, built once per approval and shared by every connection.
pub struct SshdConfig {
    russh: Arc<server::Config>,
    user_ca: PublicKey,
    did: AgentDid,
    /// Logins certificates may name: the agent's own user, then (as root) the allowed ones.
    logins: Vec<String>,
    processes: Arc<SessionProcesses>,
    /// `LOGIN_GRACE` unless a test shortens it.
    pub login_grace: Duration,
    /// The shells kept across lost links (none unless set: `Shells` with a grace).
    pub shells: Arc<Shells>,
}

impl SshdConfig {
    pub fn new(
        host_key: PrivateKey,
        user_ca: PublicKey,
        did: AgentDid,
        logins: Vec<String>,
        processes: Arc<SessionProcesses>,
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
            shells: Shells::new(Duration::ZERO, processes.clone()),
            processes,
            login_grace: LOGIN_GRACE,
        }
    }
}

/// How long a stopped session's connection may take to say goodbye before it is cut.
const GOODBYE: Duration = Duration::from_secs(1);

/// Serves one SSH connection for `session` on `stream` until the client leaves, `stop` fires,
/// or it has not logged in within the login grace. `log_in` is called when the client logs
/// in; what it returns is held until the connection ends (the agent counts logins with it).
pub async fn serve<S, L, G>(
    config: Arc<SshdConfig>,
    session: SessionId,
    stream: S,
    stop: CancellationToken,
    log_in: L,
) -> Result<(), russh::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    L: FnOnce() -> G,
{
    let (logged_in, mut login) = oneshot::channel();
    let handler = Connection {
        config: config.clone(),
        session,
        stop: stop.clone(),
        logged_in: Some(logged_in),
        account: None,
        key_id: String::new(),
        channels: HashMap::new(),
    };
    // russh serves the connection on a task of its own and answers a disconnect request
    // only between key exchanges: cutting the stream is what surely ends it.
    let cut = CancellationToken::new();
    let stream = Severable::new(stream, cut.clone());
    let _cut_when_done = cut.clone().drop_guard();
    let grace = tokio::time::sleep(config.login_grace);
    tokio::pin!(grace);
    // The identification exchange happens here: a client that never sends its banner is
    // dropped at the deadline like any other.
    let running = tokio::select! {
        running = server::run_stream(config.russh.clone(), stream, handler) => running?,
        _ = &mut grace => {
            late();
            return Ok(());
        }
        _ = stop.cancelled() => return Ok(()),
    };
    let handle = running.handle();
    tokio::pin!(running);
    let mut log_in = Some(log_in);
    // Held until this returns: the connection counts as logged in until it ends.
    let mut _logged_in = None;
    loop {
        tokio::select! {
            ended = &mut running => return ended,
            _ = stop.cancelled() => break,
            _ = &mut grace, if log_in.is_some() => {
                late();
                return Ok(());
            }
            done = &mut login, if log_in.is_some() => {
                // An error means the handler is gone: the connection is ending anyway.
                if done.is_err() {
                    return running.await;
                }
                _logged_in = log_in.take().map(|log_in| log_in());
            }
        }
    }
    let _ = handle
        .disconnect(
            russh::Disconnect::ByApplication,
            "session stopped".into(),
            "en".into(),
        )
        .await;
    let _ = tokio::time::timeout(GOODBYE, running).await;
    Ok(())
}

fn late() {
    tracing::info!("closed a connection that did not log in within the grace period");
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
    /// A kept shell to start under this name (`POSTERN_SHELL`)…
    keep: Option<ShellId>,
    /// …or to re-attach to (`POSTERN_RESUME`).
    resume: Option<Resume>,
    /// Hands the started program to the channel's task; taken when it starts.
    start: Option<oneshot::Sender<Started>>,
}

struct Connection {
    config: Arc<SshdConfig>,
    /// The session whose forwarded channel carries this connection.
    session: SessionId,
    stop: CancellationToken,
    /// Tells `serve` that the login grace no longer applies.
    logged_in: Option<oneshot::Sender<()>>,
    account: Option<Account>,
    /// The accepted certificate's key id: with the login, who owns the shells it keeps.
    key_id: String,
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
    async fn start(&mut self, channel: ChannelId, program: Program) -> bool {
        let (Some(account), Some(setup)) = (&self.account, self.channels.get_mut(&channel)) else {
            return false;
        };
        let Some(start) = setup.start.take() else {
            return false; // a program runs on this channel already
        };
        let owner = Owner {
            login: account.name.clone(),
            key_id: self.key_id.clone(),
        };
        let shells = self.config.shells.clone();
        if program == Program::Shell
            && let Some(resume) = setup.resume.take()
        {
            let started = match shells.find(&self.session, &resume, &owner) {
                Ok(kept) => Started::Kept(kept, resume.offset),
                Err(end) => {
                    tracing::info!(session = %self.session, shell = %resume.shell, %end, "no shell to re-attach to");
                    Started::Gone(end)
                }
            };
            return start.send(started).is_ok();
        }
        let keep = setup
            .keep
            .take()
            .filter(|_| program == Program::Shell && setup.pty.is_some() && shells.enabled());
        let (account, pty, env) = (account.clone(), setup.pty.clone(), setup.env.clone());
        let what = program.clone();
        let spawned = spawner::on_spawner(move || {
            process::spawn(&account, &what, pty.as_ref(), &env).map(|p| (p, account.name))
        })
        .await;
        let (process, login) = match spawned {
            Ok(spawned) => spawned,
            Err(error) => {
                tracing::warn!(%error, ?program, "could not start");
                return false;
            }
        };
        let group = process.group;
        let processes = &self.config.processes;
        processes.add(&self.session, group);
        // `stop` fires before the session's groups are ended: a group recorded after that
        // is ended here.
        if self.stop.is_cancelled() {
            processes.end_group(&self.session, group).await;
            return false;
        }
        tracing::info!(%login, ?program, session = %self.session, kept = ?keep, "started");
        let started = match keep {
            Some(id) => match shells.keep(&self.session, id, owner, process) {
                Ok(kept) => Started::Kept(kept, 0),
                Err(process) => {
                    // The name is taken: a client's bug, not a reason to run the shell twice.
                    tracing::warn!(session = %self.session, "a kept shell of that name exists");
                    processes.end_group(&self.session, process.group).await;
                    return false;
                }
            },
            None => Started::Process(Box::new(process)),
        };
        start.send(started).is_ok()
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
        let presented = auth::Presented {
            did: config.did.as_str(),
            session: self.session.as_str(),
        };
        if let Err(refusal) =
            auth::check_certificate(cert, user, &config.user_ca, &presented, now_secs())
        {
            tracing::warn!(%user, key_id = cert.key_id(), %refusal, "refused a certificate");
            return Ok(Auth::reject());
        }
        match Account::resolve(user, &config.logins) {
            Ok(account) => {
                tracing::info!(%user, key_id = cert.key_id(), "certificate accepted");
                self.account = Some(account);
                self.key_id = cert.key_id().to_owned();
                if let Some(logged_in) = self.logged_in.take() {
                    let _ = logged_in.send(());
                }
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
            // Postern's own: they ask for a kept shell; they never reach the shell.
            Some(setup) if name == SHELL_ENV && self.config.shells.enabled() => {
                setup.keep = ShellId::parse(value);
                setup.keep.is_some()
            }
            Some(setup) if name == RESUME_ENV => {
                setup.resume = Resume::parse(value);
                setup.resume.is_some()
            }
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
        let ok = self.start(channel, Program::Shell).await;
        Self::reply(session, channel, ok)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match String::from_utf8(data.to_vec()) {
            Ok(command) => self.start(channel, Program::Exec(command)).await,
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
            ("sftp", Some(path)) => self.start(channel, Program::Subsystem(path)).await,
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
