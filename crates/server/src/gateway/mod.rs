//! The agent gateway: the SSH server agents dial. It authenticates agents by their SSH key,
//! offers them exactly one thing — the `postern-control` subsystem — and refuses the rest.

mod control;
mod handler;
mod link;
mod sever;

pub use sever::Cut;

use std::sync::Arc;
use std::time::Duration;

use russh::MethodKind;
use russh::keys::{PrivateKey, PublicKey};
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
    let config = Arc::new(config);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(%error, "agent gateway accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let handler = handler::AgentConnection::new(gateway.clone(), Some(peer));
        tokio::spawn(connection(
            config.clone(),
            socket,
            handler,
            shutdown.clone(),
        ));
    }
}

/// One agent connection. The SSH handshake's future is large; it runs in this short-lived
/// task, and the connection is then watched by a small one, so that an idle link does not
/// keep the handshake's memory (what russh's own accept loop does).
async fn connection(
    config: Arc<russh::server::Config>,
    socket: tokio::net::TcpStream,
    handler: handler::AgentConnection,
    shutdown: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    // The control task cuts the socket of a peer it drops (see `sever`).
    let socket = sever::Severable::new(socket, handler.cut());
    let session = match russh::server::run_stream(config, socket, handler).await {
        Ok(session) => session,
        Err(error) => {
            tracing::debug!(%error, "agent connection setup failed");
            return;
        }
    };
    tokio::spawn(async move {
        let handle = session.handle();
        tokio::select! {
            ended = session => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "agent connection ended with an error");
                }
            }
            _ = shutdown.cancelled() => {
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, "server shutting down".into(), "en".into())
                    .await;
            }
        }
    });
}
