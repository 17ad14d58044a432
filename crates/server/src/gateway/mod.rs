//! The agent gateway: the SSH server agents dial. It authenticates agents by their SSH key,
//! offers them exactly one thing — the `postern-control` subsystem — and refuses the rest.

mod control;
mod handler;

use std::sync::Arc;
use std::time::Duration;

use russh::MethodKind;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::Server as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agents::Agents;
use crate::events::EventBus;
use crate::sessions::Sessions;
use crate::store::Store;

/// What every agent connection shares.
pub struct Gateway {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) agents: Arc<Agents>,
    pub(crate) events: Arc<EventBus>,
    pub(crate) sessions: Arc<Sessions>,
    /// SHA-256 fingerprint of our host key; agents sign over it at enrollment.
    pub(crate) host_key_fingerprint: String,
}

impl Gateway {
    pub fn new(
        store: Arc<dyn Store>,
        agents: Arc<Agents>,
        events: Arc<EventBus>,
        sessions: Arc<Sessions>,
        host_key_fingerprint: String,
    ) -> Self {
        Self {
            store,
            agents,
            events,
            sessions,
            host_key_fingerprint,
        }
    }
}

/// The canonical text of a public key: algorithm and base64, no comment.
pub fn key_text(key: &PublicKey) -> String {
    PublicKey::new(key.key_data().clone(), "")
        .to_openssh()
        .unwrap_or_default()
}

struct Listener {
    gateway: Arc<Gateway>,
}

impl russh::server::Server for Listener {
    type Handler = handler::AgentConnection;

    fn new_client(&mut self, peer: Option<std::net::SocketAddr>) -> Self::Handler {
        handler::AgentConnection::new(self.gateway.clone(), peer)
    }

    fn handle_session_error(&mut self, error: russh::Error) {
        tracing::debug!(%error, "agent connection ended with an error");
    }
}

/// Serves the gateway on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    host_key: PrivateKey,
    keepalive: Duration,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) {
    let config = russh::server::Config {
        keys: vec![host_key],
        methods: (&[MethodKind::PublicKey][..]).into(),
        // Dead links are found by keepalives (3 unanswered → closed), not by silence:
        // an idle agent is a healthy agent.
        keepalive_interval: Some(keepalive),
        keepalive_max: 3,
        inactivity_timeout: None,
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        nodelay: true,
        // Session data rides on this connection: windows sized for bulk transfer.
        window_size: 8 * 1024 * 1024,
        maximum_packet_size: 65535,
        channel_buffer_size: 256,
        ..Default::default()
    };
    let mut server = Listener { gateway };
    let running = server.run_on_socket(Arc::new(config), &listener);
    let handle = running.handle();
    tokio::select! {
        result = running => {
            if let Err(error) = result {
                tracing::error!(%error, "agent gateway stopped");
            }
        }
        _ = shutdown.cancelled() => handle.shutdown("server shutting down".into()),
    }
}
