//! The command line: every subcommand and flag; flags also read `POSTERN_*` variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use postern_agent::cli::AgentArgs;
use postern_protocol::api::Role;
use postern_server::ServerConfig;
use postern_settings::Flags;
pub use postern_settings::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "postern",
    version = postern_agent::VERSION,
    about = "A shell on your devices without exposing them to the internet."
)]
pub struct Cli {
    /// Log format, also POSTERN_LOG_FORMAT (the server and the agent take it after their
    /// command too, and in their config file).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Longest wait for the server to answer, or to send anything on a stream [default: 45s].
    #[arg(long, global = true, env = "POSTERN_TIMEOUT", value_parser = parse_wait)]
    pub timeout: Option<Duration>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: agent gateway, HTTP API, store.
    Server(Box<ServerArgs>),
    /// Run an agent on this device.
    Agent(AgentArgs),
    /// Administration that works on the store directly.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Log in to a server; later commands use this login.
    Login(LoginArgs),
    /// Forget the login (and end it on the server).
    Logout,
    /// List agents, or approve, reject or revoke one.
    Agents(AgentsArgs),
    /// Enrollment tokens that approve agents as they enroll.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Show the event log; --follow streams it live.
    Events(EventsArgs),
    /// Run a server and a local agent, approved, with an admin login: try Postern in one step.
    Quickstart(QuickstartArgs),
    /// A shell (or a command) on an agent, end to end over SSH.
    #[command(after_help = SSH_EXIT_STATUS)]
    Ssh(SshArgs),
    /// List your SSH sessions, or stop one.
    Sessions(SessionsArgs),
    /// ProxyCommand for OpenSSH: connects stdin/stdout to the agent's SSH server.
    Proxy {
        /// The agent, as NAME or NAME.postern.
        host: String,
    },
    /// Print (or --write) the OpenSSH config that makes `ssh AGENT.postern` work.
    SshConfig {
        /// Install it: write the block and include it from ~/.ssh/config.
        #[arg(long)]
        write: bool,
    },
    /// Refresh the certificate and known host for `ssh AGENT.postern` (run by the config).
    #[command(hide = true)]
    SshCert { host: String, login: String },
    /// Print shell completions, e.g. `postern completions bash > /etc/bash_completion.d/postern`.
    Completions {
        shell: clap_complete::Shell,
        /// The binary to complete.
        #[arg(long, value_enum, default_value = "postern")]
        binary: crate::commands::docs::Binary,
    },
    /// Write the man pages of postern and postern-agent into a directory (for packagers).
    #[command(hide = true)]
    Man {
        #[arg(long)]
        dir: PathBuf,
    },
}

/// `postern ssh --help`'s last words: what its exit status means (as OpenSSH's).
const SSH_EXIT_STATUS: &str = "Exit status: the remote command's (or shell's); 128+N when a \
signal N ended it; 255 when postern ssh itself failed — the session could not start, it ended \
before the command did (the reason is printed), or the connection to the server was lost while \
the command ran (its output may then be incomplete, and whether it finished is unknown). An \
interactive shell re-attaches by itself instead.";

#[derive(Args, Debug)]
pub struct SshArgs {
    /// Agent name, DID or unique prefix.
    pub agent: String,
    /// Login on the device [default: the agent's own user].
    #[arg(long, short = 'l')]
    pub login: Option<String>,
    /// Do not print the session's states.
    #[arg(long, short)]
    pub quiet: bool,
    /// Command to run instead of a shell.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SessionsArgs {
    #[command(subcommand)]
    pub action: Option<SessionAction>,
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum SessionAction {
    /// Stop a session, by id, or your open session on an agent.
    Stop { session: String },
}

/// The server's flags: one per setting of [`ServerConfig`], `--config` and `--print-config`.
pub type ServerArgs = Flags<ServerConfig>;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Add a user; the password is read from standard input.
    AddUser {
        /// The server's data directory, whose store gets the user (without --database).
        #[arg(long, env = "POSTERN_DATA_DIR", required_unless_present = "database")]
        data_dir: Option<PathBuf>,
        /// The server's database (postgres://… or sqlite:///…), as given to `postern server`.
        #[arg(long, env = "POSTERN_DATABASE", hide_env_values = true)]
        database: Option<String>,
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Create the data directory's store if it has none (else a mistyped path is refused).
        #[arg(long)]
        create: bool,
    },
}

/// 100 ms to 1 hour: zero would fail every request, more than an hour is a hang.
fn parse_wait(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err("the timeout must be between 100ms and 1h".into());
    }
    Ok(d)
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|e: postern_protocol::api::UnknownRole| e.to_string())
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Server URL, e.g. http://127.0.0.1:8080
    #[arg(long, env = "POSTERN_URL")]
    pub server: String,
    #[arg(long, env = "POSTERN_USER")]
    pub user: String,
    /// Read the password from standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// Trust the HTTPS server's certificate with this fingerprint (SHA256:…, as postern
    /// server prints it), for a self-signed server; pinned with the login.
    #[arg(long, env = "POSTERN_FINGERPRINT", conflicts_with = "ca_cert")]
    pub fingerprint: Option<String>,
    /// Trust certificates this CA (PEM file) issued for the server's name; kept with the login.
    #[arg(long, env = "POSTERN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub action: Option<AgentAction>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum AgentAction {
    /// Approve a pending or rejected agent (AGENT: name, DID, or a unique prefix).
    Approve { agent: String },
    /// Reject a pending agent.
    Reject { agent: String },
    /// Revoke an agent: its link closes now and it is refused from then on.
    Revoke { agent: String },
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Create an enrollment token.
    Create {
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[arg(long)]
        json: bool,
    },
    /// List enrollment tokens.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an enrollment token by id (or unique id prefix).
    Revoke { id: String },
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Keep streaming new events.
    #[arg(long, short)]
    pub follow: bool,
    /// How many recent events to show first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Where the server and the agent keep their data [default: ~/.local/share/postern/quickstart].
    #[arg(long, env = "POSTERN_QUICKSTART_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Agent gateway address (loopback: the quickstart agent is local).
    #[arg(long, default_value = "127.0.0.1:2200")]
    pub agent_listen: SocketAddr,
}
