//! Settings defined once, read from four layers: defaults < TOML file (`--config`) <
//! `POSTERN_*` variables < flags.
//!
//! A program declares its settings with [`settings!`]: one struct whose fields carry their
//! doc (the flag's help), their type (parsed by serde in every layer), their default and
//! their marks (`secret`, a variable name kept from before). From that one definition come
//! the flags ([`Flags`]), the variables, the file's keys, the printed configuration
//! ([`to_toml`], secrets masked) and a `Debug` that masks secrets too. [`load`] layers the
//! sources, refusing unknown keys and unknown `POSTERN_*` variables, and names the setting
//! and the source of any bad value. Checks between values (ranges, overlaps) stay with the
//! program: one `validate` on the layered result.
//!
//! Variables and flags are text; each is read as a TOML value when it is one (`3`, `true`,
//! `["a", "b"]`), else as a string, else (for lists) as comma-separated strings, and then
//! goes through the same serde code as the file's value.

mod flags;
mod macros;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use flags::{Flags, variables_of};

/// Written instead of a secret's value, in the printed configuration and in `Debug`.
pub const MASK: &str = "<secret>";

/// `POSTERN_*` variables read outside any settings and clap (logging, the CLI's home, the
/// build, the tests and scripts/, whose servers inherit them); never refused as unknown.
/// A new variable read with `std::env::var` belongs here.
pub const OTHER_VARIABLES: &[&str] = &[
    "POSTERN_LOG",
    "POSTERN_HOME",
    "POSTERN_TEST_PYTHON",
    "POSTERN_TEST_POSTGRES",
    "POSTERN_BIN",
    "POSTERN_BENCH_BIN",
    "POSTERN_FLEET_AGENTS",
    "POSTERN_UPDATE_OPENAPI",
    "POSTERN_WEB_PREBUILT",
    "POSTERN_FUZZ_EXAMPLES",
    "POSTERN_FUZZ_LOGOUT_TOKEN",
];

/// Every `POSTERN_*` variable a setting or a flag of some Postern program reads: the
/// server's and the agent's settings and the `postern` commands' flags. Each program accepts
/// all of them, so that one shell or environment file can serve the server, the agent and
/// the CLI (the standalone `postern-agent` knows nothing of the server's settings, yet must
/// not refuse `POSTERN_DATA_DIR`). The test `every_variable_of_every_program_is_listed`
/// (crates/cli) keeps this list equal to the definitions and names what to add.
pub const PROGRAM_VARIABLES: &[&str] = &[
    // The server's settings.
    "POSTERN_CONFIG",
    "POSTERN_DATA_DIR",
    "POSTERN_DATABASE",
    "POSTERN_DATABASE_MAX_CONNECTIONS",
    "POSTERN_DATABASE_ACQUIRE_TIMEOUT",
    "POSTERN_HTTP",
    "POSTERN_AGENT_LISTEN",
    "POSTERN_KEEPALIVE",
    "POSTERN_HEARTBEAT_INTERVAL",
    "POSTERN_HEARTBEAT_MISSES",
    "POSTERN_HEARTBEAT_TIMEOUT",
    "POSTERN_NODE_HEARTBEAT",
    "POSTERN_NODE_DEAD_AFTER",
    "POSTERN_EVENT_POLL",
    "POSTERN_LOGIN_TTL",
    "POSTERN_TUNNEL_PORTS",
    "POSTERN_TUNNEL_BIND",
    "POSTERN_SESSION_TIMEOUT",
    "POSTERN_IDLE_TIMEOUT",
    "POSTERN_HTTP_HEADER_TIMEOUT",
    "POSTERN_HTTP_IDLE_TIMEOUT",
    "POSTERN_HANDSHAKE_TIMEOUT",
    "POSTERN_MAX_HANDSHAKES",
    "POSTERN_MAX_HANDSHAKES_PER_SOURCE",
    "POSTERN_MAX_PENDING_AGENTS",
    "POSTERN_ENROLLMENTS_PER_SOURCE",
    "POSTERN_ENROLLMENT_WINDOW",
    "POSTERN_INSECURE_HTTP",
    "POSTERN_HTTPS",
    "POSTERN_TLS_CERT",
    "POSTERN_TLS_KEY",
    "POSTERN_ACME_DOMAIN",
    "POSTERN_ACME_CONTACT",
    "POSTERN_ACME_DIRECTORY",
    "POSTERN_ACME_CA_CERT",
    "POSTERN_METRICS_LISTEN",
    "POSTERN_NODE_LISTEN",
    "POSTERN_NODE_ADDRESS",
    "POSTERN_LOG_FORMAT",
    // The agent's settings.
    "POSTERN_AGENT_CONFIG",
    "POSTERN_SERVER",
    "POSTERN_AGENT_DATA_DIR",
    "POSTERN_AGENT_NAME",
    "POSTERN_TOKEN",
    "POSTERN_SYNC_RATE",
    "POSTERN_AGENT_KEEPALIVE",
    "POSTERN_LOCAL_SSH",
    "POSTERN_ALLOW_LOGINS",
    "POSTERN_SHELL_GRACE",
    // The CLI's flags.
    "POSTERN_URL",
    "POSTERN_USER",
    "POSTERN_TIMEOUT",
    "POSTERN_FINGERPRINT",
    "POSTERN_CA_CERT",
    "POSTERN_QUICKSTART_DIR",
];

/// One setting as the definition states it.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// The key in the file, and the flag (`_` as `-`) and variable (upper case) it names.
    pub key: &'static str,
    /// The field's doc comment.
    pub help: &'static str,
    /// No default: `load` refuses a configuration without it.
    pub required: bool,
    /// Masked wherever the configuration is shown.
    pub secret: bool,
    /// A variable name other than `PREFIX` + `KEY` (kept from before the settings were one).
    env: Option<&'static str>,
}

impl Spec {
    pub const fn new(key: &'static str, help: &'static str, required: bool) -> Self {
        Self {
            key,
            help,
            required,
            secret: false,
            env: None,
        }
    }

    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    pub const fn env(mut self, name: &'static str) -> Self {
        self.env = Some(name);
        self
    }

    pub fn variable(&self, prefix: &str) -> String {
        match self.env {
            Some(name) => name.to_owned(),
            None => format!("{prefix}{}", self.key.to_ascii_uppercase()),
        }
    }

    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }
}

/// What [`settings!`] implements for a settings struct.
pub trait Settings: Serialize + DeserializeOwned + Default {
    /// Every setting, in the order of the definition.
    const SPECS: &'static [Spec];
    /// Variables are this prefix and the key in upper case, unless a setting names its own.
    const ENV_PREFIX: &'static str;
    /// The variable naming the config file (`--config`).
    const CONFIG_ENV: &'static str;
}

/// A setting as messages name it: `keepalive (--keepalive, POSTERN_KEEPALIVE)`.
pub fn describe<S: Settings>(key: &str) -> String {
    match spec::<S>(key) {
        Some(spec) => format!(
            "{key} (--{}, {})",
            spec.flag(),
            spec.variable(S::ENV_PREFIX)
        ),
        None => key.to_owned(),
    }
}

fn spec<S: Settings>(key: &str) -> Option<&'static Spec> {
    S::SPECS.iter().find(|s| s.key == key)
}

/// Whether `key` is a secret of `S`; used by the generated `Debug`.
pub fn is_secret<S: Settings>(key: &str) -> bool {
    spec::<S>(key).is_some_and(|s| s.secret)
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Variable(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "the config file {}", path.display()),
            Self::Variable(name) => write!(f, "the variable {name}"),
            Self::Flag(flag) => write!(f, "the flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("config file {path}: unknown setting `{key}`{hint}")]
    UnknownKey {
        path: String,
        key: String,
        hint: String,
    },
    #[error("unknown variable {name}: no setting or command reads it (a typo? unset it){hint}")]
    UnknownVariable { name: String, hint: String },
    /// A value of the wrong type or form; `setting` names its key, flag and variable.
    #[error("{setting} from {origin}: {reason}")]
    BadValue {
        setting: String,
        origin: Source,
        reason: String,
    },
    #[error("{setting} is not set: pass --{flag}, set {variable} or {key} in the config file")]
    Missing {
        setting: String,
        flag: String,
        variable: String,
        key: &'static str,
    },
    /// Only a definition whose default cannot be written as TOML (a bug, caught by tests).
    #[error("the settings cannot be written as TOML: {0}")]
    Serialize(String),
}

/// The sources a program hands to [`load`] besides the defaults.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub file: Option<PathBuf>,
    /// The environment (all of it: `load` picks the `POSTERN_*` variables).
    pub env: Vec<(OsString, OsString)>,
    /// Flags given on the command line: key and values (more than one when repeated).
    pub flags: Vec<(&'static str, Vec<String>)>,
    /// `POSTERN_*` variables other parts of the program read: not refused.
    pub known_variables: Vec<String>,
}

/// Layers defaults < file < variables < flags into `S`; validation between values is the
/// caller's.
pub fn load<S: Settings>(inputs: &Inputs) -> Result<S, SettingsError> {
    let mut merged = table_of(&S::default())?;
    let mut given: HashSet<&'static str> = HashSet::new();

    if let Some(path) = &inputs.file {
        let shown = path.display().to_string();
        for (key, value) in read_file(path)? {
            let Some(spec) = spec::<S>(&key) else {
                let hint = suggest(&key, S::SPECS.iter().map(|s| s.key.to_owned()));
                return Err(SettingsError::UnknownKey {
                    path: shown,
                    key,
                    hint,
                });
            };
            let source = Source::File(path.clone());
            apply::<S>(&mut merged, spec, vec![value], source)?;
            given.insert(spec.key);
        }
    }

    let variables: Vec<String> = S::SPECS.iter().map(|s| s.variable(S::ENV_PREFIX)).collect();
    for (name, value) in &inputs.env {
        let Some(name) = name.to_str().filter(|n| n.starts_with("POSTERN_")) else {
            continue;
        };
        let Some(index) = variables.iter().position(|v| v == name) else {
            let known = name == S::CONFIG_ENV
                || PROGRAM_VARIABLES.contains(&name)
                || OTHER_VARIABLES.contains(&name)
                || inputs.known_variables.iter().any(|k| k == name);
            if known {
                continue;
            }
            // The program's own variables first: on a tie, the nearer kin wins.
            let all = PROGRAM_VARIABLES.iter().chain(OTHER_VARIABLES);
            let hint = suggest(
                name,
                variables
                    .iter()
                    .cloned()
                    .chain(all.map(|v| (*v).to_owned())),
            );
            return Err(SettingsError::UnknownVariable {
                name: name.to_owned(),
                hint,
            });
        };
        let spec = &S::SPECS[index];
        let source = Source::Variable(name.to_owned());
        let Some(text) = value.to_str() else {
            return Err(bad::<S>(spec, source, "the value is not UTF-8".into()));
        };
        apply::<S>(&mut merged, spec, candidates(&[text]), source)?;
        given.insert(spec.key);
    }

    for (key, values) in &inputs.flags {
        let Some(spec) = spec::<S>(key) else { continue };
        let texts: Vec<&str> = values.iter().map(String::as_str).collect();
        let source = Source::Flag(format!("--{}", spec.flag()));
        apply::<S>(&mut merged, spec, candidates(&texts), source)?;
        given.insert(spec.key);
    }

    if let Some(spec) = S::SPECS
        .iter()
        .find(|s| s.required && !given.contains(s.key))
    {
        return Err(SettingsError::Missing {
            setting: spec.key.to_owned(),
            flag: spec.flag(),
            variable: spec.variable(S::ENV_PREFIX),
            key: spec.key,
        });
    }
    // Every value was tried alone over the defaults; together they deserialize the same.
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| SettingsError::Serialize(e.message().to_owned()))
}

fn read_file(path: &Path) -> Result<toml::Table, SettingsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: shown.clone(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| SettingsError::Parse {
        path: shown,
        source: Box::new(source),
    })
}

fn bad<S: Settings>(spec: &Spec, origin: Source, reason: String) -> SettingsError {
    SettingsError::BadValue {
        setting: describe::<S>(spec.key),
        origin,
        reason,
    }
}

/// Sets `spec` to the first candidate `S` accepts; the error is the first candidate's.
fn apply<S: Settings>(
    merged: &mut toml::Table,
    spec: &Spec,
    candidates: Vec<toml::Value>,
    source: Source,
) -> Result<(), SettingsError> {
    let mut first_error = None;
    for value in candidates {
        let mut trial = merged.clone();
        trial.insert(spec.key.to_owned(), value);
        match toml::Value::Table(trial.clone()).try_into::<S>() {
            Ok(_) => {
                *merged = trial;
                return Ok(());
            }
            Err(e) => {
                first_error.get_or_insert_with(|| e.message().trim().to_owned());
            }
        }
    }
    Err(bad::<S>(
        spec,
        source,
        first_error.unwrap_or_else(|| "no value".into()),
    ))
}

/// The readings of a flag's or variable's text, most specific first: a TOML value, the
/// text itself, a list of its comma-separated parts. Repeated flags make a list.
fn candidates(texts: &[&str]) -> Vec<toml::Value> {
    let one = |text: &str| {
        let mut values = Vec::new();
        if let Ok(mut table) = toml::from_str::<toml::Table>(&format!("v = {text}"))
            && table.len() == 1
            && let Some(value) = table.remove("v")
        {
            values.push(value);
        }
        values.push(toml::Value::String(text.to_owned()));
        let parts = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| toml::Value::String(p.into()));
        values.push(toml::Value::Array(parts.collect()));
        values
    };
    match texts {
        [text] => one(text),
        many => {
            let items = many.iter().map(|t| toml::Value::String((*t).to_owned()));
            vec![toml::Value::Array(items.collect())]
        }
    }
}

/// "; did you mean `X`?" for a name one or two edits from a known one.
fn suggest(name: &str, known: impl Iterator<Item = String>) -> String {
    known
        .filter(|k| edit_distance(k, name) <= 2)
        .min_by_key(|k| edit_distance(k, name))
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(previous + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}

fn table_of<S: Serialize>(settings: &S) -> Result<toml::Table, SettingsError> {
    toml::Table::try_from(settings).map_err(|e| SettingsError::Serialize(e.to_string()))
}

/// The configuration as a TOML file, in the order of the definition, secrets masked;
/// settings with no value are listed commented out.
pub fn to_toml<S: Settings>(settings: &S) -> Result<String, SettingsError> {
    let table = table_of(settings)?;
    let mut out = String::new();
    for spec in S::SPECS {
        match table.get(spec.key) {
            Some(_) if spec.secret => out.push_str(&format!("{} = \"{MASK}\"\n", spec.key)),
            Some(value) => out.push_str(&format!("{} = {value}\n", spec.key)),
            None => out.push_str(&format!("# {} is not set\n", spec.key)),
        }
    }
    Ok(out)
}

/// Keys of `S` an example file does not mention (as `key = …` or commented `# key = …`).
pub fn missing_from_example<S: Settings>(text: &str) -> Vec<&'static str> {
    S::SPECS
        .iter()
        .map(|s| s.key)
        .filter(|key| {
            !text.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                line.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
        })
        .collect()
}

/// Stands for a secret in `Debug`.
pub struct Masked;

impl fmt::Debug for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

#[doc(hidden)]
pub use serde as __serde;

#[cfg(test)]
mod tests;

/// How a long-running command writes its log; a setting of the server and of the agent.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
