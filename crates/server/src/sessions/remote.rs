//! Sessions across nodes: the user's node decides and records as always (the store's
//! compare-and-set and unique index hold whichever node writes), and reaches what another
//! node holds through a node stream (`crate::peer`) — the agent's link to start a session,
//! the session's tunnel to carry its bytes, both to free them at the end. The other half,
//! here too: what this node does when another node asks.

use std::net::SocketAddr;
use std::sync::Arc;

use postern_protocol::{SessionId, SessionState};
use tokio::net::TcpStream;

use super::{ActivityGuard, SessionError, Sessions, TunnelStream};
use crate::node::NodeId;
use crate::peer::wire::{ErrorCode, Reply, Request};
use crate::peer::{self, Dialer};
use crate::store::SessionRecord;

impl Sessions {
    /// Asks the node holding the agent's link to start the stored `session`; false when no
    /// other node does (or there are no other nodes).
    pub(super) async fn start_elsewhere(&self, session: &SessionRecord) -> bool {
        match &self.peers {
            Some(peers) => peers.start(&session.agent_id, &session.id).await,
            None => false,
        }
    }

    /// The other node holding a running session's tunnel, if another node does.
    pub(super) fn tunnel_node<'a>(
        &'a self,
        session: &'a SessionRecord,
    ) -> Option<(&'a Arc<Dialer>, &'a NodeId)> {
        let peers = self.peers.as_ref()?;
        let node = session.node.as_ref().filter(|n| *n != self.node())?;
        (session.state == SessionState::Running).then_some((peers, node))
    }

    /// A stream to the session's tunnel on `node`.
    pub(super) async fn connect_elsewhere(
        &self,
        peers: &Dialer,
        node: &NodeId,
        id: &SessionId,
        originator: SocketAddr,
    ) -> Result<(TunnelStream, ActivityGuard), SessionError> {
        let unreachable = |e: peer::PeerError| SessionError::Node(e.to_string());
        let target = peers.peer(node).await.map_err(unreachable)?;
        let request = Request::Connect {
            session: id.clone(),
            originator,
        };
        let (reply, tcp) = peers.ask(&target, request).await.map_err(unreachable)?;
        match reply {
            Reply::Ok => Ok((TunnelStream::through_node(tcp), ActivityGuard::elsewhere())),
            Reply::NotHere => Err(SessionError::Node(format!(
                "node {node} no longer holds session {id}"
            ))),
            Reply::Error { code, message } => Err(match code {
                ErrorCode::NotFound => SessionError::NotFound(id.to_string()),
                ErrorCode::Channel => SessionError::Channel(message),
                ErrorCode::WrongState | ErrorCode::Internal => SessionError::Node(message),
            }),
        }
    }

    /// Tells the node holding an ended session's tunnel to free it (its agent's forward,
    /// tunnel and port). A node that cannot be reached frees them itself when it notices
    /// (its idle watch, its link's end) or is lost with them.
    pub(super) async fn release_elsewhere(&self, session: &SessionRecord) {
        let Some(peers) = &self.peers else { return };
        let Some(node) = session.node.as_ref().filter(|n| *n != self.node()) else {
            return;
        };
        let request = Request::Release {
            session: session.id.clone(),
        };
        let asked = match peers.peer(node).await {
            Ok(target) => peers.ask(&target, request).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(error) = asked {
            tracing::warn!(%error, session = %session.id, "cannot tell the session's node to free it");
        }
    }

    /// Serves another node's request, authenticated already (`peer::serve`).
    pub async fn serve_node_request(self: &Arc<Self>, request: Request, mut tcp: TcpStream) {
        let reply = match request {
            Request::Start { session } => self.start_for_node(&session).await,
            Request::Release { session } => {
                // Only for a session that has ended: a late or repeated request frees nothing
                // still in use.
                if let Ok(Some(record)) = self.lifecycle.find(&session).await
                    && (record.state == SessionState::Stopping || record.state.is_final())
                {
                    self.release_here(&record).await;
                }
                Reply::Ok
            }
            Request::Connect {
                session,
                originator,
            } => return self.connect_for_node(&session, originator, tcp).await,
        };
        let _ = peer::reply(&mut tcp, reply).await;
    }

    /// Another node stored `id`: start it if this node holds its agent's link.
    async fn start_for_node(self: &Arc<Self>, id: &SessionId) -> Reply {
        let session = match self.lifecycle.find(id).await {
            Ok(Some(s)) => s,
            Ok(None) => return error(ErrorCode::NotFound, format!("no session {id}")),
            Err(e) => return error(ErrorCode::Internal, e.to_string()),
        };
        if !self.runtime.is_online(&session.agent_id) {
            return Reply::NotHere;
        }
        if session.state != SessionState::Requested {
            return error(
                ErrorCode::WrongState,
                format!("session {id} is {}, not requested", session.state),
            );
        }
        self.start_here(&session);
        Reply::Ok
    }

    /// Splices another node's stream to a new channel of the tunnel this node holds, until
    /// either side ends, the session stops or this node does.
    async fn connect_for_node(&self, id: &SessionId, originator: SocketAddr, mut tcp: TcpStream) {
        let Some(tunnel) = self.runtime.tunnel(id) else {
            let _ = peer::reply(
                &mut tcp,
                error(
                    ErrorCode::WrongState,
                    format!("session {id} has no tunnel here"),
                ),
            )
            .await;
            return;
        };
        let (mut channel, _open) = match tunnel.open(originator).await {
            Ok(opened) => opened,
            Err(e) => {
                let _ = peer::reply(&mut tcp, error(ErrorCode::Channel, e.to_string())).await;
                return;
            }
        };
        if peer::reply(&mut tcp, Reply::Ok).await.is_err() {
            return;
        }
        let stopping = self.runtime.stopping().clone();
        tokio::select! {
            _ = tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut channel, 64 * 1024, 64 * 1024) => {}
            _ = tunnel.stop.cancelled() => {}
            _ = stopping.cancelled() => {}
        }
    }

    /// Frees what this node holds for a session: the agent's forward, the tunnel, the port.
    pub(super) async fn release_here(&self, session: &SessionRecord) {
        self.runtime.send(
            &session.agent_id,
            postern_protocol::ServerMessage::StopSsh {
                session: session.id.clone(),
            },
        );
        self.runtime.close_tunnel(&session.id).await;
    }
}

fn error(code: ErrorCode, message: String) -> Reply {
    Reply::Error { code, message }
}
