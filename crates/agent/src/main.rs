//! `postern-agent`: the agent alone, for devices — no server, store, web app or user
//! commands. `postern agent` runs the same code.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use postern_agent::cli::{self, AgentArgs};

#[derive(Parser, Debug)]
#[command(
    name = "postern-agent",
    version,
    about = "The Postern agent: dials out to the server and serves SSH sessions."
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, env = "POSTERN_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    #[command(flatten)]
    agent: AgentArgs,
}

fn main() -> ExitCode {
    let args = Cli::parse();
    cli::init_logging(args.log_format == "json", "info");
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
    match runtime.block_on(cli::run(args.agent)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
