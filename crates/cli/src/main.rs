//! `postern`: the server, the agent and the user's command line in one binary.

#![forbid(unsafe_code)]

mod args;
mod client;
mod commands;
mod credentials;
mod output;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use args::{Cli, Command, LogFormat};

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_env("POSTERN_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},russh=warn,sqlx=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let log_format = cli.log_format;
    let long_running = |file_format: Option<&str>| {
        let format = log_format.unwrap_or(match file_format {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        });
        init_logging(format, "info");
    };
    match cli.command {
        Command::Server(args) => {
            let (config, file_format) = commands::server::config(&args)?;
            long_running(file_format.as_deref());
            commands::server::run(config).await
        }
        Command::Agent(args) => {
            long_running(None);
            commands::agent::run(args).await
        }
        Command::Quickstart(args) => {
            long_running(None);
            commands::quickstart::run(args).await
        }
        command => {
            init_logging(log_format.unwrap_or(LogFormat::Text), "warn");
            match command {
                Command::Admin(c) => commands::admin::run(c).await,
                Command::Login(a) => commands::login::login(a).await,
                Command::Logout => commands::login::logout().await,
                Command::Agents(a) => commands::agents::run(a).await,
                Command::Tokens(c) => commands::tokens::run(c).await,
                Command::Events(a) => commands::events::run(a).await,
                Command::Server(_) | Command::Agent(_) | Command::Quickstart(_) => Ok(()),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
