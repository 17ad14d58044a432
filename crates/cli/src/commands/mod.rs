//! One module per subcommand.

pub mod admin;
pub mod agents;
pub mod docs;
pub mod events;
pub mod login;
pub mod proxy;
pub mod quickstart;
pub mod server;
pub mod sessions;
pub mod ssh;
pub mod ssh_config;
pub mod tokens;

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result, bail};

/// A password from a prompt when on a terminal, else the first line of standard input.
pub fn read_password(prompt: &str, force_stdin: bool) -> Result<String> {
    let stdin = std::io::stdin();
    let password = if !force_stdin && stdin.is_terminal() {
        rpassword::prompt_password(prompt).context("cannot read the password")?
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}

pub use postern_agent::cli::stop_signal;
