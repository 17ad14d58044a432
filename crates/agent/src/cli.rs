//! The agent's command line, shared by `postern agent` and the agent-only `postern-agent`
//! binary (which leaves out the server, the store, the web app and the user commands).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::{Agent, AgentError, AgentOptions};

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The server's agent gateway, HOST:PORT or [IPV6]:PORT (the gateway listens on port 2200
    /// unless configured otherwise).
    #[arg(long, env = "POSTERN_SERVER", value_parser = parse_server)]
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
    /// Heartbeat interval, 1s to 10m.
    #[arg(long, env = "POSTERN_SYNC_RATE", default_value = "10s", value_parser = parse_sync_rate)]
    pub sync_rate: Duration,
    /// SSH keepalive interval on the link, 1s to 1h, for a server that is up but not
    /// answering (a dead network is noticed within 45 s of an unacknowledged heartbeat anyway).
    #[arg(long, env = "POSTERN_AGENT_KEEPALIVE", default_value = "60s", value_parser = parse_keepalive)]
    pub keepalive: Duration,
    /// Serve sessions with this SSH server (e.g. 127.0.0.1:22) instead of the built-in one.
    #[arg(long, env = "POSTERN_LOCAL_SSH", value_parser = parse_local_ssh)]
    pub local_ssh: Option<SocketAddr>,
    /// Logins besides the agent's own user that sessions may use (only when running as root).
    #[arg(long, env = "POSTERN_ALLOW_LOGINS", value_delimiter = ',')]
    pub allow_logins: Vec<String>,
}

/// Heartbeats more often than every second cost the server CPU for every agent and tell it
/// nothing more; rarer than every 10 minutes, a hung agent shows as up for far too long.
const SYNC_RATE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(600));
/// Keepalives: the same floor; an hour is already longer than any NAT keeps a quiet flow.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));

fn duration_in(text: &str, (min, max): (Duration, Duration)) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 10s, 2m)"))?;
    if d < min || d > max {
        return Err(format!(
            "must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

fn parse_sync_rate(text: &str) -> Result<Duration, String> {
    duration_in(text, SYNC_RATE)
}

fn parse_keepalive(text: &str) -> Result<Duration, String> {
    duration_in(text, KEEPALIVE)
}

fn parse_local_ssh(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:22".to_owned())?;
    if addr.port() == 0 {
        return Err("port 0 is not a port to connect to".into());
    }
    Ok(addr)
}

/// Checks the gateway address: HOST:PORT or [IPV6]:PORT, with a port. There is no default
/// port: the gateway's is configurable, and an agent dialling the wrong one would retry
/// forever; the message names the usual one.
pub fn parse_server(text: &str) -> Result<String, String> {
    let hint = "give the server's agent gateway as HOST:PORT, e.g. postern.example.com:2200 \
                (port 2200 unless the server was configured otherwise)";
    if text.contains("://") {
        return Err(format!("not a URL: {hint}"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("no port: {hint}"));
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        None if host.contains(':') => {
            return Err(format!(
                "put an IPv6 address in brackets, e.g. [::1]:2200: {hint}"
            ));
        }
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        }
    };
    if !host_ok {
        return Err(format!("not a host name or address: {hint}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(text.to_owned()),
        _ => Err(format!("not a port number: {hint}")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_need_a_host_and_a_port() {
        for ok in [
            "localhost:2200",
            "10.0.0.1:1",
            "[::1]:2200",
            "a-b.example_x.org:65535",
        ] {
            assert_eq!(parse_server(ok).as_deref(), Ok(ok));
        }
        for (bad, why) in [
            ("localhost", "no port"),
            ("", "no port"),
            ("::1", "brackets"),
            ("::1:2200", "brackets"),
            ("[::1:2200", "not a host"),
            ("[nope]:2200", "not a host"),
            (":2200", "not a host"),
            ("bad host:2200", "not a host"),
            ("localhost:0", "not a port"),
            ("localhost:70000", "not a port"),
            ("localhost:ssh", "not a port"),
            ("ssh://localhost:2200", "not a URL"),
        ] {
            let err = parse_server(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains("HOST:PORT"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn durations_outside_their_range_are_refused() {
        assert_eq!(parse_sync_rate("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_keepalive("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["0s", "500ms", "11m"] {
            assert!(
                parse_sync_rate(bad)
                    .unwrap_err()
                    .contains("between 1s and 10m")
            );
        }
        assert!(
            parse_keepalive("0s")
                .unwrap_err()
                .contains("between 1s and 1h")
        );
        assert!(parse_keepalive("soon").is_err());
    }
}
