//! Shells that survive: a running session whose path to the agent breaks — this node's
//! restart, or the agent's link lost — while the agent keeps its shells goes `detached`
//! instead of ending. When the agent links again (to this node or any other: the sessions are
//! in the shared store) it lists the sessions it keeps (`Kept`); each detached one it lists is
//! resumed (`Resume`: the agent forwards it again, and it runs again with a new tunnel); one
//! it does not list has lost its shells and ends; one that ended meanwhile is stopped on the
//! agent. The agent says when a session's shells outlived their grace (`GraceExpired`).
//!
//! A lost node: the node holding the agent's link records which sessions it keeps shells for
//! (`shells_kept`, from every `Kept`), so that the survivor taking a dead node over detaches
//! exactly those (`node lost`) and ends the rest at once (see `Lifecycle::end_lost_node`),
//! then owns their `DETACHED_MAX` wait (`adopt_lost_node`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use postern_protocol::session::{DETACHED_BY_NODE_LOSS, DETACHED_BY_RESTART};
use postern_protocol::{AgentId, ServerMessage, SessionEvent, SessionId, SessionState};

use tokio::sync::broadcast::error::RecvError;

use super::{EndReason, Sessions};
use crate::store::{Actor, SessionFilter, SessionRecord};

/// What the end of an agent's link on this node means for the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// It was the agent's link: the agent is offline (until it links again).
    Offline,
    /// A newer link of the agent on another node holds it (`LinkEnded::HeldBy`).
    Superseded,
}

/// Why a session detached when its agent's link went.
const LINK_LOST: &str = "agent link lost";
/// How long a session stays detached if its agent never says: longer than the longest grace
/// an agent accepts (24 h), after which no shell of it can still be alive.
const DETACHED_MAX: Duration = Duration::from_secs(25 * 3600);
/// How often `running_again` reads the session even without an event about it.
const RECHECK: Duration = Duration::from_secs(5);

impl Sessions {
    /// Ends the session if it is still detached after `DETACHED_MAX` (its agent never came
    /// back); a task of this node, so a restart starts it again (`recover`).
    pub(super) fn watch_detached(self: Arc<Self>, id: SessionId) {
        let stopping = self.runtime.stopping().clone();
        let me = self.clone();
        self.runtime.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(DETACHED_MAX) => {}
                _ = stopping.cancelled() => return,
            }
            if let Ok(Some(s)) = me.lifecycle.find(&id).await
                && s.state == SessionState::Detached
            {
                let _ = me.stop(&id, EndReason::ShellsLost, &Actor::System).await;
            }
        });
    }

    /// A lost node was taken over by this one: the detached sessions that name it wait for
    /// their agent under this node's watch (as after `recover`, which watches them too).
    pub async fn adopt_lost_node(self: &Arc<Self>, lost: &crate::node::NodeId) {
        let Ok(sessions) = self.lifecycle.unfinished_of(lost).await else {
            return;
        };
        for s in sessions {
            if s.state == SessionState::Detached && s.node.as_ref() == Some(lost) {
                self.clone().watch_detached(s.id);
            }
        }
    }

    /// The agent listed the sessions whose shells it keeps (`Kept`): recorded, for the node
    /// that takes this one over should it be lost (see `Lifecycle::end_lost_node`).
    pub async fn shells_kept(&self, agent_id: &AgentId, kept: &[SessionId]) {
        if let Err(error) = self.lifecycle.set_shells_kept(agent_id, kept).await {
            tracing::warn!(agent = %agent_id, %error, "could not record the sessions whose shells the agent keeps");
        }
    }

    /// The agent's link is gone. Its running sessions whose shells it keeps (its last `Kept`)
    /// detach and wait for it; its other running and starting sessions end. A running
    /// session another node holds is that node's: the agent linked there since, and the
    /// session was resumed on it. When the ended link was stale (`LinkEnd::Superseded`: the
    /// agent is linked to another node), its starting sessions are left too: which link
    /// accepted a start is not recorded, and one accepted through the newer link is starting
    /// well; one accepted through this link gets no tunnel and its start timeout ends it.
    pub async fn link_down(
        self: &Arc<Self>,
        agent_id: &AgentId,
        kept: &HashSet<SessionId>,
        end: LinkEnd,
    ) {
        if self.runtime.stopping().is_cancelled() {
            return;
        }
        let filter = SessionFilter {
            agent_id: Some(agent_id.clone()),
            ..Default::default()
        };
        let Ok(sessions) = self.lifecycle.list(&filter).await else {
            return;
        };
        for s in sessions {
            match s.state {
                SessionState::Running if s.node.as_ref().is_some_and(|n| n != self.node()) => {}
                SessionState::Starting if end == LinkEnd::Superseded => {}
                SessionState::Running if kept.contains(&s.id) => {
                    self.detach(&s.id, LINK_LOST).await;
                    self.clone().watch_detached(s.id);
                }
                SessionState::Starting | SessionState::Running => {
                    let _ = self.stop(&s.id, EndReason::LinkLost, &Actor::System).await;
                }
                _ => {}
            }
        }
    }

    /// Running → detached: the tunnel and its port go; the session waits for its agent.
    async fn detach(&self, id: &SessionId, why: &str) {
        self.runtime.close_tunnel(id).await;
        let event = SessionEvent::Detach(why.to_owned());
        let decide = |state| (state == SessionState::Running).then(|| event.clone());
        if let Err(error) = self
            .lifecycle
            .apply_decided(id, decide, &Actor::System, None)
            .await
        {
            tracing::warn!(session = %id, %error, "could not detach the session");
        }
    }

    /// The agent (just enrolled on this link) keeps shells for `kept`: resume what is
    /// detached, stop what ended, end what it no longer has. An agent that keeps no shells
    /// is the same as one that lists none.
    pub async fn kept(&self, agent_id: &AgentId, kept: Vec<SessionId>) {
        let listed: HashSet<SessionId> = kept.iter().cloned().collect();
        for id in kept {
            let session = match self.lifecycle.find(&id).await {
                Ok(Some(s)) if s.agent_id == *agent_id => s,
                Ok(Some(_)) => {
                    tracing::warn!(session = %id, "an agent listed another agent's session");
                    continue;
                }
                // Unknown, or already ended: nothing waits for these shells.
                Ok(None) => {
                    self.runtime
                        .send(agent_id, ServerMessage::StopSsh { session: id });
                    continue;
                }
                Err(error) => {
                    tracing::warn!(session = %id, %error, "could not read a kept session");
                    continue;
                }
            };
            match session.state {
                SessionState::Detached => self.resume(agent_id, &id),
                // The link it ran on died unnoticed, and the agent is back already.
                SessionState::Running => {
                    self.detach(&id, LINK_LOST).await;
                    self.resume(agent_id, &id);
                }
                state if state.is_final() || state == SessionState::Stopping => {
                    self.runtime
                        .send(agent_id, ServerMessage::StopSsh { session: id });
                }
                // Requested or starting: the ordinary start goes on.
                _ => {}
            }
        }
        // Detached sessions the agent no longer has.
        let filter = SessionFilter {
            agent_id: Some(agent_id.clone()),
            state: Some(SessionState::Detached),
            ..Default::default()
        };
        let Ok(detached) = self.lifecycle.list(&filter).await else {
            return;
        };
        for s in detached.into_iter().filter(|s| !listed.contains(&s.id)) {
            // Detached by a restart or a node's loss, a session whose agent kept nothing for it
            // ends as it did before shells survived; one whose shells the agent did keep lost
            // them.
            let reason = match s.reason.as_deref() {
                Some(DETACHED_BY_RESTART) => EndReason::ServerRestarted,
                Some(DETACHED_BY_NODE_LOSS) => EndReason::NodeLost,
                _ => EndReason::ShellsLost,
            };
            let _ = self.stop(&s.id, reason, &Actor::Agent).await;
        }
    }

    /// The session once it runs — at once if it does, or when it is back from detached —
    /// on any node; None once it ends or this node stops.
    pub async fn running_again(&self, id: &SessionId) -> Option<SessionRecord> {
        let mut events = self.lifecycle.subscribe();
        let stopping = self.runtime.stopping().clone();
        loop {
            match self.lifecycle.find(id).await {
                Ok(Some(s)) if s.state == SessionState::Running => return Some(s),
                Ok(Some(s)) if s.state.is_open() => {}
                Ok(_) => return None,
                // The store is out of reach for now: look again after the next event.
                Err(error) => tracing::debug!(session = %id, %error, "could not read a session"),
            }
            // Its next event; the store is read again at least every `RECHECK` in case an
            // event was missed (a lagging receiver).
            let next = async {
                loop {
                    match events.recv().await {
                        Ok(e) if e.session.as_ref().is_some_and(|s| &s.id == id) => return true,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => return true,
                        Err(RecvError::Closed) => return false,
                    }
                }
            };
            tokio::select! {
                more = tokio::time::timeout(RECHECK, next) => if matches!(more, Ok(false)) {
                    return None;
                },
                _ = stopping.cancelled() => return None,
            }
        }
    }

    fn resume(&self, agent_id: &AgentId, id: &SessionId) {
        self.runtime.send(
            agent_id,
            ServerMessage::Resume {
                session: id.clone(),
            },
        );
    }

    /// The agent ended the session's kept shells at their grace: a detached session ends; a
    /// running one too, unless someone is logged in through it still.
    pub async fn grace_expired(&self, agent_id: &AgentId, id: &SessionId) {
        let Ok(Some(session)) = self.lifecycle.find(id).await else {
            return;
        };
        if session.agent_id != *agent_id {
            tracing::warn!(session = %id, "an agent reported another agent's shells");
            return;
        }
        let in_use = self
            .runtime
            .tunnel(id)
            .is_some_and(|t| *t.activity.subscribe().borrow() > 0);
        let ends = match session.state {
            SessionState::Detached => true,
            SessionState::Running => !in_use,
            _ => false,
        };
        if ends {
            let _ = self.stop(id, EndReason::GraceExpired, &Actor::Agent).await;
        }
    }
}
