//! `postern-agent`: the agent alone, for devices — no server, store, web app or user
//! commands. `postern agent` runs the same code.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use postern_agent::binary::AgentCli;
use postern_agent::cli;

fn main() -> ExitCode {
    let args = AgentCli::parse();
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
