//! The agent's command line, shared by `postern agent` and the agent-only `postern-agent`
//! binary (which leaves out the server, the store, the web app and the user commands).

use postern_settings::Flags;

use crate::config::AgentConfig;
use crate::{Agent, AgentError};

/// The agent's flags: one per setting of [`AgentConfig`], `--config` and `--print-config`.
pub type AgentArgs = Flags<AgentConfig>;

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

/// The agent's configuration from its flags, file and variables; `None` once printed for
/// `--print-config`. `known_variables` are read by other commands of the binary.
pub fn config(
    args: &AgentArgs,
    known_variables: Vec<String>,
) -> Result<Option<AgentConfig>, AgentError> {
    let config = AgentConfig::load(&args.inputs(known_variables))?;
    if args.print_config {
        print!("{}", postern_settings::to_toml(&config)?);
        return Ok(None);
    }
    Ok(Some(config))
}

/// Runs an agent until it is revoked (an error) or the process is told to stop.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let mut agent = Agent::start(config.options())?;
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
}
