//! The `postern-agent` binary's command line; in the library rather than in its `main.rs`
//! so that `postern man` and `postern completions` can document that binary too.

use clap::Parser;

use crate::cli::AgentArgs;

#[derive(Parser, Debug)]
#[command(
    name = "postern-agent",
    version = crate::VERSION,
    about = "The Postern agent: dials out to the server and serves SSH sessions."
)]
pub struct AgentCli {
    /// Every agent setting as a flag (log_format among them), `--config` and `--print-config`.
    #[command(flatten)]
    pub agent: AgentArgs,
}
