//! `postern server`

use anyhow::{Context, Result};
use postern_server::{Reload, Server, ServerConfig};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::args::ServerArgs;

/// The server's configuration from its flags, file and variables; `None` once printed for
/// `--print-config`. `known_variables` are read by other commands of the binary.
pub fn config(args: &ServerArgs, known_variables: Vec<String>) -> Result<Option<ServerConfig>> {
    let config = ServerConfig::load(&args.inputs(known_variables))?;
    if args.print_config {
        print!("{}", postern_settings::to_toml(&config)?);
        return Ok(None);
    }
    Ok(Some(config))
}

pub async fn run(config: ServerConfig) -> Result<()> {
    // Listening before the start is announced: from then on SIGHUP means reload, never the
    // default (ending the process).
    let hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let server = Server::start(config)
        .await
        .context("the server could not start")?;
    if let Some(password) = &server.initial_admin_password {
        println!("Created the first administrator. This password is shown only once:");
        println!("  user:     admin");
        println!("  password: {password}");
        println!();
    }
    println!("Postern server");
    println!("  HTTP API:      {}/api/v1", server.url());
    println!("  agent gateway: {}", server.agent_addr);
    println!("  host key:      {}", server.host_key_fingerprint);
    if let Some(fingerprint) = &server.tls_fingerprint {
        println!("  certificate:   {fingerprint}");
        println!(
            "                 (postern login --server {} --fingerprint {fingerprint}, for a self-signed one)",
            server.url()
        );
    }
    if let Some(addr) = server.metrics_addr {
        println!("  metrics:       http://{addr}/metrics");
    }
    serve_until_stopped(&server, hangups).await;
    tracing::info!("stopping");
    server.shutdown().await;
    Ok(())
}

/// Until Ctrl-C or SIGTERM: each SIGHUP reloads what can be reloaded, and says so once.
async fn serve_until_stopped(server: &Server, mut hangups: Signal) {
    let stop = super::stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            Some(()) = hangups.recv() => match server.reload() {
                Reload::CertificateFiles => {
                    tracing::info!("SIGHUP: reading the certificate files again");
                }
                Reload::Nothing => tracing::info!(
                    "SIGHUP: nothing to reload (no certificate files are configured); still serving"
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use postern_agent::config::AgentConfig;
    use postern_settings::Settings;

    use super::ServerConfig;
    use crate::args::{Cli, Command};

    /// The list every program accepts is exactly what the programs read: the `postern`
    /// binary's commands hold the server's and the agent's settings (the standalone agent's
    /// are the agent command's) and the CLI's flags.
    #[test]
    fn every_variable_of_every_program_is_listed() {
        let mut read = postern_settings::variables_of(&<Cli as clap::CommandFactory>::command());
        read.sort();
        read.dedup();
        let mut listed = postern_settings::PROGRAM_VARIABLES.to_vec();
        listed.sort();
        assert_eq!(
            listed, read,
            "postern_settings::PROGRAM_VARIABLES must list exactly these"
        );
        for spec in AgentConfig::SPECS {
            assert!(read.contains(&spec.variable(AgentConfig::ENV_PREFIX)));
        }
        assert!(read.iter().any(|v| v == AgentConfig::CONFIG_ENV));
    }

    /// clap itself turns `--flag VALUE` into the setting for every setting of both commands.
    #[test]
    fn every_setting_is_a_flag_of_its_command() {
        for (command, specs) in [
            ("server", ServerConfig::SPECS),
            ("agent", AgentConfig::SPECS),
        ] {
            for spec in specs {
                // `=`: yes/no settings are switches and take a value only so.
                let flag = format!("--{}=v", spec.flag());
                let cli = Cli::try_parse_from(["postern", command, &flag]).unwrap();
                let values = match cli.command {
                    Command::Server(args) => args.values,
                    Command::Agent(args) => args.values,
                    _ => unreachable!(),
                };
                assert_eq!(values, [(spec.key, vec!["v".to_owned()])], "{flag}");
            }
        }
    }
}
