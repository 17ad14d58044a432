//! The Postern agent: runs on a device, dials out to the server (never listens), proves who
//! it is with its own keys, and keeps one SSH link up for as long as it runs.
//!
//! `Agent::start` loads (or creates) the identity and spawns the link supervisor; its state
//! (connected, status) is observable through a watch channel.

pub mod backoff;
pub mod binary;
pub mod cli;
pub mod config;
pub mod facts;
mod forwarding;
pub mod identity;
mod link;
mod link_end;
pub mod servers;
pub mod sshd;
pub mod state;
mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postern_protocol::{AgentDid, AgentStatus, EnrollmentToken};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::identity::{Identity, IdentityError};
use crate::state::AgentState;

/// `--version` of both binaries: the package version and the commit built (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("POSTERN_COMMIT"),
    ")"
);

/// Cipher preference for SSH connections whose both ends are Postern's (the link, and
/// `postern ssh` to an agent): AES-GCM first, which runs on the CPU's AES instructions and
/// moved twice the bytes of ChaCha20 in the benchmark (docs/PERFORMANCE.md).
pub fn ssh_preferred() -> russh::Preferred {
    russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(&[
            russh::cipher::AES_256_GCM,
            russh::cipher::CHACHA20_POLY1305,
        ]),
        ..russh::Preferred::DEFAULT
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(
        "this agent was revoked by the server; remove its data directory to enroll again as a new agent"
    )]
    Revoked,
    #[error("the agent task failed: {0}")]
    Task(String),
    #[error("invalid agent option: {0}")]
    Option(String),
    /// A setting that cannot work; the message names it, its flag and its variable.
    #[error("{0}")]
    Config(String),
    /// Unknown keys or variables, a bad value, a missing setting: named with its source.
    #[error(transparent)]
    Settings(#[from] postern_settings::SettingsError),
}

#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The server nodes' agent gateways, HOST:PORT each; every attempt tries them (and each
    /// name's addresses) in random order until one answers (`servers.rs`).
    pub servers: Vec<String>,
    pub data_dir: PathBuf,
    /// Name to ask for; the server uses the hostname when absent.
    pub name: Option<String>,
    /// Enrollment token that approves this agent on first enrollment; its server fingerprint,
    /// if any, is the only host key the first connection accepts.
    pub token: Option<EnrollmentToken>,
    /// Heartbeat interval.
    pub sync_rate: Duration,
    /// SSH keepalive interval when nothing comes from the server; the link is dropped after
    /// 3 unanswered keepalives. A dead network is found sooner: heartbeats the server does
    /// not acknowledge within 45 s end the connection.
    pub keepalive: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Serve sessions with the device's own SSH server at this address instead of the
    /// built-in one.
    pub local_ssh: Option<SocketAddr>,
    /// Logins besides the agent's own OS user that sessions may use (honoured as root).
    pub allowed_logins: Vec<String>,
    /// How long a connection to the built-in SSH server may take to log in
    /// (`sshd::LOGIN_GRACE`; shorter only in tests).
    pub login_grace: Duration,
    /// How long a Postern client's shell outlives its client, its connection and the link
    /// while nobody is attached (`sshd::DEFAULT_GRACE`); zero keeps none.
    pub shell_grace: Duration,
}

impl AgentOptions {
    pub fn new(server: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            servers: vec![server.into()],
            data_dir: data_dir.into(),
            name: None,
            token: None,
            sync_rate: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            local_ssh: None,
            allowed_logins: Vec::new(),
            login_grace: sshd::LOGIN_GRACE,
            shell_grace: sshd::DEFAULT_GRACE,
        }
    }

    /// Refuses what cannot work (a zero interval would panic the timers), for callers that
    /// build options without the command line, which checks tighter ranges.
    pub fn validate(&self) -> Result<(), AgentError> {
        let positive = [
            ("sync_rate", self.sync_rate),
            ("keepalive", self.keepalive),
            ("reconnect_min", self.reconnect_min),
            ("login_grace", self.login_grace),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(AgentError::Option(format!("{name} must be more than zero")));
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(AgentError::Option(
                "reconnect_max must not be less than reconnect_min".into(),
            ));
        }
        servers::ServerList::check(&self.servers).map_err(AgentError::Option)?;
        Ok(())
    }
}

/// What the agent knows about its link right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    pub connected: bool,
    pub status: Option<AgentStatus>,
    pub name: Option<String>,
    pub message: Option<String>,
    /// Why the last connection ended or could not be made (cleared once one succeeds).
    pub link_error: Option<String>,
}

struct Context {
    options: AgentOptions,
    identity: Identity,
    state: AgentState,
    /// The process groups of the sessions' programs, ended with their sessions.
    processes: Arc<sshd::SessionProcesses>,
    /// The shells kept across lost links, for their grace.
    shells: Arc<sshd::Shells>,
}

impl Context {
    fn facts(&self) -> postern_protocol::AgentFacts {
        facts::gather(&self.options.allowed_logins)
    }

    /// What serves session channels under this status: nothing until approved.
    fn session_target(
        &self,
        update: &postern_protocol::control::StatusUpdate,
    ) -> Option<forwarding::Target> {
        if update.status != AgentStatus::Approved {
            return None;
        }
        if let Some(addr) = self.options.local_ssh {
            return Some(forwarding::Target::Local(addr));
        }
        let ca = update.user_ca.as_deref()?;
        let user_ca = match russh::keys::PublicKey::from_openssh(ca) {
            Ok(key) => key,
            Err(error) => {
                tracing::error!(%error, "the server sent an unreadable user CA key");
                return None;
            }
        };
        let mut config = sshd::SshdConfig::new(
            self.identity.ssh_key.clone(),
            user_ca,
            self.identity.did.clone(),
            facts::logins(&self.options.allowed_logins),
            self.processes.clone(),
        );
        config.login_grace = self.options.login_grace;
        config.shells = self.shells.clone();
        Some(forwarding::Target::BuiltIn(Arc::new(config)))
    }
}

pub struct Agent {
    pub did: AgentDid,
    state: watch::Receiver<LinkState>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), AgentError>>,
}

impl Agent {
    /// Loads the identity (errors here are fatal and clear) and starts the link.
    pub fn start(options: AgentOptions) -> Result<Self, AgentError> {
        options.validate()?;
        let identity = Identity::load_or_create(&options.data_dir)?;
        let state_store = AgentState::new(&options.data_dir);
        if state_store
            .last_status()
            .is_some_and(|s| s.status == AgentStatus::Revoked)
        {
            return Err(AgentError::Revoked);
        }
        let did = identity.did.clone();
        tracing::info!(did = %did, servers = %options.servers.join(","), "agent starting");
        // Before any session starts: what the last run could not end (it was killed).
        let processes = Arc::new(sshd::SessionProcesses::new(&options.data_dir));
        let reaped = processes.reap_survivors();
        if reaped > 0 {
            tracing::warn!(
                groups = reaped,
                "ended sessions' processes left by the last run"
            );
        }
        let (tx, rx) = watch::channel(LinkState::default());
        let shutdown = CancellationToken::new();
        let shells = sshd::Shells::new(options.shell_grace, processes.clone());
        let ctx = Arc::new(Context {
            options,
            identity,
            state: state_store,
            processes,
            shells,
        });
        let task = tokio::spawn(link::supervise(ctx, tx, shutdown.clone()));
        Ok(Self {
            did,
            state: rx,
            shutdown,
            task,
        })
    }

    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Runs until the agent stops by itself (revocation).
    pub async fn wait(&mut self) -> Result<(), AgentError> {
        (&mut self.task)
            .await
            .map_err(|e| AgentError::Task(e.to_string()))?
    }

    pub async fn shutdown(self) -> Result<(), AgentError> {
        self.shutdown.cancel();
        self.task
            .await
            .map_err(|e| AgentError::Task(e.to_string()))?
    }
}
