//! The server's settings, each defined once below; `postern_settings` layers them defaults <
//! TOML file (`--config`) < `POSTERN_*` variables < flags, and `ServerConfig::validate` is the
//! one check of the result, whichever layer a value came from.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use postern_settings::LogFormat;
use postern_settings::{Inputs, SettingsError, describe};
use serde::{Deserialize, Serialize};

postern_settings::settings! {
    /// Every server setting.
    ///
    /// How to add a setting: add a field here — its doc comment (the first line is the
    /// flag's help), its type, `= default` (none: the setting is required), serde attributes
    /// for its format (durations: `#[serde(with = "humantime_serde")]`), and
    /// `#[setting(secret)]` if it must never be shown (a password, a database URL with one).
    /// That gives the file key `name`, the flag `--name`, the variable `POSTERN_NAME`, its
    /// place in `--print-config` and its row in the precedence test. Then: a range or a
    /// relation to other settings in `validate`, the key in docs/postern.example.toml (a test
    /// fails until it is there) and, for a limit, its why in docs/ARCHITECTURE.md.
    pub struct ServerConfig (prefix "POSTERN_", config "POSTERN_CONFIG") {
        /// Where the server keeps its store, keys and lock (required).
        pub data_dir: PathBuf,
        /// The database several nodes share: postgres://user:password@host/db (or
        /// sqlite:///abs/path.db); unset: postern.db in the data dir, for this node alone.
        #[setting(secret)]
        pub database: Option<String> = None,
        /// PostgreSQL: the most connections this node opens (one of them listens for other
        /// nodes' wake-ups).
        pub database_max_connections: u32 = 10,
        /// PostgreSQL: how long a request waits for a free connection (or a new one to
        /// connect) before it fails with "storage unavailable".
        #[serde(with = "humantime_serde")]
        pub database_acquire_timeout: Duration = secs(5),
        /// HTTP API and app address.
        pub http: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        /// Address of the SSH gateway agents dial.
        pub agent_listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 2200)),
        /// SSH keepalive on agent links; a link is declared dead after 3 unanswered ones.
        #[serde(with = "humantime_serde")]
        pub keepalive: Duration = secs(15),
        /// Heartbeat interval assumed for agents that do not state theirs (the agent's
        /// default sync rate).
        #[serde(with = "humantime_serde")]
        pub heartbeat_interval: Duration = secs(10),
        /// Missed heartbeats after which an agent shows as not responding.
        pub heartbeat_misses: u32 = 3,
        /// Silence after which an agent's link is dropped and its sessions end (three missed
        /// heartbeats and one more interval: offline within 45 s of the last sign of life,
        /// with the sweep's 2.5 s on top).
        #[serde(with = "humantime_serde")]
        pub heartbeat_timeout: Duration = secs(40),
        /// How often this node writes its heartbeat row and reads the other nodes' links (one
        /// write per interval for the whole node, none per agent).
        #[serde(with = "humantime_serde")]
        pub node_heartbeat: Duration = secs(5),
        /// A node whose heartbeat has not changed for this long is dead: another node ends
        /// its sessions (`node lost`) and drops its links. At least two heartbeats.
        #[serde(with = "humantime_serde")]
        pub node_dead_after: Duration = secs(15),
        /// How long a login stays valid.
        #[serde(with = "humantime_serde")]
        pub login_ttl: Duration = secs(12 * 3600),
        /// Ports handed out for session tunnels.
        pub tunnel_ports: PortRange = PortRange { first: 20000, last: 29999 },
        /// Address tunnel ports bind to (loopback: only this host reaches them).
        pub tunnel_bind: IpAddr = IpAddr::from([127, 0, 0, 1]),
        /// How long a session may stay requested or starting before it fails.
        #[serde(with = "humantime_serde")]
        pub session_timeout: Duration = secs(60),
        /// A running session with no open channel for this long is stopped.
        #[serde(with = "humantime_serde")]
        pub idle_timeout: Duration = secs(30 * 60),
        /// An HTTP connection must send a complete request header within this time (from
        /// accept, or from the first byte of a later request).
        #[serde(with = "humantime_serde")]
        pub http_header_timeout: Duration = secs(10),
        /// A keep-alive HTTP connection with no request for this long is closed; event
        /// streams and WebSockets are never cut by it.
        #[serde(with = "humantime_serde")]
        pub http_idle_timeout: Duration = secs(60),
        /// An agent connection must have its control channel up (enrolled, or waiting for
        /// approval) this long after it connected, or it is closed.
        #[serde(with = "humantime_serde")]
        pub handshake_timeout: Duration = secs(30),
        /// Agent connections still in their handshake, in total; more are refused at once.
        /// Also held to a quarter of the open-file limit.
        pub max_handshakes: usize = 256,
        /// The same, from one source address (an IPv6 /64 counts as one).
        pub max_handshakes_per_source: usize = 16,
        /// Agents waiting for approval; new agents without a valid token are refused beyond.
        pub max_pending_agents: u32 = 100,
        /// New agents without a valid token one source address may enroll per enrollment
        /// window (a burst of this many, then one per window / this).
        pub enrollments_per_source: u32 = 10,
        /// The window of enrollments_per_source.
        #[serde(with = "humantime_serde")]
        pub enrollment_window: Duration = secs(10 * 60),
        /// How often a node reads the events other nodes stored without waiting to be woken:
        /// the backstop for a lost wake-up (the only cross-node path on a shared SQLite file).
        #[serde(with = "humantime_serde")]
        pub event_poll: Duration = secs(2),
        // TLS (docs/ARCHITECTURE.md, "HTTPS"): HTTPS whenever `http` is not loopback, or a
        // certificate is configured, or `https` asks for it; `insecure_http` turns it off.
        /// Serve plain HTTP even on a non-loopback address (behind a TLS-terminating proxy).
        pub insecure_http: bool = false,
        /// Serve HTTPS on a loopback address too (other addresses always get it).
        pub https: bool = false,
        /// PEM certificate chain for HTTPS (else a self-signed one); reloaded when it or its
        /// key changes, or on SIGHUP.
        pub tls_cert: Option<PathBuf> = None,
        /// PEM private key of tls_cert.
        pub tls_key: Option<PathBuf> = None,
        /// Get the HTTPS certificate for this name from an ACME CA (TLS-ALPN-01 on the HTTPS
        /// listener).
        pub acme_domain: Option<String> = None,
        /// E-mail for the ACME account (the CA writes about expiry and policy).
        pub acme_contact: Option<String> = None,
        /// ACME directory URL.
        pub acme_directory: String = crate::tls::LETS_ENCRYPT.to_owned(),
        /// Trust only this CA (PEM) for the ACME directory's HTTPS: a private or test CA.
        pub acme_ca_cert: Option<PathBuf> = None,
        // Metrics (docs/ARCHITECTURE.md, "Metrics and health").
        /// Serve Prometheus metrics, /healthz and /readyz on this address (unset: off).
        pub metrics_listen: Option<SocketAddr> = None,
        // Several nodes (docs/ARCHITECTURE.md, "Across nodes").
        /// Take node-to-node streams on this address (unset: other nodes cannot reach this
        /// one's agents and tunnels; it can still reach theirs).
        pub node_listen: Option<SocketAddr> = None,
        /// The address other nodes dial for node_listen, recorded in the store (default:
        /// node_listen itself, which must then not be 0.0.0.0 or ::).
        pub node_address: Option<SocketAddr> = None,
        /// Log format: text or json (read by the binary before the server starts).
        pub log_format: LogFormat = LogFormat::Text,
    }
}

/// An inclusive range of ports, written `20000-29999`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
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

impl From<PortRange> for String {
    fn from(range: PortRange) -> Self {
        range.to_string()
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unknown keys or variables, a bad value, a missing data dir: named with its source.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A duration out of its range; `setting` names the key, its flag and its variable.
    #[error("{setting} must be between {min} and {max}; got {got}")]
    OutOfRange {
        setting: String,
        min: humantime::FormattedDuration,
        max: humantime::FormattedDuration,
        got: humantime::FormattedDuration,
    },
    #[error("{setting} {ports} include the {what} port {port}; pick ports apart")]
    TunnelPortsOverlap {
        setting: String,
        ports: PortRange,
        what: &'static str,
        port: u16,
    },
    #[error("{setting} is empty")]
    Empty { setting: String },
    /// A node would be declared dead between two of its own heartbeats.
    #[error(
        "{dead_after} must be at least twice {heartbeat}: a node would be taken for dead between two heartbeats"
    )]
    NodeDeadTooSoon {
        dead_after: String,
        heartbeat: String,
    },
    /// TLS settings that contradict each other or cannot work.
    #[error("{0}")]
    Tls(String),
    #[error("{setting}: {source}")]
    Database {
        setting: String,
        source: crate::store::DatabaseUrlError,
    },
    #[error(
        "{setting} is needed when node_listen is 0.0.0.0 or :: (other nodes must know where to dial)"
    )]
    NodeAddress { setting: String },
    /// A count out of its range.
    #[error("{setting} must be between {min} and {max}; got {got}")]
    CountOutOfRange {
        setting: String,
        min: u64,
        max: u64,
        got: u64,
    },
}

/// Each duration setting's accepted range. Zero is never meaningful (a zero keepalive or
/// timeout fires at once); the upper bounds keep deadlines far from `Instant` overflow and
/// catch a unit typed wrong (`30d` for `30s`).
const DURATION_LIMITS: [(&str, Duration, Duration); 14] = [
    ("keepalive", secs(1), secs(600)),
    ("login_ttl", secs(60), secs(30 * 86_400)),
    ("session_timeout", secs(1), secs(3600)),
    ("idle_timeout", secs(1), secs(30 * 86_400)),
    ("heartbeat_interval", Duration::from_millis(100), secs(3600)),
    ("heartbeat_timeout", Duration::from_millis(100), secs(3600)),
    ("node_heartbeat", Duration::from_millis(100), secs(60)),
    ("node_dead_after", Duration::from_millis(200), secs(600)),
    ("http_header_timeout", secs(1), secs(3600)),
    ("http_idle_timeout", secs(1), secs(86_400)),
    ("handshake_timeout", secs(1), secs(600)),
    ("enrollment_window", secs(1), secs(86_400)),
    ("event_poll", Duration::from_millis(100), secs(600)),
    (
        "database_acquire_timeout",
        Duration::from_millis(100),
        secs(600),
    ),
];

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl ServerConfig {
    /// Defaults for everything but the data dir; what tests and quickstart start from.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ..Self::default()
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

    /// The PostgreSQL pool's settings.
    pub fn database_pool(&self) -> crate::store::PgPoolSettings {
        crate::store::PgPoolSettings {
            max_connections: self.database_max_connections,
            acquire_timeout: self.database_acquire_timeout,
        }
    }

    /// The store the `database` setting names.
    pub fn store_database(&self) -> Result<crate::store::Database, ConfigError> {
        crate::store::Database::from_setting(self.database.as_deref()).map_err(|source| {
            ConfigError::Database {
                setting: describe::<Self>("database"),
                source,
            }
        })
    }

    /// Layers the file, the variables and the flags in `inputs` over the defaults, and
    /// validates the result.
    pub fn load(inputs: &Inputs) -> Result<Self, ConfigError> {
        let config: Self = postern_settings::load(inputs)?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that make no sense, whichever layer they came from; run once on the
    /// layered result.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = describe::<Self>;
        // An empty path would be the working directory, whatever it happens to be.
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Empty {
                setting: name("data_dir"),
            });
        }
        let values = [
            self.keepalive,
            self.login_ttl,
            self.session_timeout,
            self.idle_timeout,
            self.heartbeat_interval,
            self.heartbeat_timeout,
            self.node_heartbeat,
            self.node_dead_after,
            self.http_header_timeout,
            self.http_idle_timeout,
            self.handshake_timeout,
            self.enrollment_window,
            self.event_poll,
            self.database_acquire_timeout,
        ];
        for ((key, min, max), got) in DURATION_LIMITS.into_iter().zip(values) {
            if got < min || got > max {
                return Err(ConfigError::OutOfRange {
                    setting: name(key),
                    min: humantime::format_duration(min),
                    max: humantime::format_duration(max),
                    got: humantime::format_duration(got),
                });
            }
        }
        let counts = [
            ("heartbeat_misses", u64::from(self.heartbeat_misses), 100),
            ("max_handshakes", self.max_handshakes as u64, 1_000_000),
            (
                "max_handshakes_per_source",
                self.max_handshakes_per_source as u64,
                1_000_000,
            ),
            (
                "max_pending_agents",
                u64::from(self.max_pending_agents),
                1_000_000,
            ),
            (
                "enrollments_per_source",
                u64::from(self.enrollments_per_source),
                1_000_000,
            ),
        ];
        for (key, got, max) in counts {
            if !(1..=max).contains(&got) {
                return Err(ConfigError::CountOutOfRange {
                    setting: name(key),
                    min: 1,
                    max,
                    got,
                });
            }
        }
        if self.node_dead_after < self.node_heartbeat * 2 {
            return Err(ConfigError::NodeDeadTooSoon {
                dead_after: name("node_dead_after"),
                heartbeat: name("node_heartbeat"),
            });
        }
        // One connection listens for wake-ups; requests need at least one more.
        let connections = self.database_max_connections;
        if !(2..=10_000).contains(&connections) {
            return Err(ConfigError::CountOutOfRange {
                setting: name("database_max_connections"),
                min: 2,
                max: 10_000,
                got: u64::from(connections),
            });
        }
        let ports = self.tunnel_ports;
        let listeners = [
            Some(("HTTP", self.http)),
            Some(("agent gateway", self.agent_listen)),
            self.metrics_listen.map(|addr| ("metrics", addr)),
            self.node_listen.map(|addr| ("node", addr)),
        ];
        for (what, addr) in listeners.into_iter().flatten() {
            let port = addr.port();
            if port != 0 && (ports.first..=ports.last).contains(&port) {
                return Err(ConfigError::TunnelPortsOverlap {
                    setting: name("tunnel_ports"),
                    ports,
                    what,
                    port,
                });
            }
        }
        self.store_database()?;
        if self.node_listen.is_some_and(|a| a.ip().is_unspecified()) && self.node_address.is_none()
        {
            return Err(ConfigError::NodeAddress {
                setting: name("node_address"),
            });
        }
        crate::tls::check(self).map_err(ConfigError::Tls)
    }
}

#[cfg(test)]
mod tests;
