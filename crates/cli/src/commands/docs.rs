//! `postern completions` and `postern man`: shell completions and man pages generated from
//! the clap definitions of both binaries, so they list exactly the flags the binaries take.
//! The packages (`scripts/package`) install what these write.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;
use postern_agent::binary::AgentCli;

use crate::args::Cli;

/// Which binary's command line to document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Binary {
    Postern,
    PosternAgent,
}

impl Binary {
    fn command(self) -> clap::Command {
        match self {
            Binary::Postern => Cli::command(),
            Binary::PosternAgent => AgentCli::command(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Binary::Postern => "postern",
            Binary::PosternAgent => "postern-agent",
        }
    }
}

/// Prints the completion script of `binary` for `shell` to standard output.
pub fn completions(shell: Shell, binary: Binary) {
    let mut command = binary.command();
    clap_complete::generate(shell, &mut command, binary.name(), &mut std::io::stdout());
}

/// Writes `postern.1`, one page per visible subcommand (`postern-server.1`,
/// `postern-tokens-create.1`, …) and `postern-agent.1` into `dir`; prints their paths.
///
/// `postern agent` gets no page of its own: its file name would be `postern-agent.1`, the
/// agent binary's page, which documents the same options (`postern.1` says so).
pub fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut postern = Cli::command().disable_help_subcommand(true);
    postern.build();
    let mut pages = Vec::new();
    collect(&postern, &mut pages);
    pages.retain(|page| page_name(page) != "postern-agent");
    let names: Vec<String> = pages.iter().map(page_name).collect();
    for page in pages {
        let see_also = if page_name(&page) == "postern" {
            let mut all: Vec<String> = names.iter().filter(|n| *n != "postern").cloned().collect();
            all.push("postern-agent".to_owned());
            (
                all,
                "The options of postern agent are those of postern-agent(1).",
            )
        } else {
            (vec!["postern".to_owned()], "")
        };
        written.push(write_page(dir, page, see_also)?);
    }
    let mut agent = AgentCli::command();
    agent.build();
    let agent_see_also = (
        vec!["postern".to_owned()],
        "postern agent takes the same options.",
    );
    written.push(write_page(dir, agent, agent_see_also)?);
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// The command and its visible subcommands, depth first.
fn collect(command: &clap::Command, pages: &mut Vec<clap::Command>) {
    pages.push(command.clone());
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, pages);
    }
}

fn page_name(command: &clap::Command) -> String {
    command
        .get_display_name()
        .unwrap_or(command.get_name())
        .to_owned()
}

fn write_page(
    dir: &Path,
    command: clap::Command,
    (see_also, note): (Vec<String>, &str),
) -> Result<PathBuf> {
    let name = page_name(&command);
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .manual("Postern")
        .render(&mut page)
        .context("cannot render a man page")?;
    let refs: Vec<String> = see_also.iter().map(|p| format!("\\fB{p}\\fR(1)")).collect();
    write!(page, ".SH \"SEE ALSO\"\n{}\n", refs.join(", "))?;
    if !note.is_empty() {
        write!(page, ".PP\n{note}\n")?;
    }
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
