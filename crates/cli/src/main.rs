//! `postern`: the server, the agent and the user's command line in one binary.

#![forbid(unsafe_code)]

mod args;
mod client;
mod commands;
mod credentials;
mod output;
mod reattach;
mod session;
mod sse;
mod ssh_client;
mod tls;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use args::{Cli, Command, LogFormat};

fn init_logging(format: LogFormat, default_level: &str) {
    postern_agent::cli::init_logging(format == LogFormat::Json, default_level);
}

/// `POSTERN_*` variables some command of this binary reads: the server and the agent refuse
/// any other.
fn known_variables() -> Vec<String> {
    postern_settings::variables_of(&Cli::command())
}

/// `--log-format` given before the command, else POSTERN_LOG_FORMAT, for the commands
/// without settings (the server's and the agent's own settings read both).
fn log_format(flag: Option<LogFormat>) -> anyhow::Result<LogFormat> {
    use clap::ValueEnum;
    if let Some(format) = flag {
        return Ok(format);
    }
    match std::env::var("POSTERN_LOG_FORMAT") {
        Ok(text) => LogFormat::from_str(&text, true).map_err(|_| {
            anyhow::anyhow!("POSTERN_LOG_FORMAT: {text:?} is neither \"text\" nor \"json\"")
        }),
        Err(_) => Ok(LogFormat::Text),
    }
}

/// Runs the command; `Ok(code)` is the process's exit status (a remote command's, for ssh).
async fn run(cli: Cli) -> anyhow::Result<u8> {
    // Given before the command; the server and the agent take it as their flag.
    let log_format_flag = cli.log_format;
    if let Some(wait) = cli.timeout {
        client::set_wait(wait);
    }
    let as_flag = |format: LogFormat| match format {
        LogFormat::Text => "text".to_owned(),
        LogFormat::Json => "json".to_owned(),
    };
    match cli.command {
        Command::Server(mut args) => {
            if let Some(format) = log_format_flag {
                args.add_if_absent("log_format", as_flag(format));
            }
            let Some(config) = commands::server::config(&args, known_variables())? else {
                return Ok(0);
            };
            init_logging(config.log_format, "info");
            commands::server::run(config).await.map(|()| 0)
        }
        Command::Agent(mut args) => {
            if let Some(format) = log_format_flag {
                args.add_if_absent("log_format", as_flag(format));
            }
            let Some(config) = postern_agent::cli::config(&args, known_variables())? else {
                return Ok(0);
            };
            init_logging(config.log_format, "info");
            postern_agent::cli::run(config)
                .await
                .map(|()| 0)
                .map_err(Into::into)
        }
        Command::Quickstart(args) => {
            init_logging(log_format(log_format_flag)?, "info");
            commands::quickstart::run(args).await.map(|()| 0)
        }
        command => {
            init_logging(log_format(log_format_flag)?, "warn");
            let done = match command {
                Command::Ssh(a) => {
                    // Like OpenSSH: the remote command's status, or 255 for an error of ssh's own.
                    return Ok(match commands::ssh::run(a).await {
                        Ok(code) => code.min(255) as u8,
                        Err(e) => {
                            eprintln!("error: {}", output::error_text(&e));
                            255
                        }
                    });
                }
                Command::Admin(c) => commands::admin::run(c).await,
                Command::Login(a) => commands::login::login(a).await,
                Command::Logout => commands::login::logout().await,
                Command::Agents(a) => commands::agents::run(a).await,
                Command::Tokens(c) => commands::tokens::run(c).await,
                Command::Events(a) => commands::events::run(a).await,
                Command::Sessions(a) => commands::sessions::run(a).await,
                Command::Proxy { host } => commands::proxy::proxy(&host).await,
                Command::SshCert { host, login } => commands::proxy::refresh(&host, &login).await,
                Command::SshConfig { write } => commands::ssh_config::run(write).await,
                Command::Completions { shell, binary } => {
                    commands::docs::completions(shell, binary);
                    Ok(())
                }
                Command::Man { dir } => commands::docs::man_pages(&dir),
                Command::Server(_) | Command::Agent(_) | Command::Quickstart(_) => Ok(()),
            };
            done.map(|()| 0)
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors echo the argument: cut one that is huge. Help and version print as is.
        Err(e) if e.use_stderr() => {
            eprint!("{}", output::clip(&e.to_string()));
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // A blocking read of stdin (ssh, proxy) may still wait for input nobody will send:
    // do not wait for it on the way out.
    runtime.shutdown_background();
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", output::error_text(&e));
            ExitCode::FAILURE
        }
    }
}
