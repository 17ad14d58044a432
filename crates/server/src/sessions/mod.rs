//! SSH sessions: requests, the agent's answers, tunnel ports, stops, timeouts and restarts.
//! Every state change goes through the pure state machine in the protocol crate, is stored
//! with its time and reason, and is published on the event bus. The store decides each
//! transition by compare-and-set on the stored state, and holds "one open session per user
//! and agent": nothing here serialises writers, so any number of tasks (or nodes) may race.
//!
//! Two halves, joined here: `lifecycle` (the durable state, no transport) and `runtime` (what
//! this node holds: links, tunnels, ports, tasks). `Sessions` runs each use case across both.

mod detach;
mod lifecycle;
mod ports;
mod reason;
mod remote;
mod runtime;
#[cfg(test)]
mod tests;
mod tunnel;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use postern_protocol::api::SessionView;
use postern_protocol::control::SessionReply;
use postern_protocol::session::InvalidTransition;
use postern_protocol::{
    AgentId, AgentStatus, ServerMessage, SessionEvent, SessionId, SessionState,
};
use russh::server::Handle;

use crate::config::PortRange;
use crate::events::EventBus;
use crate::links::LinkRegistry;
use crate::metrics::{ForwardRefusal, Metrics};
use crate::node::NodeId;
use crate::peer::Dialer;
use crate::store::{
    Actor, AgentRecord, SessionFilter, SessionRecord, Store, StoreError, UserId, UserRecord,
};

pub use detach::LinkEnd;
use lifecycle::Lifecycle;
pub use lifecycle::LostSessions;
pub use ports::PortPool;
pub use reason::EndReason;
use runtime::NodeRuntime;
use tunnel::Tunnel;
pub use tunnel::{ActivityGuard, TunnelStream};

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub ports: PortRange,
    pub bind: IpAddr,
    pub start_timeout: Duration,
    pub idle_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no session {0}")]
    NotFound(String),
    #[error("agent {0} is not approved; SSH needs an approved agent")]
    AgentNotApproved(String),
    #[error("session {id} is {state}; {what}")]
    WrongState {
        id: SessionId,
        state: SessionState,
        what: &'static str,
    },
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    #[error("the agent did not open a channel: {0}")]
    Channel(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the node holding the session cannot be reached: {0}")]
    Node(String),
}

pub struct Sessions {
    lifecycle: Lifecycle,
    runtime: NodeRuntime,
    config: SessionConfig,
    /// Reaches what other nodes hold (agents' links, tunnels); `None` with one node.
    peers: Option<Arc<Dialer>>,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        events: Arc<EventBus>,
        links: Arc<LinkRegistry>,
        config: SessionConfig,
        node: NodeId,
        metrics: Metrics,
        peers: Option<Arc<Dialer>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            lifecycle: Lifecycle::new(store, events, node, metrics.clone()),
            runtime: NodeRuntime::new(links, PortPool::new(config.bind, config.ports), metrics),
            config,
            peers,
        })
    }

    /// This node, recorded on the sessions it holds.
    pub fn node(&self) -> &NodeId {
        self.lifecycle.node()
    }

    /// Tunnel ports held now, and how many the range has.
    pub fn tunnel_ports(&self) -> (usize, usize) {
        self.runtime.tunnel_ports()
    }

    /// After a start: nothing this node held before can still be running. Running ones
    /// detach (their agent may keep their shells), the rest end with `server restarted`.
    pub async fn recover(self: &Arc<Self>) -> Result<(), SessionError> {
        self.lifecycle.recover().await?;
        let filter = SessionFilter {
            state: Some(SessionState::Detached),
            limit: u32::MAX,
            ..Default::default()
        };
        for s in self.lifecycle.list(&filter).await? {
            self.clone().watch_detached(s.id);
        }
        Ok(())
    }

    /// Detaches or ends the sessions of a node that was lost (see `Lifecycle::end_lost_node`).
    pub async fn end_lost_node(&self, lost: &NodeId) -> Result<LostSessions, SessionError> {
        self.lifecycle.end_lost_node(lost).await
    }

    /// Before the server stops: links closing from now on are not "link lost". The sessions
    /// they carried are decided at the next start, as after a crash (see `recover`). Every
    /// tunnel closes, and every task of the sessions is told to end (see `wait`).
    pub async fn close(&self) {
        self.runtime.close().await;
    }

    /// Waits for the sessions' tasks to end, after `close` and once the links are closed.
    pub async fn wait(&self) {
        self.runtime.wait().await;
    }

    /// Runs a task of this node that ends when the server stops (`stopping` is cancelled).
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }

    /// Cancelled when the server stops.
    pub fn stopping(&self) -> tokio_util::sync::CancellationToken {
        self.runtime.stopping().clone()
    }

    pub async fn get(&self, id: &str) -> Result<SessionRecord, SessionError> {
        self.lifecycle.get(id).await
    }

    pub async fn list(&self, filter: &SessionFilter) -> Result<Vec<SessionRecord>, SessionError> {
        self.lifecycle.list(filter).await
    }

    pub async fn view(
        &self,
        session: SessionRecord,
        with_history: bool,
    ) -> Result<SessionView, SessionError> {
        self.lifecycle.view(session, with_history).await
    }

    /// Starts a session for `user` on `agent`, or returns the one already open.
    pub async fn request(
        self: &Arc<Self>,
        user: &UserRecord,
        agent: &AgentRecord,
    ) -> Result<(SessionRecord, bool), SessionError> {
        if agent.status != AgentStatus::Approved {
            return Err(SessionError::AgentNotApproved(agent.name.clone()));
        }
        let (session, created) = self.lifecycle.create(user, agent).await?;
        if !created {
            return Ok((session, false));
        }
        // The node holding the agent's link sends `start_ssh` and times the start; when no
        // node does, the agent is offline here as everywhere: this node times it.
        if self.runtime.is_online(&agent.id) || !self.start_elsewhere(&session).await {
            self.start_here(&session);
        }
        Ok((session, true))
    }

    /// Sends `start_ssh` on the agent's link if this node holds it (else the agent gets it
    /// when its link comes back, see `link_up`), and fails the session if it is not running
    /// in time.
    fn start_here(self: &Arc<Self>, session: &SessionRecord) {
        self.runtime.send(
            &session.agent_id,
            ServerMessage::StartSsh {
                session: session.id.clone(),
            },
        );
        let me = self.clone();
        let id = session.id.clone();
        let stopping = self.runtime.stopping().clone();
        self.runtime.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(me.config.start_timeout) => me.expire(&id).await,
                // A request still open at a stop ends at the next start, as after a crash.
                _ = stopping.cancelled() => {}
            }
        });
    }

    /// Fails a session still requested or starting when its time is up.
    async fn expire(&self, id: &SessionId) {
        let Ok(Some(session)) = self.lifecycle.find(id).await else {
            return;
        };
        let reason = match session.state {
            SessionState::Requested if !self.runtime.is_online(&session.agent_id) => {
                EndReason::AgentOffline
            }
            SessionState::Requested => EndReason::NoAnswer,
            SessionState::Starting => EndReason::NoTunnel,
            _ => return,
        };
        self.fail(id, reason).await;
    }

    /// The agent's link came up: it gets every request that waited for it.
    pub async fn link_up(&self, agent_id: &AgentId) {
        let filter = SessionFilter {
            agent_id: Some(agent_id.clone()),
            state: Some(SessionState::Requested),
            ..Default::default()
        };
        let Ok(waiting) = self.lifecycle.list(&filter).await else {
            return;
        };
        for session in waiting {
            self.runtime.send(
                agent_id,
                ServerMessage::StartSsh {
                    session: session.id,
                },
            );
        }
    }

    /// Ends every unfinished session of an agent (revocation).
    pub async fn end_for_agent(&self, agent_id: &AgentId, reason: EndReason, actor: &Actor) {
        self.end_open(
            SessionFilter {
                agent_id: Some(agent_id.clone()),
                ..Default::default()
            },
            reason,
            actor,
        )
        .await;
    }

    /// Ends every unfinished session of a user (who was deleted, or may no longer start
    /// sessions).
    pub async fn end_for_user(&self, user_id: &UserId, reason: EndReason, actor: &Actor) {
        self.end_open(
            SessionFilter {
                user_id: Some(user_id.to_owned()),
                ..Default::default()
            },
            reason,
            actor,
        )
        .await;
    }

    async fn end_open(&self, filter: SessionFilter, reason: EndReason, actor: &Actor) {
        let Ok(sessions) = self.lifecycle.open_sessions(filter).await else {
            return;
        };
        for s in sessions {
            let _ = self.stop(&s.id, reason.clone(), actor).await;
        }
    }

    /// The agent answered `StartSsh`.
    pub async fn agent_reply(&self, agent_id: &AgentId, id: &SessionId, reply: SessionReply) {
        let Ok(Some(session)) = self.lifecycle.find(id).await else {
            return;
        };
        if session.agent_id != *agent_id {
            tracing::warn!(session = %id, "an agent answered for another agent's session");
            return;
        }
        match reply {
            SessionReply::Accepted => {
                let _ = self.lifecycle.accept(id).await;
            }
            SessionReply::Refused { reason } => {
                self.fail(id, EndReason::Refused(reason)).await;
            }
        }
    }

    /// The agent asks for its session's `tcpip-forward`: bind a port and run the tunnel.
    /// Refused (`Err`) for anything but a starting session of this very agent.
    pub async fn forward(
        self: &Arc<Self>,
        agent_id: &AgentId,
        address: &str,
        handle: Handle,
    ) -> Result<u16, String> {
        self.grant_forward(agent_id, address, handle)
            .await
            .map_err(|(why, message)| {
                self.runtime.metrics().forward_refused(why);
                message
            })
    }

    async fn grant_forward(
        self: &Arc<Self>,
        agent_id: &AgentId,
        address: &str,
        handle: Handle,
    ) -> Result<u16, (ForwardRefusal, String)> {
        let refused = |message: String| (ForwardRefusal::NotAllowed, message);
        let failed = |e: &dyn std::fmt::Display| (ForwardRefusal::Error, e.to_string());
        let id = SessionId::from_forward_address(address)
            .ok_or_else(|| refused(format!("{address:?} names no session")))?;
        let session = self
            .lifecycle
            .find(&id)
            .await
            .map_err(|e| failed(&e))?
            .ok_or_else(|| refused(format!("no session {id}")))?;
        if session.agent_id != *agent_id {
            return Err(refused(format!("session {id} belongs to another agent")));
        }
        // The agent's `accepted` may still be in flight on the control channel; this
        // forward request is its acceptance all the same.
        let session = self.lifecycle.accept(&id).await.map_err(|e| failed(&e))?;
        // Starting, or detached and resumed (see `detach`): either runs on a new tunnel.
        if !matches!(
            session.state,
            SessionState::Starting | SessionState::Detached
        ) {
            return Err(refused(format!(
                "session {id} is {}, not starting",
                session.state
            )));
        }
        // Registered (and accepting) before the transition, so that a stop racing with it
        // finds the tunnel.
        let Some(tunnel) = self.runtime.open_tunnel(&id, agent_id, handle).await else {
            self.fail(&id, EndReason::NoFreePort(self.runtime.port_range()))
                .await;
            return Err((ForwardRefusal::NoFreePort, "no free tunnel port".into()));
        };
        let port = tunnel.port;
        if let Err(e) = self
            .lifecycle
            .apply_with_port(&id, SessionEvent::Forwarded, &Actor::Agent, Some(port))
            .await
        {
            self.runtime.close_tunnel(&id).await;
            return Err(failed(&e));
        }
        self.runtime.spawn(self.clone().watch_idle(tunnel));
        Ok(port)
    }

    /// The agent counted the connections logged in through its session: what keeps the
    /// session from going idle (see `tunnel::Activity`). False if the session is another
    /// agent's; one that has stopped meanwhile has nothing left to keep alive.
    pub fn logins(&self, agent_id: &AgentId, id: &SessionId, count: u32) -> bool {
        self.runtime.logins(agent_id, id, count)
    }

    /// Stops the session once nothing has used it for the idle timeout.
    async fn watch_idle(self: Arc<Self>, tunnel: Tunnel) {
        let mut open = tunnel.activity.subscribe();
        loop {
            tokio::select! {
                _ = tunnel.stop.cancelled() => return,
                _ = wait_count(&mut open, |n| n == 0) => {}
            }
            tokio::select! {
                _ = tunnel.stop.cancelled() => return,
                _ = wait_count(&mut open, |n| n > 0) => continue,
                _ = tokio::time::sleep(self.config.idle_timeout) => {
                    let _ = self.stop(&tunnel.session, EndReason::IdleTimeout, &Actor::System).await;
                    return;
                }
            }
        }
    }
}

async fn wait_count(
    rx: &mut tokio::sync::watch::Receiver<usize>,
    pred: impl Fn(usize) -> bool,
) -> bool {
    rx.wait_for(|n| pred(*n)).await.is_ok()
}

impl Sessions {
    /// Opens a stream to the agent's SSH server through a running session (the data path):
    /// a channel of its tunnel here, or a node stream to the node that holds the tunnel.
    pub async fn open_stream(
        &self,
        id: &SessionId,
        originator: SocketAddr,
    ) -> Result<(TunnelStream, ActivityGuard), SessionError> {
        if let Some(tunnel) = self.runtime.tunnel(id) {
            return tunnel
                .open(originator)
                .await
                .map_err(|e| SessionError::Channel(e.to_string()));
        }
        let session = self
            .lifecycle
            .find(id)
            .await?
            .ok_or_else(|| SessionError::NotFound(id.to_string()))?;
        match self.tunnel_node(&session) {
            Some((peers, node)) => self.connect_elsewhere(peers, node, id, originator).await,
            None => Err(SessionError::WrongState {
                id: id.clone(),
                state: session.state,
                what: "only a running session carries data",
            }),
        }
    }

    /// Orderly end: stopping, tunnel and port freed, stopped.
    pub async fn stop(
        &self,
        id: &SessionId,
        reason: EndReason,
        actor: &Actor,
    ) -> Result<SessionRecord, SessionError> {
        let session = self.lifecycle.stop(id, &reason, actor).await?;
        self.release(&session).await;
        self.lifecycle
            .apply(id, SessionEvent::Released, actor)
            .await
    }

    async fn fail(&self, id: &SessionId, reason: EndReason) {
        if let Ok(session) = self.lifecycle.fail(id, &reason).await {
            self.release(&session).await;
        }
    }

    /// Frees what a session holds: the agent drops its forward, the tunnel and port go —
    /// here, and on the node holding them if that is another.
    async fn release(&self, session: &SessionRecord) {
        self.release_here(session).await;
        self.release_elsewhere(session).await;
    }
}
