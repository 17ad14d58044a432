//! The agent's command line, shared by `postern agent` and the agent-only `postern-agent`
//! binary (which leaves out the server, the store, the web app and the user commands).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::{Agent, AgentError, AgentOptions};

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The server's agent gateway, HOST:PORT.
    #[arg(long, env = "POSTERN_SERVER")]
    pub server: String,
    #[arg(long, env = "POSTERN_AGENT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Name to register as [default: the hostname].
    #[arg(long, env = "POSTERN_AGENT_NAME")]
    pub name: Option<String>,
    /// Enrollment token (approves this agent on first enrollment; its `@SHA256:…` part is the
    /// server's host key fingerprint, required on the first connection).
    #[arg(long, env = "POSTERN_TOKEN", hide_env_values = true)]
    pub token: Option<postern_protocol::EnrollmentToken>,
    /// Heartbeat interval.
    #[arg(long, env = "POSTERN_SYNC_RATE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub sync_rate: Duration,
    /// SSH keepalive interval on the link, for a server that is up but not answering (a
    /// dead network is noticed within 45 s of an unacknowledged heartbeat anyway).
    #[arg(long, env = "POSTERN_AGENT_KEEPALIVE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub keepalive: Duration,
    /// Serve sessions with this SSH server (e.g. 127.0.0.1:22) instead of the built-in one.
    #[arg(long, env = "POSTERN_LOCAL_SSH")]
    pub local_ssh: Option<SocketAddr>,
    /// Logins besides the agent's own user that sessions may use (only when running as root).
    #[arg(long, env = "POSTERN_ALLOW_LOGINS", value_delimiter = ',')]
    pub allow_logins: Vec<String>,
}

impl AgentArgs {
    pub fn options(self) -> AgentOptions {
        let mut options = AgentOptions::new(self.server, self.data_dir);
        options.name = self.name;
        options.token = self.token;
        options.sync_rate = self.sync_rate;
        options.keepalive = self.keepalive;
        options.local_ssh = self.local_ssh;
        options.allowed_logins = self.allow_logins;
        options
    }
}

/// Runs an agent until it is revoked (an error) or the process is told to stop.
pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
    let mut agent = Agent::start(args.options())?;
    println!("agent {}", agent.did);
    tokio::select! {
        result = agent.wait() => result,
        _ = stop_signal() => agent.shutdown().await,
    }
}

/// Resolves on Ctrl-C or SIGTERM: how every long-running command of either binary stops.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let ctrl_c = tokio::signal::ctrl_c();
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Logs to stderr, as text or JSON; `POSTERN_LOG` (an env-filter) overrides the level.
pub fn init_logging(json: bool, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("POSTERN_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},russh=warn,sqlx=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
