//! The durable side of sessions: every transition decided by the state machine, stored by
//! compare-and-set with its history and event, and published. It knows no transport (no SSH
//! types, no sockets, no timers): what a node holds for a session is in `runtime`.

use std::sync::Arc;

use postern_protocol::api::{EventAgent, EventKind, SessionStep, SessionView};
use postern_protocol::session::{DETACHED_BY_NODE_LOSS, transition};
use postern_protocol::{AgentId, SessionEvent, SessionId, SessionState};

use super::{EndReason, SessionError};
use crate::auth::secret;
use crate::clock::now_ms;
use crate::events::{self, EventBus};
use crate::metrics::Metrics;
use crate::node::NodeId;
use crate::store::{
    Actor, AgentRecord, EventRecord, NewEvent, SessionChange, SessionFilter, SessionInsert,
    SessionRecord, Store, UserRecord,
};

/// What taking a lost node over did to its sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LostSessions {
    /// Running, their shells kept: detached, waiting for their agent.
    pub detached: usize,
    /// Ended with `node lost`.
    pub ended: usize,
}

pub struct Lifecycle {
    store: Arc<dyn Store>,
    events: Arc<EventBus>,
    /// This node: recorded on the sessions it creates and those whose tunnels it binds.
    node: NodeId,
    /// Counts every transition this node's writes make (see `apply_decided`).
    metrics: Metrics,
}

impl Lifecycle {
    pub fn new(
        store: Arc<dyn Store>,
        events: Arc<EventBus>,
        node: NodeId,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            events,
            node,
            metrics,
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Every node's events as they come (to wait for a session's next state).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<postern_protocol::api::EventView> {
        self.events.subscribe()
    }

    /// After a start: nothing this node held before can still be running. Only this node's
    /// sessions: another node's are its own (or, once it is lost, its survivors'). A running
    /// one detaches (the state machine decides); a detached one waits on as it was.
    pub async fn recover(&self) -> Result<(), SessionError> {
        let decide = |state: SessionState| {
            (!state.is_final() && state != SessionState::Detached)
                .then_some(SessionEvent::ServerRestarted)
        };
        for session in self.store.unfinished_sessions(&self.node).await? {
            self.apply_decided(&session.id, decide, &Actor::System, None)
                .await?;
        }
        Ok(())
    }

    /// Another node was lost (its heartbeat went stale and this node takes it over). Its
    /// running sessions whose shells the agent keeps detach (`node lost`): the agent links
    /// to another node and lists them, or its next link says they are gone (see `kept`). Its
    /// other open sessions end with `node lost` (nothing comes back for them), and its detached
    /// ones wait on. Only sessions that still name it — decided on the stored record, so that
    /// one a survivor resumed meanwhile is left alone — not those stored before nodes were
    /// recorded, left to the node that adopts them at its start.
    pub async fn end_lost_node(&self, lost: &NodeId) -> Result<LostSessions, SessionError> {
        let decide = |s: &SessionRecord| match s.state {
            _ if s.node.as_ref() != Some(lost) => None,
            SessionState::Running if s.shells_kept => {
                Some(SessionEvent::Detach(DETACHED_BY_NODE_LOSS.to_owned()))
            }
            SessionState::Detached => None,
            state => (!state.is_final()).then_some(SessionEvent::NodeLost),
        };
        let mut changed = LostSessions::default();
        for session in self.store.unfinished_sessions(lost).await? {
            if session.node.as_ref() != Some(lost) {
                continue;
            }
            let after = self
                .apply_decided_on(&session.id, decide, &Actor::System, None)
                .await?;
            match after.state {
                SessionState::Detached if session.state == SessionState::Running => {
                    changed.detached += 1
                }
                state if state.is_final() => changed.ended += 1,
                _ => {}
            }
        }
        Ok(changed)
    }

    /// The unfinished sessions of `node` (and those stored before nodes were recorded).
    pub async fn unfinished_of(&self, node: &NodeId) -> Result<Vec<SessionRecord>, SessionError> {
        Ok(self.store.unfinished_sessions(node).await?)
    }

    /// Records which sessions of `agent_id` the agent keeps shells for (see `end_lost_node`).
    pub async fn set_shells_kept(
        &self,
        agent_id: &AgentId,
        kept: &[SessionId],
    ) -> Result<(), SessionError> {
        Ok(self.store.set_shells_kept(agent_id, kept).await?)
    }

    pub async fn get(&self, id: &str) -> Result<SessionRecord, SessionError> {
        let parsed = SessionId::parse(id).ok_or_else(|| SessionError::NotFound(id.to_owned()))?;
        self.store
            .session(&parsed)
            .await?
            .ok_or_else(|| SessionError::NotFound(id.to_owned()))
    }

    /// The stored session, if there is one.
    pub async fn find(&self, id: &SessionId) -> Result<Option<SessionRecord>, SessionError> {
        Ok(self.store.session(id).await?)
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

    /// A new requested session for `user` on `agent` (true), or the one already open (false).
    pub async fn create(
        &self,
        user: &UserRecord,
        agent: &AgentRecord,
    ) -> Result<(SessionRecord, bool), SessionError> {
        loop {
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
                shells_kept: false,
            };
            let event = self.event(&session, Some(agent), &Actor::user(user), "requested");
            match self.store.insert_session(&session, &event).await? {
                SessionInsert::Inserted { event: id } => {
                    self.metrics
                        .session_entered(SessionState::Requested, None, now, now);
                    self.events.announce(EventRecord { id, event }).await;
                    return Ok((session, true));
                }
                SessionInsert::AlreadyOpen => {
                    if let Some(open) = self.open_session(user, agent).await? {
                        return Ok((open, false));
                    }
                    // It ended between the two reads: ask again.
                }
            }
        }
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

    /// Sessions matching `filter` that are still open.
    pub async fn open_sessions(
        &self,
        filter: SessionFilter,
    ) -> Result<Vec<SessionRecord>, SessionError> {
        Ok(self
            .list(&filter)
            .await?
            .into_iter()
            .filter(|s| s.state.is_open())
            .collect())
    }

    pub(super) async fn apply(
        &self,
        id: &SessionId,
        event: SessionEvent,
        actor: &Actor,
    ) -> Result<SessionRecord, SessionError> {
        self.apply_with_port(id, event, actor, None).await
    }

    /// Begins an orderly end: the session is stopping, for `reason`.
    pub(super) async fn stop(
        &self,
        id: &SessionId,
        reason: &EndReason,
        actor: &Actor,
    ) -> Result<SessionRecord, SessionError> {
        self.apply(id, SessionEvent::Stop(reason.to_string()), actor)
            .await
    }

    /// The session failed, for `reason`.
    pub(super) async fn fail(
        &self,
        id: &SessionId,
        reason: &EndReason,
    ) -> Result<SessionRecord, SessionError> {
        self.apply(id, SessionEvent::Fail(reason.to_string()), &Actor::System)
            .await
    }

    pub(super) async fn apply_with_port(
        &self,
        id: &SessionId,
        event: SessionEvent,
        actor: &Actor,
        port: Option<u16>,
    ) -> Result<SessionRecord, SessionError> {
        self.apply_decided(id, |_| Some(event.clone()), actor, port)
            .await
    }

    /// The agent accepted, by its reply or by its forward request, whichever comes first:
    /// a requested session starts; any other is left as it is.
    pub(super) async fn accept(&self, id: &SessionId) -> Result<SessionRecord, SessionError> {
        let decide = |state| (state == SessionState::Requested).then_some(SessionEvent::Accepted);
        self.apply_decided(id, decide, &Actor::Agent, None).await
    }

    /// Applies the event `decide` picks for the session's current state (none: unchanged).
    /// The store applies it only if the state is still the one decided on; when another
    /// writer moved the session first, the decision is made again on the state it left.
    /// This ends: every session takes a few transitions at most (the state machine has no
    /// cycle), and each lost race means one of them happened.
    pub(super) async fn apply_decided(
        &self,
        id: &SessionId,
        decide: impl Fn(SessionState) -> Option<SessionEvent>,
        actor: &Actor,
        port: Option<u16>,
    ) -> Result<SessionRecord, SessionError> {
        self.apply_decided_on(id, |s| decide(s.state), actor, port)
            .await
    }

    /// `apply_decided`, deciding on the whole stored record (its node, its kept shells).
    pub(super) async fn apply_decided_on(
        &self,
        id: &SessionId,
        decide: impl Fn(&SessionRecord) -> Option<SessionEvent>,
        actor: &Actor,
        port: Option<u16>,
    ) -> Result<SessionRecord, SessionError> {
        loop {
            let mut session = self
                .store
                .session(id)
                .await?
                .ok_or_else(|| SessionError::NotFound(id.to_string()))?;
            let Some(event) = decide(&session) else {
                return Ok(session);
            };
            let step = transition(session.state, &event)?;
            let (from, holder) = (session.state, session.node.clone());
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
                holder: holder.as_ref(),
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

    /// The event that records a session's new state.
    fn event(
        &self,
        session: &SessionRecord,
        agent: Option<&AgentRecord>,
        actor: &Actor,
        detail: &str,
    ) -> NewEvent {
        events::new_event(
            EventKind::SessionState,
            actor,
            agent,
            Some((session.id.clone(), session.state)),
            format!("SSH {detail} (user {})", session.user_name),
        )
    }
}
