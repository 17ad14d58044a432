//! The liveness sweep: one task for all agent links. Every `LivenessPolicy::sweep_period` it
//! looks at when each link was last heard from; an agent that missed its heartbeats is
//! announced as not responding (`agent.not_responding`), and a link silent past the heartbeat
//! timeout is cut — its control task then takes the agent offline and ends its sessions.
//!
//! One timer for the whole server, not one per link: an idle server wakes once per period
//! and scans the registry (a few microseconds per thousand links), where per-link timers
//! would wake once per link.

use std::sync::Arc;

use postern_protocol::api::{EventKind, Liveness};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::events::EventBus;
use crate::links::LinkRegistry;
use crate::store::{Actor, Store};

pub async fn sweep(
    links: Arc<LinkRegistry>,
    store: Arc<dyn Store>,
    events: Arc<EventBus>,
    cluster: Arc<Cluster>,
    shutdown: CancellationToken,
) {
    let policy = links.policy();
    let mut tick = tokio::time::interval(policy.sweep_period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let swept = links.sweep(now_ms());
        for id in &swept.lost {
            tracing::warn!(agent = %id, timeout = ?policy.timeout, "agent link silent for too long; dropping it");
        }
        for id in swept.quiet {
            // Written for the other nodes: a liveness change, not a heartbeat. A link whose
            // row another node holds is stale (the agent is linked there): not announced.
            if !cluster.link_liveness(&id, Liveness::NotResponding).await {
                continue;
            }
            let agent = match store.agent_by_id(&id).await {
                Ok(Some(agent)) => agent,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(%error, "could not look up a silent agent");
                    continue;
                }
            };
            tracing::warn!(agent = %agent.name, "agent stopped responding");
            events
                .publish(
                    EventKind::AgentNotResponding,
                    &Actor::System,
                    Some(&agent),
                    format!("missed {} heartbeats", policy.misses),
                )
                .await;
        }
    }
}
