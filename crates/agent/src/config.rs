//! The agent's settings, each defined once below (the same mechanism as the server's:
//! `postern_settings`), layered defaults < TOML file (`--config`) < variables < flags, and
//! checked once by `AgentConfig::validate`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use postern_protocol::EnrollmentToken;
pub use postern_settings::LogFormat;
use postern_settings::{Inputs, describe};

use crate::servers::ServerList;
use crate::{AgentError, AgentOptions};

postern_settings::settings! {
    /// Every agent setting.
    ///
    /// How to add a setting: add a field here with its doc comment (the first line is the
    /// flag's help), type, `= default` (none: required), serde attributes for its format and
    /// `#[setting(secret)]` if it must never be shown. Variables are `POSTERN_AGENT_` + KEY
    /// (the older names kept by `env = …`: `postern agent` shares the server's binary and
    /// variables). Then: a range in `validate`, the key in docs/postern-agent.example.toml.
    pub struct AgentConfig (prefix "POSTERN_AGENT_", config "POSTERN_AGENT_CONFIG") {
        /// The server's agent gateway, HOST:PORT or [IPV6]:PORT (the gateway listens on
        /// port 2200 unless configured otherwise); with several nodes, each node's (the flag
        /// repeated, or comma-separated): every attempt tries them in random order.
        #[setting(env = "POSTERN_SERVER")]
        pub server: ServerList,
        /// Where the agent keeps its identity and state (required).
        pub data_dir: PathBuf,
        /// Name to register as (default: the hostname).
        pub name: Option<String> = None,
        /// Enrollment token (approves this agent on first enrollment; its `@SHA256:…` part is
        /// the server's host key fingerprint, required on the first connection).
        #[setting(secret, env = "POSTERN_TOKEN")]
        pub token: Option<EnrollmentToken> = None,
        /// Heartbeat interval, 1s to 10m.
        #[serde(with = "humantime_serde")]
        #[setting(env = "POSTERN_SYNC_RATE")]
        pub sync_rate: Duration = Duration::from_secs(10),
        /// SSH keepalive interval on the link, 1s to 1h, for a server that is up but not
        /// answering (a dead network is noticed within 45 s of an unacknowledged heartbeat
        /// anyway).
        #[serde(with = "humantime_serde")]
        pub keepalive: Duration = Duration::from_secs(60),
        /// Serve sessions with this SSH server (e.g. 127.0.0.1:22) instead of the built-in one.
        #[setting(env = "POSTERN_LOCAL_SSH")]
        pub local_ssh: Option<SocketAddr> = None,
        /// Logins besides the agent's own user that sessions may use (only when running as
        /// root); a list, or comma-separated on the flag.
        #[setting(env = "POSTERN_ALLOW_LOGINS")]
        pub allow_logins: Vec<String> = Vec::new(),
        /// How long a Postern client's shell outlives its client, connection and link while
        /// nobody is attached, 0 (none kept) to 24h.
        #[serde(with = "humantime_serde")]
        #[setting(env = "POSTERN_SHELL_GRACE")]
        pub shell_grace: Duration = crate::sshd::DEFAULT_GRACE,
        /// Log format: text or json.
        #[setting(env = "POSTERN_LOG_FORMAT")]
        pub log_format: LogFormat = LogFormat::Text,
    }
}

/// Heartbeats more often than every second cost the server CPU for every agent and tell it
/// nothing more; rarer than every 10 minutes, a hung agent shows as up for far too long.
const SYNC_RATE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(600));
/// Keepalives: the same floor; an hour is already longer than any NAT keeps a quiet flow.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// A day: a shell forgotten longer than that is forgotten, not detached.
const SHELL_GRACE_MAX: Duration = Duration::from_secs(24 * 3600);

impl AgentConfig {
    /// Layers the file, the variables and the flags in `inputs` over the defaults, and
    /// validates the result.
    pub fn load(inputs: &Inputs) -> Result<Self, AgentError> {
        let config: Self = postern_settings::load(inputs)?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses what cannot work, whichever layer it came from.
    pub fn validate(&self) -> Result<(), AgentError> {
        let name = describe::<Self>;
        ServerList::check(self.server.as_slice())
            .map_err(|e| AgentError::Config(format!("{}: {e}", name("server"))))?;
        for (key, got, (min, max)) in [
            ("sync_rate", self.sync_rate, SYNC_RATE),
            ("keepalive", self.keepalive, KEEPALIVE),
        ] {
            if got < min || got > max {
                return Err(AgentError::Config(format!(
                    "{} must be between {} and {}; got {}",
                    name(key),
                    humantime::format_duration(min),
                    humantime::format_duration(max),
                    humantime::format_duration(got),
                )));
            }
        }
        if self.shell_grace > SHELL_GRACE_MAX {
            return Err(AgentError::Config(format!(
                "{} must be at most {}; got {}",
                name("shell_grace"),
                humantime::format_duration(SHELL_GRACE_MAX),
                humantime::format_duration(self.shell_grace),
            )));
        }
        if self.local_ssh.is_some_and(|a| a.port() == 0) {
            return Err(AgentError::Config(format!(
                "{}: port 0 is not a port to connect to",
                name("local_ssh")
            )));
        }
        Ok(())
    }

    pub fn options(self) -> AgentOptions {
        let mut options = AgentOptions::new(String::new(), self.data_dir);
        options.servers = self.server.into_vec();
        options.name = self.name;
        options.token = self.token;
        options.sync_rate = self.sync_rate;
        options.keepalive = self.keepalive;
        options.local_ssh = self.local_ssh;
        options.allowed_logins = self.allow_logins;
        options.shell_grace = self.shell_grace;
        options
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use postern_settings::testing::check_precedence;
    use postern_settings::{Settings, missing_from_example, to_toml};

    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/postern-agent.example.toml");
    const TOKEN: &str = "pet_abc@SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";

    fn with(
        env: &[(&str, &str)],
        flags: &[(&'static str, &str)],
    ) -> Result<AgentConfig, AgentError> {
        AgentConfig::load(&Inputs {
            env: env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
            flags: flags
                .iter()
                .map(|(k, v)| (*k, vec![(*v).to_owned()]))
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn the_example_config_parses_and_lists_every_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let config = AgentConfig::load(&Inputs {
            file: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.server.as_slice(), ["postern.example.com:2200"]);
        assert_eq!(
            missing_from_example::<AgentConfig>(EXAMPLE),
            Vec::<&str>::new()
        );
    }

    /// The file the Debian package installs as /etc/postern/agent.toml: it loads once the
    /// operator names the server, and every key it shows commented out is a setting.
    #[test]
    fn the_packaged_config_loads_and_names_only_settings() {
        const PACKAGED: &str = include_str!("../../../packaging/postern-agent/agent.toml");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, PACKAGED).unwrap();
        let config = AgentConfig::load(&Inputs {
            file: Some(path),
            flags: vec![("server", vec!["postern.example.com:2200".into()])],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/postern-agent"));
        let shown: Vec<&str> = PACKAGED
            .lines()
            .filter_map(|line| line.strip_prefix("# ")?.split_once(" = "))
            .map(|(key, _)| key)
            .collect();
        assert!(!shown.is_empty());
        for key in shown {
            assert!(
                AgentConfig::SPECS.iter().any(|s| s.key == key),
                "{key} is not an agent setting"
            );
        }
    }

    #[test]
    fn every_setting_is_default_then_file_then_variable_then_flag() {
        let fallback = |key: &str| match key {
            "server" => Some(["a.example:2200", "b.example:2201", "c.example:2202"]),
            "data_dir" => Some(["/var/lib/a", "/var/lib/b", "/var/lib/c"]),
            "name" => Some(["ann", "bo", "cy"]),
            "token" => Some(["pet_a", "pet_b", "pet_c"]),
            "local_ssh" => Some(["127.0.0.1:22", "127.0.0.1:2222", "[::1]:22"]),
            "log_format" => Some(["json", "text", "json"]),
            _ => None,
        };
        check_precedence::<AgentConfig>(fallback, |c| c.validate().map_err(|e| e.to_string()))
            .unwrap();
    }

    #[test]
    fn the_token_is_masked_when_printed_and_in_debug() {
        let base = [("server", "localhost:2200"), ("data_dir", "/a")];
        let config = with(&[("POSTERN_TOKEN", TOKEN)], &base).unwrap();
        assert_eq!(config.token.as_ref().map(|t| t.secret()), Some("pet_abc"));
        let printed = to_toml(&config).unwrap();
        assert!(!printed.contains("pet_abc"), "{printed}");
        assert!(printed.contains("token = \"<secret>\""), "{printed}");
        assert!(printed.contains("# name is not set"), "{printed}");
        assert!(!format!("{config:?}").contains("pet_abc"));
        assert!(
            AgentConfig::SPECS
                .iter()
                .any(|s| s.key == "token" && s.secret)
        );
    }

    #[test]
    fn values_that_cannot_work_are_refused_naming_the_setting() {
        let base = [("server", "localhost:2200"), ("data_dir", "/a")];
        for (key, value, says) in [
            (
                "sync_rate",
                "0s",
                "sync_rate (--sync-rate, POSTERN_SYNC_RATE) must be between 1s and 10m; got 0s",
            ),
            ("sync_rate", "11m", "between 1s and 10m"),
            (
                "keepalive",
                "2h",
                "keepalive (--keepalive, POSTERN_AGENT_KEEPALIVE) must be between 1s and 1h",
            ),
            (
                "server",
                "localhost",
                "server (--server, POSTERN_SERVER): \"localhost\": no port",
            ),
            (
                "local_ssh",
                "127.0.0.1:0",
                "local_ssh (--local-ssh, POSTERN_LOCAL_SSH): port 0",
            ),
            (
                "token",
                "pet@nope",
                "token (--token, POSTERN_TOKEN) from the flag --token:",
            ),
        ] {
            let mut flags = base.to_vec();
            flags.push((key, value));
            let err = with(&[], &flags).unwrap_err().to_string();
            assert!(err.contains(says), "{key} = {value}: {err}");
        }
        let err = with(&[], &[("data_dir", "/a")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "server is not set: pass --server, set POSTERN_SERVER or server in the config file"
        );
    }

    /// The standalone `postern-agent` (which knows only these settings) runs in a shell or
    /// with an environment file that also configures the server and the CLI.
    #[test]
    fn the_servers_and_the_clis_variables_pass_and_a_typo_is_named() {
        let base = [("server", "localhost:2200"), ("data_dir", "/a")];
        let shared = [
            ("POSTERN_DATA_DIR", "/srv/postern"),
            ("POSTERN_HTTPS", "true"),
            ("POSTERN_URL", "https://gw.example"),
        ];
        assert!(with(&shared, &base).is_ok());
        let err = with(&[("POSTERN_DATA_DIRR", "/srv")], &base)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown variable POSTERN_DATA_DIRR:")
                && err.ends_with("did you mean `POSTERN_DATA_DIR`?"),
            "{err}"
        );
        let err = with(&[("POSTERN_SYNC_RAT", "5s")], &base)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("did you mean `POSTERN_SYNC_RATE`?"), "{err}");
    }
}
