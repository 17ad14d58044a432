//! The agent gateway: the SSH server agents dial. It authenticates agents by their SSH key,
//! offers them exactly one thing — the `postern-control` subsystem — and refuses the rest.

mod control;
mod enrolling;
mod handler;
pub mod limits;
mod link;
mod sever;

pub use sever::Cut;

use std::sync::Arc;
use std::time::Duration;

use russh::MethodKind;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::RunningSession;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::limits::{Admission, ControlUp, Handshakes};
use crate::agents::Agents;
use crate::cluster::Cluster;
use crate::events::EventBus;
use crate::sessions::Sessions;
use crate::store::Store;

/// What every agent connection shares.
pub struct Gateway {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) agents: Arc<Agents>,
    pub(crate) events: Arc<EventBus>,
    pub(crate) sessions: Arc<Sessions>,
    /// Records the links this node holds, for the other nodes.
    pub(crate) cluster: Arc<Cluster>,
    /// SHA-256 fingerprint of our host key; agents sign over it at enrollment.
    pub(crate) host_key_fingerprint: String,
    /// How many connections enroll at once (`enrolling.rs`).
    pub(crate) enrolling: enrolling::EnrollGate,
}

impl Gateway {
    pub fn new(
        store: Arc<dyn Store>,
        agents: Arc<Agents>,
        events: Arc<EventBus>,
        sessions: Arc<Sessions>,
        cluster: Arc<Cluster>,
        host_key_fingerprint: String,
    ) -> Self {
        Self {
            store,
            agents,
            events,
            sessions,
            cluster,
            host_key_fingerprint,
            enrolling: enrolling::EnrollGate::default(),
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
    handshakes: Arc<Handshakes>,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) {
    let config = russh::server::Config {
        keys: vec![host_key],
        methods: (&[MethodKind::PublicKey][..]).into(),
        // Dead links are found by keepalives (3 unanswered → closed), not by silence:
        // an idle agent is a healthy agent. The stages before the control channel have a
        // deadline of their own (`connection`).
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
        // Over the limits: closed at once, before it costs more than this accept.
        let Ok(admission) = handshakes.admit(peer.ip()) else {
            drop(socket);
            continue;
        };
        let deadline = Instant::now() + handshakes.config().timeout;
        let (up, up_rx) = ControlUp::new(deadline, crate::clock::now_ms());
        let handler = handler::AgentConnection::new(gateway.clone(), Some(peer), up);
        let pre_control = PreControl {
            admission,
            deadline,
            up: up_rx,
        };
        tokio::spawn(connection(
            config.clone(),
            socket,
            handler,
            pre_control,
            shutdown.clone(),
        ));
    }
}

/// What a connection holds until its control channel is up.
struct PreControl {
    /// Counts the connection against the handshake limits until dropped.
    admission: Admission,
    deadline: Instant,
    up: oneshot::Receiver<()>,
}

/// After the deadline, the control task has this long to tell the agent why before the
/// connection is cut (`control::enroll` refuses at the deadline itself).
const CUT_GRACE: Duration = Duration::from_secs(1);

/// One agent connection. The SSH handshake's future is large; it runs in this short-lived
/// task, and the connection is then watched by a small one, so that an idle link does not
/// keep the handshake's memory (what russh's own accept loop does).
async fn connection(
    config: Arc<russh::server::Config>,
    socket: tokio::net::TcpStream,
    handler: handler::AgentConnection,
    pre_control: PreControl,
    shutdown: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    // The deadline below, and the control task for a peer it drops, cut the socket (see
    // `sever`): russh itself never times out a stalled handshake.
    let cut = handler.cut().clone();
    let stream = cut.sever(socket);
    // A peer that never sends its banner: dropping the setup closes the socket.
    let setup = russh::server::run_stream(config, stream, handler);
    let session = match tokio::time::timeout_at(pre_control.deadline, setup).await {
        Ok(Ok(session)) => session,
        Ok(Err(error)) => {
            tracing::debug!(%error, "agent connection setup failed");
            return;
        }
        Err(_) => {
            tracing::debug!("agent connection sent no SSH banner in time");
            return;
        }
    };
    tokio::spawn(async move {
        let mut session = session;
        let handle = session.handle();
        let up = until_control_up(&mut session, pre_control, cut, &shutdown);
        if !Box::pin(up).await {
            return;
        }
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

/// Runs the connection until its control channel is up (true), or until it ends or misses
/// the deadline (false; it is cut then). Boxed by the caller: an idle link's task keeps none
/// of this.
async fn until_control_up(
    session: &mut RunningSession<handler::AgentConnection>,
    pre_control: PreControl,
    cut: Cut,
    shutdown: &CancellationToken,
) -> bool {
    let PreControl {
        admission,
        deadline,
        mut up,
    } = pre_control;
    // The control task may end without enrolling (a refusal it still writes out): then only
    // the deadline or the session's end is left to wait for.
    let mut waiting_for_up = true;
    let is_up = loop {
        tokio::select! {
            ended = &mut *session => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "agent connection ended before its control channel was up");
                }
                return false;
            }
            result = &mut up, if waiting_for_up => match result {
                Ok(()) => break true,
                Err(_) => waiting_for_up = false,
            },
            _ = tokio::time::sleep_until(deadline + CUT_GRACE) => break false,
            _ = shutdown.cancelled() => break false,
        }
    };
    drop(admission);
    if !is_up {
        tracing::debug!("agent connection had no control channel up by its deadline; cut");
        cut.cut();
        let _ = session.await;
    }
    is_up
}
