//! `postern-bench`: Postern's benchmark harness. `run` measures every figure of the
//! performance issue against a hand-built OpenSSH reverse tunnel; `agents` is the load mode
//! that holds many idle agent links in one process. See crates/bench/README.md.

#![forbid(unsafe_code)]

mod across_nodes;
mod agents;
mod api;
mod baseline;
mod footprint;
mod latency;
mod load;
mod load_child;
mod login_burst;
mod machine;
mod nodes;
mod nodes_kill;
mod pg;
mod postern;
mod proc;
mod procfs;
mod report;
mod run;
mod sessions;
mod stats;
mod survive;
mod term;
mod throughput;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "postern-bench",
    version,
    about = "Postern's benchmark harness."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure the figures against the OpenSSH baseline; print a table and write JSON.
    #[command(args_override_self = true)]
    Run(run::RunArgs),
    /// Load mode: hold N idle agent links in this process against a server.
    Agents(load::LoadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postern-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => {
                // Ctrl-C or SIGTERM drops the run, and with it every child process group it started.
                tokio::select! {
                    result = run::run(args) => result,
                    _ = postern_agent::cli::stop_signal() => Err(anyhow::anyhow!("interrupted")),
                }
            }
            Command::Agents(args) => load::run(args).await.map(|()| true),
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("postern-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
