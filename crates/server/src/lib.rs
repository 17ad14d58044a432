//! The Postern server: the agent gateway (SSH), the HTTP API, the store and the event bus.
//!
//! `Server::start` brings everything up on the configured addresses (port 0 works, for
//! tests) and returns a handle; `Server::shutdown` stops it cleanly.

#![forbid(unsafe_code)]

pub mod agents;
pub mod api;
pub mod auth;
pub mod ca;
pub mod certificates;
mod clock;
pub mod cluster;
pub mod config;
mod decisions;
mod enrollment_limits;
pub mod events;
pub mod fleet;
pub mod gateway;
pub mod health;
mod http;
pub mod keys;
pub mod limits;
pub mod links;
mod liveness;
pub mod lock;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod presence;
pub mod sessions;
mod startup;
pub mod store;
pub mod terminal;
pub mod tls;
pub mod tokens;
mod web;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use postern_protocol::api::{CreatedToken, EventKind, Role};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::ServerConfig;

use crate::startup::{bind, ensure_data_dir, join_nodes, open_store, server_keys};

use crate::agents::Agents;
use crate::api::Services;
use crate::auth::UserError;
use crate::ca::UserCa;
use crate::certificates::Certificates;
use crate::events::EventBus;
use crate::health::{Listener, Readiness};
use crate::links::{LinkRegistry, LivenessPolicy};
use crate::metrics::{GaugeSources, Metrics};
use crate::sessions::{SessionConfig, Sessions};
use crate::store::{Actor, Database, StoreError};
use crate::terminal::Terminals;
use crate::tokens::{EnrollmentTokens, TokenError};

pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
pub const USER_CA_FILE: &str = "user_ca_ed25519_key";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen for {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Locked(#[from] lock::LockError),
    #[error(transparent)]
    Node(#[from] node::NodeIdError),
    #[error(
        "no Postern store in {0} (no postern.db): check the path; `postern server` creates one on its first start, `--create` makes one here"
    )]
    NoStore(String),
    #[error("cannot close the sessions left open by the last run: {0}")]
    Sessions(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// What [`Server::reload`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The certificate files are read again; the outcome is logged when it is known.
    CertificateFiles,
    /// Nothing this server runs with can be reloaded (no certificate files configured).
    Nothing,
}

pub struct Server {
    pub http_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    /// Where `/metrics` is served, when it is.
    pub metrics_addr: Option<SocketAddr>,
    /// Where other nodes reach this one (`--node-listen`), when they can.
    pub node_addr: Option<SocketAddr>,
    /// SHA-256 fingerprint of the gateway's host key, for pinning.
    pub host_key_fingerprint: String,
    /// With HTTPS, the fingerprint (`SHA256:…`) of the certificate served at start; `None`
    /// for plain HTTP.
    pub tls_fingerprint: Option<String>,
    /// Set when this start created the first administrator: show it once, it is not kept.
    pub initial_admin_password: Option<String>,
    services: Arc<Services>,
    /// With `--tls-cert`: asks the certificate files' watcher to read them now.
    reload_files: Option<Arc<tokio::sync::Notify>>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Released last, when the server is dropped after its shutdown.
    _lock: lock::DataDirLock,
}

impl Server {
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        // Ports first: a server that cannot listen fails before it changes anything.
        let http = bind("HTTP", config.http).await?;
        let agent_listener = bind("agents", config.agent_listen).await?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        let node_listener = match config.node_listen {
            Some(addr) => Some(bind("nodes", addr).await?),
            None => None,
        };
        let metrics = if metrics_listener.is_some() {
            Metrics::enabled()
        } else {
            Metrics::default()
        };
        ensure_data_dir(&config.data_dir)?;
        let lock = lock::DataDirLock::acquire(&config.data_dir)?;
        let database = config.store_database()?;
        let store = open_store(&database, &config.data_dir, config.database_pool()).await?;
        let files = limits::raise_file_limit();
        let (host_key, user_ca) = server_keys(&database, store.as_ref(), &config.data_dir).await?;
        let host_key_fingerprint = keys::fingerprint(&host_key);
        let shutdown = CancellationToken::new();
        // A start that fails past here stops what it spawned (certificate reloads, ACME).
        let stop_on_error = shutdown.clone().drop_guard();
        let (https, tls_tasks) = if config.serves_https() {
            let (https, tasks) = tls::start(&config, &shutdown).await?;
            (Some(https), tasks)
        } else {
            (None, Vec::new())
        };
        let tls_fingerprint = https.as_ref().map(tls::Https::fingerprint);
        let reload_files = https.as_ref().and_then(|h| h.reload_files.clone());
        let node = node::load_or_create(&config.data_dir)?;
        let (peers, node_secret, node_addr) =
            join_nodes(&config, &database, &store, &node, node_listener.as_ref()).await?;
        let events = Arc::new(EventBus::new(store.clone()).await?);

        let initial_admin_password = if store.count_users().await? == 0 {
            let password = auth::secret::new_password();
            auth::create_user(&store, "admin", Role::Admin, &password).await?;
            events
                .publish(
                    EventKind::UserCreated,
                    &Actor::System,
                    None,
                    "created user admin (admin)",
                )
                .await;
            Some(password)
        } else {
            None
        };

        let links = Arc::new(LinkRegistry::new(
            LivenessPolicy {
                interval: config.heartbeat_interval,
                misses: config.heartbeat_misses,
                timeout: config.heartbeat_timeout,
            },
            metrics.clone(),
        ));
        let agents = Arc::new(Agents::new(
            store.clone(),
            events.clone(),
            links.clone(),
            gateway::key_text(user_ca.public_key()),
            enrollment_limits::EnrollmentLimits::new(enrollment_limits::EnrollmentConfig {
                max_pending: config.max_pending_agents,
                per_source: config.enrollments_per_source,
                window: config.enrollment_window,
            }),
        ));
        let sessions = Sessions::new(
            store.clone(),
            events.clone(),
            links.clone(),
            SessionConfig {
                ports: config.tunnel_ports,
                bind: config.tunnel_bind,
                start_timeout: config.session_timeout,
                idle_timeout: config.idle_timeout,
            },
            node.clone(),
            metrics.clone(),
            peers,
        );
        sessions
            .recover()
            .await
            .map_err(|e| ServerError::Sessions(e.to_string()))?;
        let cluster = Arc::new(cluster::Cluster::new(
            sessions.node().clone(),
            store.clone(),
            links.clone(),
            events.clone(),
            sessions.clone(),
            cluster::ClusterConfig {
                heartbeat: config.node_heartbeat,
                dead_after: config.node_dead_after,
            },
        ));
        // With the node address other nodes dial (`--node-listen`), if any.
        let shown = node_addr.map(|a| a.to_string());
        cluster.register(shown.as_deref()).await?;
        let certificates = Arc::new(Certificates::new(
            store.clone(),
            events.clone(),
            UserCa::new(user_ca.clone()),
            metrics.clone(),
        ));
        let readiness = Arc::new(Readiness::new(store.clone(), Some(cluster.clone())));
        let services = Arc::new(Services {
            store: store.clone(),
            agents: agents.clone(),
            sessions: sessions.clone(),
            certificates: certificates.clone(),
            terminals: Terminals::new(sessions.clone(), certificates),
            tokens: Arc::new(EnrollmentTokens::new(
                store.clone(),
                events.clone(),
                host_key_fingerprint.clone(),
            )),
            events: events.clone(),
            logins: Arc::new(auth::login::Logins::new(
                store.clone(),
                events.clone(),
                config.login_ttl,
                metrics.clone(),
            )),
            readiness: readiness.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        });

        let http_addr = http.local_addr().map_err(|source| ServerError::Bind {
            what: "HTTP",
            addr: config.http,
            source,
        })?;
        let agent_addr = agent_listener
            .local_addr()
            .map_err(|source| ServerError::Bind {
                what: "agents",
                addr: config.agent_listen,
                source,
            })?;

        let timeouts = http::HttpTimeouts {
            header: config.http_header_timeout,
            idle: config.http_idle_timeout,
        };
        let http_task = tokio::spawn(readiness.track(
            Listener::Http,
            http::serve(
                http,
                api::router(services.clone(), https.is_some()),
                timeouts,
                https.map(|h| h.acceptor),
                shutdown.clone(),
            ),
        ));
        let mut tasks = Vec::new();
        let metrics_addr = match metrics_listener {
            Some(listener) => {
                let gauges = GaugeSources {
                    store: store.clone(),
                    links: links.clone(),
                    sessions: sessions.clone(),
                    events: events.clone(),
                };
                let (addr, serving) =
                    serve_metrics(listener, gauges, &services, timeouts, &shutdown)?;
                tasks.extend(serving);
                Some(addr)
            }
            None => None,
        };
        // Other nodes' events, live here too; and the decisions among them reach the links
        // this node holds (subscribed before the bus reads anything).
        let decisions_task = tokio::spawn(decisions::follow(
            agents.clone(),
            store.clone(),
            events.subscribe(),
            shutdown.clone(),
        ));
        let events_task = tokio::spawn(
            events
                .clone()
                .follow_store(config.event_poll, shutdown.clone()),
        );
        let liveness_task = tokio::spawn(liveness::sweep(
            links.clone(),
            store.clone(),
            events.clone(),
            cluster.clone(),
            shutdown.clone(),
        ));
        let cluster_task = tokio::spawn(cluster.clone().run(shutdown.clone()));
        let gateway = Arc::new(gateway::Gateway::new(
            store,
            agents,
            events,
            sessions,
            cluster,
            host_key_fingerprint.clone(),
        ));
        let handshakes = gateway::limits::Handshakes::new(
            gateway::limits::HandshakeConfig {
                timeout: config.handshake_timeout,
                max_total: config.max_handshakes,
                max_per_source: config.max_handshakes_per_source,
            }
            .within(files),
        );
        let gateway_task = tokio::spawn(readiness.track(
            Listener::Agents,
            gateway::serve(
                agent_listener,
                host_key,
                config.keepalive,
                handshakes,
                gateway,
                shutdown.clone(),
            ),
        ));
        if let (Some(listener), Some(secret)) = (node_listener, node_secret) {
            let listening = peer::Listening {
                me: node.clone(),
                secret,
                sessions: services.sessions.clone(),
            };
            tasks.push(tokio::spawn(peer::serve(
                listener,
                listening,
                shutdown.clone(),
            )));
        }
        tracing::info!(%http_addr, %agent_addr, ?metrics_addr, ?node_addr, fingerprint = %host_key_fingerprint, tls = tls_fingerprint.as_deref().unwrap_or("off (plain HTTP)"), "postern server started");
        tasks.extend([
            http_task,
            gateway_task,
            liveness_task,
            cluster_task,
            events_task,
            decisions_task,
        ]);
        tasks.extend(tls_tasks);
        stop_on_error.disarm();

        Ok(Self {
            http_addr,
            agent_addr,
            metrics_addr,
            node_addr,
            host_key_fingerprint,
            tls_fingerprint,
            initial_admin_password,
            services,
            reload_files,
            shutdown,
            tasks,
            _lock: lock,
        })
    }

    /// The URL of the API and the app: `https://` or `http://` and the address it listens on.
    pub fn url(&self) -> String {
        let scheme = if self.tls_fingerprint.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.http_addr)
    }

    /// Creates an enrollment token on behalf of `actor` (used by quickstart for its agent).
    pub async fn create_enrollment_token(
        &self,
        actor: &Actor,
        ttl: Duration,
        uses: u32,
    ) -> Result<CreatedToken, TokenError> {
        self.services.tokens.create(actor, ttl, uses).await
    }

    /// Rows this node wrote to its store since it started, by table (where the store counts
    /// them: SQLite), for measuring what idle agents cost the database.
    pub fn rows_written(&self) -> std::collections::BTreeMap<String, u64> {
        self.services.store.rows_written()
    }

    /// Number of agents connected to this node right now.
    pub fn online_agents(&self) -> usize {
        self.services.agents.links().online_count()
    }

    /// Reloads what can change under a running server without dropping anyone: today the
    /// certificate files (`postern server` calls this on SIGHUP).
    pub fn reload(&self) -> Reload {
        match &self.reload_files {
            Some(asked) => {
                asked.notify_one();
                Reload::CertificateFiles
            }
            None => Reload::Nothing,
        }
    }

    /// Stops accepting, closes agent links and event streams, and waits for the tasks.
    pub async fn shutdown(self) {
        // Load balancers see it first, while everything still answers.
        self.services.readiness.stopping();
        // Closing the links must not read as link loss: open sessions end at the next start,
        // with `server restarted`, as after a crash.
        self.services.sessions.close().await;
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        // The sessions' tasks (timers, idle watches, web-terminal shells) were told to end at
        // `close`; the same bound as the other tasks.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.services.sessions.wait()).await;
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on the metrics listener, and keeps the
/// histograms folded.
fn serve_metrics(
    listener: TcpListener,
    gauges: GaugeSources,
    services: &Services,
    timeouts: http::HttpTimeouts,
    shutdown: &CancellationToken,
) -> Result<(SocketAddr, [JoinHandle<()>; 2]), ServerError> {
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        what: "metrics",
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let metrics = services.metrics.clone();
    let router = metrics::http::router(metrics.clone(), gauges, services.readiness.clone());
    Ok((
        addr,
        [
            tokio::spawn(http::serve(
                listener,
                router,
                timeouts,
                None,
                shutdown.clone(),
            )),
            tokio::spawn(upkeep(metrics, shutdown.clone())),
        ],
    ))
}

/// Folds histogram samples into their buckets every few seconds (as the exporter's own
/// listener would), so that they do not pile up when nobody scrapes.
async fn upkeep(metrics: Metrics, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = every.tick() => metrics.upkeep(),
            _ = stop.cancelled() => return,
        }
    }
}

/// Adds a user directly in the store `database` names (`DataDir`: the one in `data_dir`);
/// works whether a server runs or not. A data directory without a store is refused unless
/// `create`: a mistyped path must not become a new, empty store.
pub async fn add_user(
    database: &Database,
    data_dir: &Path,
    name: &str,
    role: Role,
    password: &str,
    create: bool,
) -> Result<(), ServerError> {
    if *database == Database::DataDir && !create && !data_dir.join(store::STORE_FILE).is_file() {
        return Err(ServerError::NoStore(data_dir.display().to_string()));
    }
    let store = open_store(database, data_dir, store::PgPoolSettings::default()).await?;
    auth::create_user(&store, name, role, password).await?;
    EventBus::new(store)
        .await?
        .publish(
            EventKind::UserCreated,
            &Actor::AdminCli,
            None,
            format!("created user {name} ({role})"),
        )
        .await;
    Ok(())
}
