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
    /// Heartbeat interval assumed for agents that do not state theirs.
    #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Missed heartbeats after which an agent shows as not responding.
    #[serde(default = "default_heartbeat_misses")]
    pub heartbeat_misses: u32,
    /// Silence after which an agent's link is dropped (at least one heartbeat interval past
    /// not responding).
    #[serde(default = "default_heartbeat_timeout", with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
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
    /// An HTTP connection must send a complete request header within this time (from
    /// accept, or from the first byte of a later request).
    #[serde(default = "default_http_header_timeout", with = "humantime_serde")]
    pub http_header_timeout: Duration,
    /// A keep-alive HTTP connection with no request for this long is closed. Event streams
    /// and WebSockets are never cut by it.
    #[serde(default = "default_http_idle_timeout", with = "humantime_serde")]
    pub http_idle_timeout: Duration,
    /// An agent connection must have its control channel up (enrolled, or waiting for
    /// approval) this long after it connected, or it is closed.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Agent connections still in their handshake (before the control channel is up), in
    /// total; more are refused at once. Also held to a quarter of the open-file limit.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// The same, from one source address (an IPv6 /64 counts as one).
    #[serde(default = "default_max_handshakes_per_source")]
    pub max_handshakes_per_source: usize,
    /// Agents waiting for approval; new agents without a valid token are refused beyond.
    #[serde(default = "default_max_pending_agents")]
    pub max_pending_agents: u32,
    /// New agents without a valid token one source address may enroll per
    /// `enrollment_window` (a burst of this many, then one per window / this).
    #[serde(default = "default_enrollments_per_source")]
    pub enrollments_per_source: u32,
    #[serde(default = "default_enrollment_window", with = "humantime_serde")]
    pub enrollment_window: Duration,
    // TLS (docs/ARCHITECTURE.md, "HTTPS"). HTTPS whenever `http` is not loopback, or a
    // certificate is configured, or `https` asks for it; `insecure_http` turns it off.
    /// Plain HTTP even on a non-loopback address (behind a TLS-terminating proxy).
    #[serde(default)]
    pub insecure_http: bool,
    /// HTTPS on a loopback address too.
    #[serde(default)]
    pub https: bool,
    /// PEM certificate chain and its key; reloaded when the files change or on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A certificate from an ACME CA for this name (TLS-ALPN-01 on the HTTPS listener).
    pub acme_domain: Option<String>,
    /// The account's contact e-mail (the CA writes about expiry and policy).
    pub acme_contact: Option<String>,
    #[serde(default = "default_acme_directory")]
    pub acme_directory: String,
    /// Trust only this CA for the ACME directory's HTTPS (a private or test CA).
    pub acme_ca_cert: Option<PathBuf>,
    // Metrics
    /// Address of the metrics listener (`/metrics`, `/healthz`, `/readyz`); none: off.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
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
    pub heartbeat_interval: Option<Duration>,
    pub heartbeat_misses: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub login_ttl: Option<Duration>,
    pub tunnel_ports: Option<PortRange>,
    pub tunnel_bind: Option<IpAddr>,
    #[serde(default, with = "humantime_serde")]
    pub session_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub http_header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub http_idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub handshake_timeout: Option<Duration>,
    pub max_handshakes: Option<usize>,
    pub max_handshakes_per_source: Option<usize>,
    pub max_pending_agents: Option<u32>,
    pub enrollments_per_source: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub enrollment_window: Option<Duration>,
    // TLS
    pub insecure_http: Option<bool>,
    pub https: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub acme_domain: Option<String>,
    pub acme_contact: Option<String>,
    pub acme_directory: Option<String>,
    pub acme_ca_cert: Option<PathBuf>,
    // Metrics
    pub metrics_listen: Option<SocketAddr>,
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
    /// TLS settings that contradict each other or cannot work.
    #[error("{0}")]
    Tls(String),
    /// A count out of its range.
    #[error("{setting} must be between {min} and {max}; got {got}")]
    CountOutOfRange {
        setting: &'static str,
        min: u64,
        max: u64,
        got: u64,
    },
}

/// Each duration setting's accepted range. Zero is never meaningful (a zero keepalive or
/// timeout fires at once); the upper bounds keep deadlines far from `Instant` overflow and
/// catch a unit typed wrong (`30d` for `30s`).
const DURATION_LIMITS: [(&str, Duration, Duration); 10] = [
    (
        "keepalive (--keepalive, POSTERN_KEEPALIVE)",
        secs(1),
        secs(600),
    ),
    ("login_ttl", secs(60), secs(30 * 86_400)),
    (
        "session_timeout (--session-timeout, POSTERN_SESSION_TIMEOUT)",
        secs(1),
        secs(3600),
    ),
    (
        "idle_timeout (--idle-timeout, POSTERN_IDLE_TIMEOUT)",
        secs(1),
        secs(30 * 86_400),
    ),
    (
        "heartbeat_interval (--heartbeat-interval, POSTERN_HEARTBEAT_INTERVAL)",
        Duration::from_millis(100),
        secs(3600),
    ),
    (
        "heartbeat_timeout (--heartbeat-timeout, POSTERN_HEARTBEAT_TIMEOUT)",
        Duration::from_millis(100),
        secs(3600),
    ),
    ("http_header_timeout", secs(1), secs(3600)),
    ("http_idle_timeout", secs(1), secs(86_400)),
    (
        "handshake_timeout (--handshake-timeout, POSTERN_HANDSHAKE_TIMEOUT)",
        secs(1),
        secs(600),
    ),
    (
        "enrollment_window (--enrollment-window, POSTERN_ENROLLMENT_WINDOW)",
        secs(1),
        secs(86_400),
    ),
];

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_agent_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 2200))
}
fn default_keepalive() -> Duration {
    Duration::from_secs(15)
}
fn default_heartbeat_interval() -> Duration {
    // The agent's default sync rate.
    Duration::from_secs(10)
}
fn default_heartbeat_misses() -> u32 {
    3
}
fn default_heartbeat_timeout() -> Duration {
    // Three missed heartbeats (30 s) and one more interval: offline within 45 s of the last
    // sign of life, with the sweep's period (2.5 s) on top.
    Duration::from_secs(40)
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
fn default_http_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_http_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_handshakes() -> usize {
    256
}
fn default_max_handshakes_per_source() -> usize {
    16
}
fn default_max_pending_agents() -> u32 {
    100
}
fn default_enrollments_per_source() -> u32 {
    10
}
fn default_enrollment_window() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_acme_directory() -> String {
    crate::tls::LETS_ENCRYPT.to_owned()
}

impl ServerConfig {
    /// Defaults for everything but the data dir; what tests and quickstart start from.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            http: default_http(),
            agent_listen: default_agent_listen(),
            keepalive: default_keepalive(),
            heartbeat_interval: default_heartbeat_interval(),
            heartbeat_misses: default_heartbeat_misses(),
            heartbeat_timeout: default_heartbeat_timeout(),
            login_ttl: default_login_ttl(),
            tunnel_ports: default_tunnel_ports(),
            tunnel_bind: default_tunnel_bind(),
            session_timeout: default_session_timeout(),
            idle_timeout: default_idle_timeout(),
            http_header_timeout: default_http_header_timeout(),
            http_idle_timeout: default_http_idle_timeout(),
            handshake_timeout: default_handshake_timeout(),
            max_handshakes: default_max_handshakes(),
            max_handshakes_per_source: default_max_handshakes_per_source(),
            max_pending_agents: default_max_pending_agents(),
            enrollments_per_source: default_enrollments_per_source(),
            enrollment_window: default_enrollment_window(),
            insecure_http: false,
            https: false,
            tls_cert: None,
            tls_key: None,
            acme_domain: None,
            acme_contact: None,
            acme_directory: default_acme_directory(),
            acme_ca_cert: None,
            metrics_listen: None,
        }
    }

    /// Whether the HTTP listener speaks TLS.
    pub fn serves_https(&self) -> bool {
        !self.insecure_http
            && (self.https
                || self.tls_cert.is_some()
                || self.acme_domain.is_some()
                || !self.http.ip().is_loopback())
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
        config.heartbeat_interval = overrides
            .heartbeat_interval
            .or(file.heartbeat_interval)
            .unwrap_or(config.heartbeat_interval);
        config.heartbeat_misses = overrides
            .heartbeat_misses
            .or(file.heartbeat_misses)
            .unwrap_or(config.heartbeat_misses);
        config.heartbeat_timeout = overrides
            .heartbeat_timeout
            .or(file.heartbeat_timeout)
            .unwrap_or(config.heartbeat_timeout);
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
        config.http_header_timeout = overrides
            .http_header_timeout
            .or(file.http_header_timeout)
            .unwrap_or(config.http_header_timeout);
        config.http_idle_timeout = overrides
            .http_idle_timeout
            .or(file.http_idle_timeout)
            .unwrap_or(config.http_idle_timeout);
        config.handshake_timeout = overrides
            .handshake_timeout
            .or(file.handshake_timeout)
            .unwrap_or(config.handshake_timeout);
        config.max_handshakes = overrides
            .max_handshakes
            .or(file.max_handshakes)
            .unwrap_or(config.max_handshakes);
        config.max_handshakes_per_source = overrides
            .max_handshakes_per_source
            .or(file.max_handshakes_per_source)
            .unwrap_or(config.max_handshakes_per_source);
        config.max_pending_agents = overrides
            .max_pending_agents
            .or(file.max_pending_agents)
            .unwrap_or(config.max_pending_agents);
        config.enrollments_per_source = overrides
            .enrollments_per_source
            .or(file.enrollments_per_source)
            .unwrap_or(config.enrollments_per_source);
        config.enrollment_window = overrides
            .enrollment_window
            .or(file.enrollment_window)
            .unwrap_or(config.enrollment_window);
        // TLS
        config.insecure_http = overrides.insecure_http.or(file.insecure_http) == Some(true);
        config.https = overrides.https.or(file.https) == Some(true);
        config.tls_cert = overrides.tls_cert.or(file.tls_cert);
        config.tls_key = overrides.tls_key.or(file.tls_key);
        config.acme_domain = overrides.acme_domain.or(file.acme_domain);
        config.acme_contact = overrides.acme_contact.or(file.acme_contact);
        if let Some(directory) = overrides.acme_directory.or(file.acme_directory) {
            config.acme_directory = directory;
        }
        config.acme_ca_cert = overrides.acme_ca_cert.or(file.acme_ca_cert);
        // Metrics
        config.metrics_listen = overrides.metrics_listen.or(file.metrics_listen);
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
            self.heartbeat_interval,
            self.heartbeat_timeout,
            self.http_header_timeout,
            self.http_idle_timeout,
            self.handshake_timeout,
            self.enrollment_window,
        ];
        for ((setting, min, max), got) in DURATION_LIMITS.into_iter().zip(values) {
            if got < min || got > max {
                return Err(ConfigError::OutOfRange {
                    setting,
                    min: humantime::format_duration(min),
                    max: humantime::format_duration(max),
                    got: humantime::format_duration(got),
                });
            }
        }
        let counts = [
            (
                "heartbeat_misses (--heartbeat-misses, POSTERN_HEARTBEAT_MISSES)",
                u64::from(self.heartbeat_misses),
                100,
            ),
            (
                "max_handshakes (--max-handshakes, POSTERN_MAX_HANDSHAKES)",
                self.max_handshakes as u64,
                1_000_000,
            ),
            (
                "max_handshakes_per_source (--max-handshakes-per-source, POSTERN_MAX_HANDSHAKES_PER_SOURCE)",
                self.max_handshakes_per_source as u64,
                1_000_000,
            ),
            (
                "max_pending_agents (--max-pending-agents, POSTERN_MAX_PENDING_AGENTS)",
                u64::from(self.max_pending_agents),
                1_000_000,
            ),
            (
                "enrollments_per_source (--enrollments-per-source, POSTERN_ENROLLMENTS_PER_SOURCE)",
                u64::from(self.enrollments_per_source),
                1_000_000,
            ),
        ];
        for (setting, got, max) in counts {
            if !(1..=max).contains(&got) {
                return Err(ConfigError::CountOutOfRange {
                    setting,
                    min: 1,
                    max,
                    got,
                });
            }
        }
        let ports = self.tunnel_ports;
        let listeners = [
            Some(("HTTP", self.http)),
            Some(("agent gateway", self.agent_listen)),
            self.metrics_listen.map(|addr| ("metrics", addr)),
        ];
        for (what, addr) in listeners.into_iter().flatten() {
            let port = addr.port();
            if port != 0 && (ports.first..=ports.last).contains(&port) {
                return Err(ConfigError::TunnelPortsOverlap { ports, what, port });
            }
        }
        crate::tls::check(self).map_err(ConfigError::Tls)
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
    fn the_metrics_listener_is_off_unless_set_and_keeps_clear_of_the_tunnel_ports() {
        let file: ServerConfigFile =
            toml::from_str("data_dir = \"/a\"\nmetrics_listen = \"127.0.0.1:9090\"").unwrap();
        let from_file = ServerConfig::resolve(file.clone(), ServerConfigFile::default());
        assert_eq!(
            from_file.unwrap().metrics_listen.map(|a| a.port()),
            Some(9090)
        );
        let flags = ServerConfigFile {
            metrics_listen: Some("127.0.0.1:9091".parse().unwrap()),
            ..Default::default()
        };
        let c = ServerConfig::resolve(file, flags).unwrap();
        assert_eq!(c.metrics_listen.map(|a| a.port()), Some(9091));
        let off = ServerConfig::new("/a");
        assert_eq!(off.metrics_listen, None);
        let clash = ServerConfigFile {
            data_dir: Some("/a".into()),
            metrics_listen: Some("127.0.0.1:20001".parse().unwrap()),
            ..Default::default()
        };
        assert!(matches!(
            ServerConfig::resolve(ServerConfigFile::default(), clash),
            Err(ConfigError::TunnelPortsOverlap {
                what: "metrics",
                ..
            })
        ));
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
        for key in [
            "session_timeout",
            "idle_timeout",
            "login_ttl",
            "keepalive",
            "heartbeat_interval",
            "heartbeat_timeout",
            "http_header_timeout",
            "http_idle_timeout",
            "handshake_timeout",
            "enrollment_window",
        ] {
            let file: ServerConfigFile = toml::from_str(&zero(key)).unwrap();
            let err = ServerConfig::resolve(file, ServerConfigFile::default()).unwrap_err();
            assert!(err.to_string().starts_with(key), "{err}");
            assert!(err.to_string().ends_with("got 0s"), "{err}");
        }
        for key in [
            "heartbeat_misses",
            "max_handshakes",
            "max_handshakes_per_source",
            "max_pending_agents",
            "enrollments_per_source",
        ] {
            let file: ServerConfigFile =
                toml::from_str(&format!("data_dir = \"/a\"\n{key} = 0")).unwrap();
            let err = ServerConfig::resolve(file, ServerConfigFile::default()).unwrap_err();
            assert!(err.to_string().starts_with(key), "{err}");
            assert!(err.to_string().ends_with("got 0"), "{err}");
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
