//! Server settings: built from defaults, then the TOML file, then `POSTERN_*` variables and
//! flags (the last two merged by the CLI). Unknown keys in the file are errors.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// HTTP API (and later the app).
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    /// The SSH gateway agents dial.
    #[serde(default = "default_agent_listen")]
    pub agent_listen: SocketAddr,
    /// SSH keepalive on agent links; a link is declared dead after 3 unanswered ones.
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive: Duration,
    /// How long a login token stays valid.
    #[serde(default = "default_login_ttl", with = "humantime_serde")]
    pub login_ttl: Duration,
    /// Ports handed out for session tunnels.
    #[serde(default = "default_tunnel_ports")]
    pub tunnel_ports: PortRange,
    /// Address tunnel ports bind to (loopback: only this host reaches them).
    #[serde(default = "default_tunnel_bind")]
    pub tunnel_bind: IpAddr,
    /// How long a session may stay requested or starting before it fails.
    #[serde(default = "default_session_timeout", with = "humantime_serde")]
    pub session_timeout: Duration,
    /// A running session with no open channel for this long is stopped.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

/// An inclusive range of ports, written `20000-29999`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a port range like 20000-29999");
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(bad());
        }
        Ok(Self { first, last })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The same settings with every field optional, as read from a file or the command line.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfigFile {
    pub data_dir: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub agent_listen: Option<SocketAddr>,
    #[serde(default, with = "humantime_serde")]
    pub keepalive: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub login_ttl: Option<Duration>,
    pub tunnel_ports: Option<PortRange>,
    pub tunnel_bind: Option<IpAddr>,
    #[serde(default, with = "humantime_serde")]
    pub session_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Read by the binary before the server starts.
    pub log_format: Option<LogFormat>,
}

/// How the server writes its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
    #[error(
        "no data directory: pass --data-dir, set POSTERN_DATA_DIR or data_dir in the config file"
    )]
    NoDataDir,
    /// A duration out of its range; `setting` names the key, its flag and its variable.
    #[error("{setting} must be between {min} and {max}; got {got}")]
    OutOfRange {
        setting: &'static str,
        min: humantime::FormattedDuration,
        max: humantime::FormattedDuration,
        got: humantime::FormattedDuration,
    },
    #[error(
        "tunnel_ports (--tunnel-ports, POSTERN_TUNNEL_PORTS) {ports} include the {what} port {port}; pick ports apart"
    )]
    TunnelPortsOverlap {
        ports: PortRange,
        what: &'static str,
        port: u16,
    },
}

/// Each duration setting's accepted range. Zero is never meaningful (a zero keepalive or
/// timeout fires at once); the upper bounds keep deadlines far from `Instant` overflow and
/// catch a unit typed wrong (`30d` for `30s`).
const DURATION_LIMITS: [(&str, u64, u64); 4] = [
    ("keepalive (--keepalive, POSTERN_KEEPALIVE)", 1, 600),
    ("login_ttl", 60, 30 * 86_400),
    (
        "session_timeout (--session-timeout, POSTERN_SESSION_TIMEOUT)",
        1,
        3600,
    ),
    (
        "idle_timeout (--idle-timeout, POSTERN_IDLE_TIMEOUT)",
        1,
        30 * 86_400,
    ),
];

fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_agent_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 2200))
}
fn default_keepalive() -> Duration {
    Duration::from_secs(15)
}
fn default_login_ttl() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_tunnel_ports() -> PortRange {
    PortRange {
        first: 20000,
        last: 29999,
    }
}
fn default_tunnel_bind() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

impl ServerConfig {
    /// Defaults for everything but the data dir; what tests and quickstart start from.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            http: default_http(),
            agent_listen: default_agent_listen(),
            keepalive: default_keepalive(),
            login_ttl: default_login_ttl(),
            tunnel_ports: default_tunnel_ports(),
            tunnel_bind: default_tunnel_bind(),
            session_timeout: default_session_timeout(),
            idle_timeout: default_idle_timeout(),
        }
    }

    /// Layers `overrides` (flags and environment) over `file` over the defaults.
    pub fn resolve(
        file: ServerConfigFile,
        overrides: ServerConfigFile,
    ) -> Result<Self, ConfigError> {
        let data_dir = overrides
            .data_dir
            .or(file.data_dir)
            .ok_or(ConfigError::NoDataDir)?;
        let mut config = Self::new(data_dir);
        config.http = overrides.http.or(file.http).unwrap_or(config.http);
        config.agent_listen = overrides
            .agent_listen
            .or(file.agent_listen)
            .unwrap_or(config.agent_listen);
        config.keepalive = overrides
            .keepalive
            .or(file.keepalive)
            .unwrap_or(config.keepalive);
        config.login_ttl = overrides
            .login_ttl
            .or(file.login_ttl)
            .unwrap_or(config.login_ttl);
        config.tunnel_ports = overrides
            .tunnel_ports
            .or(file.tunnel_ports)
            .unwrap_or(config.tunnel_ports);
        config.tunnel_bind = overrides
            .tunnel_bind
            .or(file.tunnel_bind)
            .unwrap_or(config.tunnel_bind);
        config.session_timeout = overrides
            .session_timeout
            .or(file.session_timeout)
            .unwrap_or(config.session_timeout);
        config.idle_timeout = overrides
            .idle_timeout
            .or(file.idle_timeout)
            .unwrap_or(config.idle_timeout);
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that make no sense, whichever layer they came from; run once on the
    /// layered result.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let values = [
            self.keepalive,
            self.login_ttl,
            self.session_timeout,
            self.idle_timeout,
        ];
        for ((setting, min, max), got) in DURATION_LIMITS.into_iter().zip(values) {
            let (min, max) = (Duration::from_secs(min), Duration::from_secs(max));
            if got < min || got > max {
                return Err(ConfigError::OutOfRange {
                    setting,
                    min: humantime::format_duration(min),
                    max: humantime::format_duration(max),
                    got: humantime::format_duration(got),
                });
            }
        }
        let ports = self.tunnel_ports;
        for (what, addr) in [("HTTP", self.http), ("agent gateway", self.agent_listen)] {
            let port = addr.port();
            if port != 0 && (ports.first..=ports.last).contains(&port) {
                return Err(ConfigError::TunnelPortsOverlap { ports, what, port });
            }
        }
        Ok(())
    }
}

impl ServerConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: shown,
            source: Box::new(source),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postern.toml");
        std::fs::write(&path, include_str!("../../../docs/postern.example.toml")).unwrap();
        let file = ServerConfigFile::load(&path).unwrap();
        let config = ServerConfig::resolve(file, ServerConfigFile::default()).unwrap();
        assert_eq!(config.agent_listen.port(), 2200);
    }

    #[test]
    fn flags_beat_the_file_and_unknown_keys_are_refused() {
        let file: ServerConfigFile =
            toml::from_str("data_dir = \"/a\"\nhttp = \"127.0.0.1:9000\"\nkeepalive = \"5s\"")
                .unwrap();
        let flags = ServerConfigFile {
            http: Some("127.0.0.1:9001".parse().unwrap()),
            ..Default::default()
        };
        let c = ServerConfig::resolve(file, flags).unwrap();
        assert_eq!(c.http.port(), 9001);
        assert_eq!(c.keepalive, Duration::from_secs(5));
        assert_eq!(c.data_dir, PathBuf::from("/a"));

        assert!(toml::from_str::<ServerConfigFile>("htp = \"x\"").is_err());
        assert!(matches!(
            ServerConfig::resolve(ServerConfigFile::default(), ServerConfigFile::default()),
            Err(ConfigError::NoDataDir)
        ));
    }

    #[test]
    fn settings_that_make_no_sense_are_refused_whichever_layer_they_come_from() {
        let zero = |key: &str| format!("data_dir = \"/a\"\n{key} = \"0s\"");
        for key in ["session_timeout", "idle_timeout", "login_ttl", "keepalive"] {
            let file: ServerConfigFile = toml::from_str(&zero(key)).unwrap();
            let err = ServerConfig::resolve(file, ServerConfigFile::default()).unwrap_err();
            assert!(err.to_string().starts_with(key), "{err}");
            assert!(err.to_string().ends_with("got 0s"), "{err}");
        }
        let flags = ServerConfigFile {
            data_dir: Some("/a".into()),
            http: Some("127.0.0.1:20005".parse().unwrap()),
            ..Default::default()
        };
        let err = ServerConfig::resolve(ServerConfigFile::default(), flags).unwrap_err();
        assert!(err.to_string().contains("HTTP port 20005"), "{err}");
        let err = toml::from_str::<ServerConfigFile>("log_format = \"xml\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant `xml`"), "{err}");
    }
}
