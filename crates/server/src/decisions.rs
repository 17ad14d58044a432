//! Decisions on agents reach their links whichever node took them: an administrator on node
//! C approves, rejects or revokes an agent whose link node A holds, and node A, on the event
//! (its bus sends every node's events), tells the link the agent's status as stored now and
//! closes a revoked agent's link at once. The node that decided told its own links already
//! (`Agents::decide`); telling one twice is harmless (the agent records the same status).

use std::sync::Arc;

use postern_protocol::api::{EventKind, EventView};
use postern_protocol::{AgentId, AgentStatus};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::agents::Agents;
use crate::store::Store;

/// Tells this node's links the decisions in `live` (a subscription to the event bus, taken
/// before the bus sends anything), until `stop`.
pub async fn follow(
    agents: Arc<Agents>,
    store: Arc<dyn Store>,
    mut live: broadcast::Receiver<EventView>,
    stop: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            r = live.recv() => r,
            () = stop.cancelled() => return,
        };
        match received {
            Ok(event) => {
                if let Some(agent) = decided(&event)
                    && agents.links().is_online(agent)
                {
                    tell(&agents, &store, agent).await;
                }
            }
            // Decisions may have gone by unseen: tell every link this node holds.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                for agent in agents.links().online_ids() {
                    tell(&agents, &store, &agent).await;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The agent an event records a decision on.
fn decided(event: &EventView) -> Option<&AgentId> {
    matches!(
        event.kind,
        EventKind::AgentApproved | EventKind::AgentRejected | EventKind::AgentRevoked
    )
    .then_some(&event.agent.as_ref()?.id)
}

/// Tells the agent's link its status as stored now (not as the event says: a later decision
/// may have followed).
async fn tell(agents: &Agents, store: &Arc<dyn Store>, agent_id: &AgentId) {
    match store.agent_by_id(agent_id).await {
        Ok(Some(agent)) => {
            if agents.tell_link(&agent) && agent.status == AgentStatus::Revoked {
                tracing::info!(agent = %agent.name, "revoked on another node: link closed");
            }
        }
        Ok(None) => {}
        Err(e) => {
            // The link stays until the store answers: say so loudly, it may be revoked.
            tracing::error!(error = %e, agent = %agent_id, "could not read an agent's decision for its link");
        }
    }
}
