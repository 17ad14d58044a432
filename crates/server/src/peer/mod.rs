//! The node-to-node stream: how the node a user talks to reaches what another node holds —
//! the agent's link (to start a session) and a running session's tunnel (to carry its
//! bytes). See docs/ARCHITECTURE.md, "Across nodes".
//!
//! Each node may listen on a node address (`--node-listen`, recorded in its `nodes` row).
//! A stream is authenticated both ways before anything else (`wire`: HMAC challenge–response
//! with the cluster's node secret, kept in the store); then it carries one request and its
//! reply, and for `connect` the raw bytes of the user's SSH connection to the agent. Those
//! bytes are SSH end to end (user to agent), so the stream is not encrypted; it must only be
//! authentic, which the proofs give it. What each request does is the sessions' use case
//! (`Sessions::serve_node_request`); this module only dials, listens and translates.

mod directory;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_protocol::{AgentId, SessionId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use directory::{Directory, Peer, StoreDirectory};
use wire::{Frame, Reply, Request, Side, Transcript, WireError};

use crate::node::NodeId;
use crate::sessions::Sessions;

/// The longest a stream may take to be authenticated and send its request (listener), or
/// to connect, be authenticated and be answered (dialer). Nodes are on one network: a
/// second is slow; five covers a loaded machine without letting silent streams linger.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Streams still in their handshake at once; more are closed at accept. Legitimate ones come
/// from a handful of nodes and finish in a round trip, so this bounds only what a stranger
/// can hold open.
pub const MAX_PENDING: usize = 64;

/// The name of the node secret in the store's cluster keys.
pub const SECRET_KEY: &str = "node_secret";

/// The secret all nodes share (from the store), which keys the proofs.
#[derive(Clone)]
pub struct NodeSecret(Arc<[u8]>);

impl NodeSecret {
    pub fn new(secret: &str) -> Self {
        Self(secret.as_bytes().into())
    }

    /// A fresh candidate for the store (256 random bits in hex).
    pub fn candidate() -> String {
        crate::auth::secret::new_id() + &crate::auth::secret::new_id()
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("node {node} at {address}: {source}")]
    Wire {
        node: NodeId,
        address: SocketAddr,
        source: WireError,
    },
    #[error("node {node} at {address} did not answer within {HANDSHAKE_TIMEOUT:?}")]
    Timeout { node: NodeId, address: SocketAddr },
    #[error("node {node} at {address} is another node ({actual})")]
    WrongNode {
        node: NodeId,
        address: SocketAddr,
        actual: String,
    },
    #[error("node {0} has no node address (is it down, or without --node-listen?)")]
    NoAddress(NodeId),
    #[error("cannot look the node up: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// This node's side as a dialer: opens authenticated streams to other nodes.
pub struct Dialer {
    me: NodeId,
    secret: NodeSecret,
    directory: Arc<dyn Directory>,
}

impl Dialer {
    pub fn new(me: NodeId, secret: NodeSecret, directory: Arc<dyn Directory>) -> Arc<Self> {
        Arc::new(Self {
            me,
            secret,
            directory,
        })
    }

    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    /// Sends `request` to `peer` and returns its reply and the stream (raw bytes follow an
    /// `Ok` to `connect`).
    pub async fn ask(
        &self,
        peer: &Peer,
        request: Request,
    ) -> Result<(Reply, TcpStream), PeerError> {
        let wire = |source| PeerError::Wire {
            node: peer.node.clone(),
            address: peer.address,
            source,
        };
        let exchange = async {
            let mut tcp = TcpStream::connect(peer.address)
                .await
                .map_err(|e| wire(e.into()))?;
            let _ = tcp.set_nodelay(true);
            self.authenticate(&mut tcp, peer).await?;
            wire::write_frame(&mut tcp, &Frame::Request(request))
                .await
                .map_err(wire)?;
            let reply = wire::expect(&mut tcp, "reply", |f| match f {
                Frame::Reply(r) => Ok(r),
                other => Err(other),
            })
            .await
            .map_err(wire)?;
            Ok((reply, tcp))
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
            .await
            .map_err(|_| PeerError::Timeout {
                node: peer.node.clone(),
                address: peer.address,
            })?
    }

    async fn authenticate(&self, tcp: &mut TcpStream, peer: &Peer) -> Result<(), PeerError> {
        let wire = |source| PeerError::Wire {
            node: peer.node.clone(),
            address: peer.address,
            source,
        };
        let (listener, listener_nonce) = wire::expect(tcp, "challenge", |f| match f {
            Frame::Challenge { node, nonce } => Ok((node, nonce)),
            other => Err(other),
        })
        .await
        .map_err(wire)?;
        if listener != peer.node.as_str() {
            return Err(PeerError::WrongNode {
                node: peer.node.clone(),
                address: peer.address,
                actual: listener,
            });
        }
        let dialer_nonce = wire::nonce().map_err(wire)?;
        let transcript = Transcript {
            listener: &listener,
            listener_nonce: &listener_nonce,
            dialer: self.me.as_str(),
            dialer_nonce: &dialer_nonce,
        };
        let mac = transcript
            .prove(self.secret.bytes(), Side::Dialer)
            .map_err(wire)?;
        wire::write_frame(
            tcp,
            &Frame::Proof {
                node: self.me.to_string(),
                nonce: dialer_nonce.clone(),
                mac,
            },
        )
        .await
        .map_err(wire)?;
        let theirs = wire::expect(tcp, "proof", |f| match f {
            Frame::Proof { mac, .. } => Ok(mac),
            other => Err(other),
        })
        .await
        .map_err(wire)?;
        transcript
            .verify(self.secret.bytes(), Side::Listener, &theirs)
            .map_err(wire)
    }

    /// Where `node` takes node streams.
    pub async fn peer(&self, node: &NodeId) -> Result<Peer, PeerError> {
        let address = self
            .directory
            .address(node)
            .await?
            .ok_or_else(|| PeerError::NoAddress(node.clone()))?;
        Ok(Peer {
            node: node.clone(),
            address,
        })
    }

    /// Asks the nodes that may hold `agent_id`'s link to start `session`; true once one did.
    pub async fn start(&self, agent_id: &AgentId, session: &SessionId) -> bool {
        let candidates = match self.directory.link_candidates(&self.me, agent_id).await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, %session, "cannot find the node of the agent's link");
                return false;
            }
        };
        for peer in candidates {
            let request = Request::Start {
                session: session.clone(),
            };
            match self.ask(&peer, request).await {
                Ok((Reply::Ok, _)) => return true,
                Ok((Reply::NotHere, _)) => {}
                Ok((Reply::Error { message, .. }, _)) => {
                    tracing::warn!(node = %peer.node, %session, %message, "a node could not start a session");
                }
                Err(error) => {
                    tracing::warn!(%error, %session, "cannot ask a node to start a session")
                }
            }
        }
        false
    }
}

/// This node's side as a listener: who it is, the secret, and what serves requests.
pub struct Listening {
    pub me: NodeId,
    pub secret: NodeSecret,
    pub sessions: Arc<Sessions>,
}

/// Accepts node streams until `stop`; each is authenticated, then served by the sessions.
pub async fn serve(listener: TcpListener, node: Listening, stop: CancellationToken) {
    let node = Arc::new(node);
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    loop {
        let (tcp, from) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "node listener accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        _ = stop.cancelled() => return,
                    }
                }
            },
            _ = stop.cancelled() => return,
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%from, limit = MAX_PENDING, "node stream refused: too many in their handshake");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let node2 = node.clone();
        let stopping = stop.clone();
        node.sessions.spawn(async move {
            let accepted = tokio::select! {
                a = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept(tcp, &node2)) => a,
                _ = stopping.cancelled() => return,
            };
            drop(permit);
            match accepted {
                Ok(Ok((tcp, request))) => {
                    node2.sessions.serve_node_request(request, tcp).await;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%from, %error, "node stream refused");
                }
                Err(_) => {
                    tracing::warn!(%from, "node stream refused: no proof and request within {HANDSHAKE_TIMEOUT:?}");
                }
            }
        });
    }
}

/// The listener's handshake: challenge, check the dialer's proof, prove, read the request.
async fn accept(mut tcp: TcpStream, node: &Listening) -> Result<(TcpStream, Request), WireError> {
    let listener_nonce = wire::nonce()?;
    wire::write_frame(
        &mut tcp,
        &Frame::Challenge {
            node: node.me.to_string(),
            nonce: listener_nonce.clone(),
        },
    )
    .await?;
    let (dialer, dialer_nonce, mac) = wire::expect(&mut tcp, "proof", |f| match f {
        Frame::Proof { node, nonce, mac } => Ok((node, nonce, mac)),
        other => Err(other),
    })
    .await?;
    let transcript = Transcript {
        listener: node.me.as_str(),
        listener_nonce: &listener_nonce,
        dialer: &dialer,
        dialer_nonce: &dialer_nonce,
    };
    transcript.verify(node.secret.bytes(), Side::Dialer, &mac)?;
    let ours = transcript.prove(node.secret.bytes(), Side::Listener)?;
    wire::write_frame(
        &mut tcp,
        &Frame::Proof {
            node: String::new(),
            nonce: String::new(),
            mac: ours,
        },
    )
    .await?;
    let request = wire::expect(&mut tcp, "request", |f| match f {
        Frame::Request(r) => Ok(r),
        other => Err(other),
    })
    .await?;
    tracing::debug!(%dialer, ?request, "node request");
    Ok((tcp, request))
}

/// Sends the reply to a request.
pub async fn reply(tcp: &mut TcpStream, reply: Reply) -> Result<(), WireError> {
    wire::write_frame(tcp, &Frame::Reply(reply)).await
}
