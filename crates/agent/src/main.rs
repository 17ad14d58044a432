//! `postern-agent`: the agent alone, for devices — no server, store, web app or user
//! commands. `postern agent` runs the same code.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use postern_agent::binary::AgentCli;
use postern_agent::cli;
use postern_agent::config::LogFormat;

fn main() -> ExitCode {
    let args = AgentCli::parse();
    let known = postern_settings::variables_of(&AgentCli::command());
    let config = match cli::config(&args.agent, known) {
        Ok(Some(config)) => config,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    cli::init_logging(config.log_format == LogFormat::Json, "info");
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
    match runtime.block_on(cli::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
