//! The flags of a settings struct, built from its definition: one `--key` per setting (its
//! doc as help, its variable and default shown), `--config FILE` and `--print-config`.
//!
//! clap is told each setting's variable only to list it in `--help` (and so that a walk of
//! the command finds every variable the program reads); the value it would take from there
//! is ignored, as [`crate::load`] reads variables itself to name them in errors.

use std::ffi::OsString;
use std::marker::PhantomData;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::{Inputs, Settings};

const CONFIG: &str = "config";
const PRINT_CONFIG: &str = "print_config";

/// What the command line said about `S`; `#[command(flatten)]` it into a command.
#[derive(Clone, Debug)]
pub struct Flags<S> {
    pub config: Option<PathBuf>,
    pub print_config: bool,
    /// Settings given as flags: key and values.
    pub values: Vec<(&'static str, Vec<String>)>,
    settings: PhantomData<fn() -> S>,
}

impl<S: Settings> Flags<S> {
    /// This command line with the process's environment, for [`crate::load`].
    pub fn inputs(&self, known_variables: Vec<String>) -> Inputs {
        Inputs {
            file: self.config.clone(),
            env: std::env::vars_os().collect::<Vec<(OsString, OsString)>>(),
            flags: self.values.clone(),
            known_variables,
        }
    }

    /// Adds a flag unless the command line already gave the setting (a global flag given
    /// before the subcommand).
    pub fn add_if_absent(&mut self, key: &'static str, value: String) {
        if !self.values.iter().any(|(k, _)| *k == key) {
            self.values.push((key, vec![value]));
        }
    }
}

impl<S: Settings> clap::FromArgMatches for Flags<S> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let values = S::SPECS
            .iter()
            .filter(|spec| matches.value_source(spec.key) == Some(ValueSource::CommandLine))
            .filter_map(|spec| {
                let given = matches.get_many::<String>(spec.key)?;
                Some((spec.key, given.cloned().collect()))
            })
            .collect();
        Ok(Self {
            config: matches.get_one::<PathBuf>(CONFIG).cloned(),
            print_config: matches.get_flag(PRINT_CONFIG),
            values,
            settings: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<S: Settings> clap::Args for Flags<S> {
    fn augment_args(command: Command) -> Command {
        let defaults = crate::table_of(&S::default()).unwrap_or_default();
        let settings = S::SPECS.iter().map(|spec| {
            let help = spec.help.lines().map(str::trim).collect::<Vec<_>>();
            let mut long_help = help.join(" ");
            let mut short = help.first().copied().unwrap_or_default().to_owned();
            if let Some(value) = defaults.get(spec.key).filter(|_| !spec.required) {
                let shown = match value {
                    _ if spec.secret => crate::MASK.to_owned(),
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if !(shown.is_empty() || shown == "[]") {
                    short.push_str(&format!(" [default: {shown}]"));
                    long_help.push_str(&format!(" [default: {shown}]"));
                }
            }
            let arg = Arg::new(spec.key)
                .long(spec.flag())
                .value_name(spec.key.to_ascii_uppercase())
                .env(spec.variable(S::ENV_PREFIX))
                .hide_env_values(spec.secret)
                .help(short)
                .long_help(long_help)
                .action(ArgAction::Append);
            // A yes/no setting is a switch: `--https` alone says true, `--https=false` no.
            match defaults.get(spec.key) {
                Some(toml::Value::Boolean(_)) => arg
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true"),
                _ => arg,
            }
        });
        command
            .args(settings)
            .arg(
                Arg::new(CONFIG)
                    .long("config")
                    .value_name("FILE")
                    .env(S::CONFIG_ENV)
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("TOML config file; variables and flags win over it"),
            )
            .arg(
                Arg::new(PRINT_CONFIG)
                    .long("print-config")
                    .action(ArgAction::SetTrue)
                    .help("Print the effective configuration as TOML (secrets masked) and exit"),
            )
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

/// Every variable a command reads through clap, in all its subcommands: what a program
/// passes as `known_variables`.
pub fn variables_of(command: &Command) -> Vec<String> {
    let mut out: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env()?.to_str().map(str::to_owned))
        .collect();
    for sub in command.get_subcommands() {
        out.extend(variables_of(sub));
    }
    out
}
