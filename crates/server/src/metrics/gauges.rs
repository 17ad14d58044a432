//! Gauges, read from the state the server holds at the moment of a scrape — the store for
//! agents and sessions, the link registry, the port pool, the event bus — rather than kept
//! up to date by hand, so that none can drift. A store that fails its reads makes its gauges
//! absent from that scrape (and `postern_store_up` 0), never stale.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use postern_protocol::{AgentStatus, SessionState};

use crate::events::EventBus;
use crate::links::LinkRegistry;
use crate::sessions::Sessions;
use crate::store::{Store, StoreError};

pub const AGENTS: &str = "postern_agents";
pub const AGENTS_CONNECTED: &str = "postern_agents_connected";
pub const SESSIONS: &str = "postern_sessions";
pub const TUNNEL_PORTS_IN_USE: &str = "postern_tunnel_ports_in_use";
pub const TUNNEL_PORTS_CAPACITY: &str = "postern_tunnel_ports_capacity";
pub const EVENT_SUBSCRIBERS: &str = "postern_event_stream_subscribers";
pub const STORE_UP: &str = "postern_store_up";

/// A scrape waits this long for the store, then reports it down: Prometheus's default
/// scrape timeout is 10 s, and a scrape must still answer when the store hangs.
const STORE_DEADLINE: Duration = Duration::from_secs(2);

const OPEN_STATES: [SessionState; 5] = [
    SessionState::Requested,
    SessionState::Starting,
    SessionState::Running,
    SessionState::Detached,
    SessionState::Stopping,
];

/// What the gauges are read from.
pub struct GaugeSources {
    pub store: Arc<dyn Store>,
    pub links: Arc<LinkRegistry>,
    pub sessions: Arc<Sessions>,
    pub events: Arc<EventBus>,
}

/// The gauges' values at one moment.
#[derive(Debug, Default)]
pub struct Gauges {
    /// From the store; `None` when it did not answer.
    pub stored: Option<Stored>,
    pub responding: usize,
    pub not_responding: usize,
    pub ports_in_use: usize,
    pub ports_capacity: usize,
    pub subscribers: usize,
}

#[derive(Debug, Default)]
pub struct Stored {
    pub agents: Vec<(AgentStatus, u64)>,
    pub sessions: Vec<(SessionState, u64)>,
}

impl GaugeSources {
    pub async fn read(&self) -> Gauges {
        let stored = match tokio::time::timeout(STORE_DEADLINE, self.stored()).await {
            Ok(Ok(stored)) => Some(stored),
            Ok(Err(error)) => {
                tracing::warn!(%error, "metrics: the store did not answer");
                None
            }
            Err(_) => {
                tracing::warn!("metrics: the store did not answer in time");
                None
            }
        };
        let (responding, not_responding) = self.links.liveness_counts();
        let (ports_in_use, ports_capacity) = self.sessions.tunnel_ports();
        Gauges {
            stored,
            responding,
            not_responding,
            ports_in_use,
            ports_capacity,
            subscribers: self.events.followers(),
        }
    }

    async fn stored(&self) -> Result<Stored, StoreError> {
        let mut agents = Vec::new();
        for status in AgentStatus::ALL {
            agents.push((status, self.store.count_agents(status).await?));
        }
        // This node's sessions (those it created or whose tunnel it holds): each session is
        // one node's, so the gauges of every node add up to the whole.
        let open = self.store.unfinished_sessions(self.sessions.node()).await?;
        let sessions = OPEN_STATES
            .into_iter()
            .map(|state| {
                let n = open.iter().filter(|s| s.state == state).count();
                (state, n as u64)
            })
            .collect();
        Ok(Stored { agents, sessions })
    }
}

impl Gauges {
    /// Appends the gauges in the Prometheus text format.
    pub fn write(&self, out: &mut String) {
        if let Some(stored) = &self.stored {
            family(out, AGENTS);
            for (status, n) in &stored.agents {
                let _ = writeln!(out, "{AGENTS}{{status=\"{}\"}} {n}", status.as_str());
            }
            family(out, SESSIONS);
            for (state, n) in &stored.sessions {
                let _ = writeln!(out, "{SESSIONS}{{state=\"{state}\"}} {n}");
            }
        }
        family(out, AGENTS_CONNECTED);
        let _ = writeln!(
            out,
            "{AGENTS_CONNECTED}{{liveness=\"responding\"}} {}",
            self.responding
        );
        let _ = writeln!(
            out,
            "{AGENTS_CONNECTED}{{liveness=\"not_responding\"}} {}",
            self.not_responding
        );
        for (name, value) in [
            (TUNNEL_PORTS_IN_USE, self.ports_in_use),
            (TUNNEL_PORTS_CAPACITY, self.ports_capacity),
            (EVENT_SUBSCRIBERS, self.subscribers),
            (STORE_UP, usize::from(self.stored.is_some())),
        ] {
            family(out, name);
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

fn family(out: &mut String, name: &str) {
    let help = super::FAMILIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or("", |(_, _, help)| help);
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_did_not_answer_leaves_its_gauges_out() {
        let mut text = String::new();
        Gauges::default().write(&mut text);
        assert!(!text.contains("postern_agents{"), "{text}");
        assert!(!text.contains("postern_sessions{"), "{text}");
        assert!(text.contains("\npostern_store_up 0\n"), "{text}");

        let mut text = String::new();
        Gauges {
            stored: Some(Stored {
                agents: vec![(AgentStatus::Approved, 3)],
                sessions: vec![(SessionState::Running, 2)],
            }),
            ..Gauges::default()
        }
        .write(&mut text);
        assert!(
            text.contains("postern_agents{status=\"approved\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("postern_sessions{state=\"running\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("\npostern_store_up 1\n"), "{text}");
    }
}
