//! SSH sessions: requests, the agent's answers, tunnel ports, stops, timeouts and restarts.
//! Every state change goes through the pure state machine in the protocol crate, is stored
//! with its time and reason, and is published on the event bus. The store decides each
//! transition by compare-and-set on the stored state, and holds "one open session per user
//! and agent": nothing here serialises writers, so any number of tasks (or nodes) may race.

mod ports;
mod reason;
mod tunnel;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_protocol::api::{EventAgent, EventKind, SessionStep, SessionView};
use postern_protocol::control::SessionReply;
use postern_protocol::session::{InvalidTransition, transition};
use postern_protocol::{AgentStatus, ServerMessage, SessionEvent, SessionId, SessionState};
use russh::server::Handle;
use tokio_util::sync::CancellationToken;

use crate::auth::secret;
use crate::clock::now_ms;
use crate::config::PortRange;
use crate::events::{self, EventBus};
use crate::links::{LinkCommand, LinkRegistry};
use crate::metrics::{ForwardRefusal, Metrics};
use crate::node::NodeId;
use crate::store::{
    AgentRecord, EventRecord, SessionChange, SessionFilter, SessionInsert, SessionRecord, Store,
    StoreError, UserRecord,
};

pub use ports::PortPool;
pub use reason::EndReason;
use tunnel::{Activity, OpenTunnel, Tunnel};
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
}

pub struct Sessions {
    store: Arc<dyn Store>,
    events: Arc<EventBus>,
    links: Arc<LinkRegistry>,
    ports: PortPool,
    config: SessionConfig,
    /// This node: recorded on the sessions whose tunnels it holds.
    node: NodeId,
    /// Tunnels of running sessions.
    tunnels: Mutex<HashMap<SessionId, OpenTunnel>>,
    /// Set when the server stops (see `close`).
    closing: AtomicBool,
    metrics: Metrics,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        events: Arc<EventBus>,
        links: Arc<LinkRegistry>,
        config: SessionConfig,
        node: NodeId,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            ports: PortPool::new(config.bind, config.ports),
            store,
            events,
            links,
            config,
            node,
            tunnels: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            metrics,
        })
    }

    fn tunnels(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, OpenTunnel>> {
        self.tunnels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a start: nothing this node held before can still be running. Only this node's
    /// sessions: another node's are its own (or, once it is lost, its survivors').
    pub async fn recover(&self) -> Result<(), SessionError> {
        let decide =
            |state: SessionState| (!state.is_final()).then_some(SessionEvent::ServerRestarted);
        for session in self.store.unfinished_sessions(&self.node).await? {
            self.apply_decided(&session.id, decide, "system", None)
                .await?;
        }
        Ok(())
    }

    /// Before the server stops: links closing from now on are not "link lost". The sessions
    /// they carried end at the next start, as after a crash, with `server restarted`.
    pub async fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        let open: Vec<OpenTunnel> = self.tunnels().drain().map(|(_, t)| t).collect();
        for tunnel in open {
            self.ports.release(tunnel.close().await);
        }
    }

    pub async fn get(&self, id: &str) -> Result<SessionRecord, SessionError> {
        let parsed = SessionId::parse(id).ok_or_else(|| SessionError::NotFound(id.to_owned()))?;
        self.store
            .session(&parsed)
            .await?
            .ok_or_else(|| SessionError::NotFound(id.to_owned()))
    }

    pub async fn list(&self, filter: &SessionFilter) -> Result<Vec<SessionRecord>, SessionError> {
        Ok(self.store.list_sessions(filter).await?)
    }

    pub async fn view(
        &self,
        session: SessionRecord,
        with_history: bool,
    ) -> Result<SessionView, SessionError> {
        let agent = self.store.agent_by_id(&session.agent_id).await?;
        let history = if with_history {
            self.store
                .session_history(&session.id)
                .await?
                .into_iter()
                .map(|t| SessionStep {
                    state: t.state,
                    reason: t.reason,
                    time: t.time,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(SessionView {
            agent: EventAgent {
                id: session.agent_id.clone(),
                name: agent.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
                did: agent.map(|a| a.did).unwrap_or_default(),
            },
            port: session
                .port
                .filter(|_| session.state == SessionState::Running),
            id: session.id,
            user: session.user_name,
            state: session.state,
            reason: session.reason,
            created_at: session.created_at,
            updated_at: session.updated_at,
            ended_at: session.ended_at,
            history,
        })
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
        let session = loop {
            let now = now_ms();
            let session = SessionRecord {
                id: SessionId::parse(&secret::new_id())
                    .ok_or_else(|| SessionError::NotFound("new session id".into()))?,
                agent_id: agent.id.clone(),
                user_id: user.id.clone(),
                user_name: user.name.clone(),
                state: SessionState::Requested,
                port: None,
                reason: None,
                created_at: now,
                updated_at: now,
                ended_at: None,
                node: Some(self.node.clone()),
            };
            let event = self.event(&session, Some(agent), &user.name, "requested");
            match self.store.insert_session(&session, &event).await? {
                SessionInsert::Inserted { event: id } => {
                    self.metrics
                        .session_entered(SessionState::Requested, None, now, now);
                    self.events.announce(EventRecord { id, event }).await;
                    break session;
                }
                SessionInsert::AlreadyOpen => {
                    if let Some(open) = self.open_session(user, agent).await? {
                        return Ok((open, false));
                    }
                    // It ended between the two reads: ask again.
                }
            }
        };
        // An offline agent gets the request when its link comes back (see `link_up`).
        self.links.command(
            &agent.id,
            LinkCommand::send(ServerMessage::StartSsh {
                session: session.id.clone(),
            }),
        );
        let me = self.clone();
        let id = session.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(me.config.start_timeout).await;
            me.expire(&id).await;
        });
        Ok((session, true))
    }

    /// The user's open session on the agent, if any.
    async fn open_session(
        &self,
        user: &UserRecord,
        agent: &AgentRecord,
    ) -> Result<Option<SessionRecord>, SessionError> {
        let filter = SessionFilter {
            agent_id: Some(agent.id.clone()),
            user_id: Some(user.id.clone()),
            state: None,
            limit: 20,
        };
        Ok(self
            .store
            .list_sessions(&filter)
            .await?
            .into_iter()
            .find(|s| s.state.is_open()))
    }

    /// Fails a session still requested or starting when its time is up.
    async fn expire(&self, id: &SessionId) {
        let Ok(Some(session)) = self.store.session(id).await else {
            return;
        };
        let reason = match session.state {
            SessionState::Requested if !self.links.is_online(&session.agent_id) => {
                EndReason::AgentOffline
            }
            SessionState::Requested => EndReason::NoAnswer,
            SessionState::Starting => EndReason::NoTunnel,
            _ => return,
        };
        self.fail(id, reason).await;
    }

    /// The agent's link came up: it gets every request that waited for it.
    pub async fn link_up(&self, agent_id: &str) {
        let filter = SessionFilter {
            agent_id: Some(agent_id.to_owned()),
            state: Some(SessionState::Requested),
            ..Default::default()
        };
        let Ok(waiting) = self.store.list_sessions(&filter).await else {
            return;
        };
        for session in waiting {
            self.links.command(
                agent_id,
                LinkCommand::send(ServerMessage::StartSsh {
                    session: session.id,
                }),
            );
        }
    }

    /// The agent's link is gone: its starting and running sessions end (unless the server
    /// itself is stopping, see `close`).
    pub async fn link_down(&self, agent_id: &str) {
        if self.closing.load(Ordering::Relaxed) {
            return;
        }
        let filter = SessionFilter {
            agent_id: Some(agent_id.to_owned()),
            ..Default::default()
        };
        let Ok(sessions) = self.store.list_sessions(&filter).await else {
            return;
        };
        for s in sessions {
            if matches!(s.state, SessionState::Starting | SessionState::Running) {
                let _ = self.stop(&s.id, EndReason::LinkLost, "system").await;
            }
        }
    }

    /// Ends every unfinished session of an agent (revocation).
    pub async fn end_for_agent(&self, agent_id: &str, reason: EndReason, actor: &str) {
        let filter = SessionFilter {
            agent_id: Some(agent_id.to_owned()),
            ..Default::default()
        };
        let Ok(sessions) = self.store.list_sessions(&filter).await else {
            return;
        };
        for s in sessions.into_iter().filter(|s| s.state.is_open()) {
            let _ = self.stop(&s.id, reason.clone(), actor).await;
        }
    }

    /// Ends every unfinished session of a user (who was deleted, or may no longer start
    /// sessions).
    pub async fn end_for_user(&self, user_id: &str, reason: EndReason, actor: &str) {
        let filter = SessionFilter {
            user_id: Some(user_id.to_owned()),
            ..Default::default()
        };
        let Ok(sessions) = self.store.list_sessions(&filter).await else {
            return;
        };
        for s in sessions.into_iter().filter(|s| s.state.is_open()) {
            let _ = self.stop(&s.id, reason.clone(), actor).await;
        }
    }

    /// The agent answered `StartSsh`.
    pub async fn agent_reply(&self, agent_id: &str, id: &SessionId, reply: SessionReply) {
        let Ok(Some(session)) = self.store.session(id).await else {
            return;
        };
        if session.agent_id != agent_id {
            tracing::warn!(session = %id, "an agent answered for another agent's session");
            return;
        }
        match reply {
            SessionReply::Accepted => {
                let _ = self.accept(id).await;
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
        agent_id: &str,
        address: &str,
        handle: Handle,
    ) -> Result<u16, String> {
        self.grant_forward(agent_id, address, handle)
            .await
            .map_err(|(why, message)| {
                self.metrics.forward_refused(why);
                message
            })
    }

    async fn grant_forward(
        self: &Arc<Self>,
        agent_id: &str,
        address: &str,
        handle: Handle,
    ) -> Result<u16, (ForwardRefusal, String)> {
        let refused = |message: String| (ForwardRefusal::NotAllowed, message);
        let failed = |e: &dyn std::fmt::Display| (ForwardRefusal::Error, e.to_string());
        let id = SessionId::from_forward_address(address)
            .ok_or_else(|| refused(format!("{address:?} names no session")))?;
        let session = self
            .store
            .session(&id)
            .await
            .map_err(|e| failed(&e))?
            .ok_or_else(|| refused(format!("no session {id}")))?;
        if session.agent_id != agent_id {
            return Err(refused(format!("session {id} belongs to another agent")));
        }
        // The agent's `accepted` may still be in flight on the control channel; this
        // forward request is its acceptance all the same.
        let session = self.accept(&id).await.map_err(|e| failed(&e))?;
        if session.state != SessionState::Starting {
            return Err(refused(format!(
                "session {id} is {}, not starting",
                session.state
            )));
        }
        let Some((port, listener)) = self.ports.bind().await else {
            self.fail(&id, EndReason::NoFreePort(self.ports.range()))
                .await;
            return Err((ForwardRefusal::NoFreePort, "no free tunnel port".into()));
        };
        let tunnel = Tunnel {
            session: id.clone(),
            agent: agent_id.into(),
            port,
            handle,
            stop: CancellationToken::new(),
            activity: Activity::new(self.links.session_use(agent_id)),
            metrics: self.metrics.clone(),
        };
        // Registered (and accepting) before the transition, so that a stop racing with it
        // finds the tunnel.
        let open = OpenTunnel::start(tunnel.clone(), listener);
        self.tunnels().insert(id.clone(), open);
        if let Err(e) = self
            .apply_with_port(&id, SessionEvent::Forwarded, "agent", Some(port))
            .await
        {
            self.close_tunnel(&id).await;
            return Err(failed(&e));
        }
        tokio::spawn(self.clone().watch_idle(tunnel));
        Ok(port)
    }

    /// The agent counted the connections logged in through its session: what keeps the
    /// session from going idle (see `tunnel::Activity`). False if the session is another
    /// agent's; one that has stopped meanwhile has nothing left to keep alive.
    pub fn logins(&self, agent_id: &str, id: &SessionId, count: u32) -> bool {
        match self.tunnels().get(id) {
            Some(open) if *open.tunnel.agent != *agent_id => false,
            Some(open) => {
                open.tunnel.activity.logins(count);
                true
            }
            None => true,
        }
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
                    let _ = self.stop(&tunnel.session, EndReason::IdleTimeout, "system").await;
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
    /// Opens a stream to the agent's SSH server through a running session (the data path).
    pub async fn open_stream(
        &self,
        id: &SessionId,
        originator: SocketAddr,
    ) -> Result<(TunnelStream, ActivityGuard), SessionError> {
        let tunnel = self.tunnels().get(id).map(|open| open.tunnel.clone());
        let Some(tunnel) = tunnel else {
            let state = self
                .store
                .session(id)
                .await?
                .map(|s| s.state)
                .ok_or_else(|| SessionError::NotFound(id.to_string()))?;
            return Err(SessionError::WrongState {
                id: id.clone(),
                state,
                what: "only a running session carries data",
            });
        };
        tunnel
            .open(originator)
            .await
            .map_err(|e| SessionError::Channel(e.to_string()))
    }

    /// Orderly end: stopping, tunnel and port freed, stopped.
    pub async fn stop(
        &self,
        id: &SessionId,
        reason: EndReason,
        actor: &str,
    ) -> Result<SessionRecord, SessionError> {
        let session = self
            .apply(id, SessionEvent::Stop(reason.to_string()), actor)
            .await?;
        self.release(&session).await;
        self.apply(id, SessionEvent::Released, actor).await
    }

    async fn fail(&self, id: &SessionId, reason: EndReason) {
        if let Ok(session) = self
            .apply(id, SessionEvent::Fail(reason.to_string()), "system")
            .await
        {
            self.release(&session).await;
        }
    }

    /// Frees what a session holds: the agent drops its forward, our tunnel and port go.
    async fn release(&self, session: &SessionRecord) {
        self.links.command(
            &session.agent_id,
            LinkCommand::send(ServerMessage::StopSsh {
                session: session.id.clone(),
            }),
        );
        self.close_tunnel(&session.id).await;
    }

    /// Closes a session's tunnel, if it has one, and only then hands its port back.
    async fn close_tunnel(&self, id: &SessionId) {
        let open = self.tunnels().remove(id);
        if let Some(open) = open {
            self.ports.release(open.close().await);
        }
    }

    async fn apply(
        &self,
        id: &SessionId,
        event: SessionEvent,
        actor: &str,
    ) -> Result<SessionRecord, SessionError> {
        self.apply_with_port(id, event, actor, None).await
    }

    async fn apply_with_port(
        &self,
        id: &SessionId,
        event: SessionEvent,
        actor: &str,
        port: Option<u16>,
    ) -> Result<SessionRecord, SessionError> {
        self.apply_decided(id, |_| Some(event.clone()), actor, port)
            .await
    }

    /// The agent accepted, by its reply or by its forward request, whichever comes first:
    /// a requested session starts; any other is left as it is.
    async fn accept(&self, id: &SessionId) -> Result<SessionRecord, SessionError> {
        let decide = |state| (state == SessionState::Requested).then_some(SessionEvent::Accepted);
        self.apply_decided(id, decide, "agent", None).await
    }

    /// Applies the event `decide` picks for the session's current state (none: unchanged).
    /// The store applies it only if the state is still the one decided on; when another
    /// writer moved the session first, the decision is made again on the state it left.
    /// This ends: every session takes a few transitions at most (the state machine has no
    /// cycle), and each lost race means one of them happened.
    async fn apply_decided(
        &self,
        id: &SessionId,
        decide: impl Fn(SessionState) -> Option<SessionEvent>,
        actor: &str,
        port: Option<u16>,
    ) -> Result<SessionRecord, SessionError> {
        loop {
            let mut session = self
                .store
                .session(id)
                .await?
                .ok_or_else(|| SessionError::NotFound(id.to_string()))?;
            let Some(event) = decide(session.state) else {
                return Ok(session);
            };
            let step = transition(session.state, &event)?;
            let from = session.state;
            let now = now_ms();
            session.state = step.to;
            session.updated_at = now;
            if step.to.is_final() {
                session.ended_at = Some(now);
            }
            if let Some(p) = port {
                session.port = Some(p);
                // Binding the tunnel makes this node the session's holder.
                session.node = Some(self.node.clone());
            }
            if step.reason.is_some() {
                session.reason = step.reason.clone();
            }
            let detail = match (&step.reason, port) {
                (Some(reason), _) => format!("{}: {reason}", step.to),
                (None, Some(port)) => format!("{} on port {port}", step.to),
                (None, None) => step.to.to_string(),
            };
            let agent = self.store.agent_by_id(&session.agent_id).await?;
            let event = self.event(&session, agent.as_ref(), actor, &detail);
            let cas = SessionChange {
                id,
                from,
                to: step.to,
                reason: step.reason.as_deref(),
                port,
                node: port.map(|_| &self.node),
                time: now,
            };
            let Some(event_id) = self.store.transition_session(&cas, &event).await? else {
                continue;
            };
            // Counted once, by the writer whose change the store took.
            self.metrics.session_entered(
                step.to,
                session.reason.as_deref(),
                session.created_at,
                now,
            );
            self.events
                .announce(EventRecord {
                    id: event_id,
                    event,
                })
                .await;
            tracing::info!(session = %id, state = %step.to, reason = ?step.reason, "session");
            return Ok(session);
        }
    }

    /// This node, recorded on the sessions it holds.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Tunnel ports held now, and how many the range has.
    pub fn tunnel_ports(&self) -> (usize, usize) {
        (self.ports.in_use(), self.ports.range().len())
    }

    /// The event that records a session's new state.
    fn event(
        &self,
        session: &SessionRecord,
        agent: Option<&AgentRecord>,
        actor: &str,
        detail: &str,
    ) -> crate::store::NewEvent {
        events::new_event(
            EventKind::SessionState,
            actor,
            agent,
            Some((session.id.clone(), session.state)),
            format!("SSH {detail} (user {})", session.user_name),
        )
    }
}
