//! How many agents one node enrolls at once. Enrolling an agent (the lookups, the writes, the
//! link's row and its `agent.online`) is a handful of sequential database round trips. When a
//! whole fleet dials at once — a new fleet, or the agents of a lost node — every connection
//! started at once makes each wait behind all the others for the node's few database
//! connections, until every one of them outlasts the agents' handshake timeouts, the agents
//! give up and dial again, and the work done for them is lost: at 30,000 agents on three
//! nodes, fewer agents were linked after ten minutes than after two. So at most `AT_ONCE`
//! connections enroll at a time; the others wait their turn (first come, first served) for up
//! to `QUEUE_WAIT`, and are then told the node is busy, which the agent takes as a failed
//! attempt: it dials again after its backoff (exponential, full jitter), and the node goes on
//! at the pace its database allows instead of collapsing.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Connections enrolling at once on one node: enough to keep a pool of tens of database
/// connections busy (each enrollment holds one only per statement), few enough that none waits
/// behind more than a few dozen others for a connection.
pub const AT_ONCE: usize = 64;
/// How long a connection waits for its turn before it is told the node is busy: well inside
/// the agent's 30 s wait for the server's first reply.
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Refusals are logged as a count, at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct EnrollGate {
    turns: Arc<Semaphore>,
    wait: Duration,
    refused: Mutex<Refused>,
}

#[derive(Default)]
struct Refused {
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl Default for EnrollGate {
    fn default() -> Self {
        Self::new(AT_ONCE, QUEUE_WAIT)
    }
}

impl EnrollGate {
    pub fn new(at_once: usize, wait: Duration) -> Self {
        Self {
            turns: Arc::new(Semaphore::new(at_once.max(1))),
            wait,
            refused: Mutex::new(Refused::default()),
        }
    }

    /// Waits for a turn to enroll, until `QUEUE_WAIT` has passed or `deadline` (the
    /// connection's own) comes; `None`: the node is busy. The turn ends when dropped.
    pub async fn turn(&self, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        let until = deadline.min(Instant::now() + self.wait);
        match tokio::time::timeout_at(until, self.turns.clone().acquire_owned()).await {
            Ok(Ok(turn)) => Some(turn),
            _ => {
                self.count_refusal();
                None
            }
        }
    }

    fn count_refusal(&self) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.unlogged += 1;
        let now = Instant::now();
        if refused
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            tracing::warn!(
                refused = refused.unlogged,
                at_once = self.turns.available_permits(),
                "agents told this node is busy: more were enrolling at once than it takes; they dial again after their backoff"
            );
            refused.unlogged = 0;
            refused.logged_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that finds every turn taken for the whole wait is refused, as is one
    /// whose own deadline comes first; a turn given back goes to the one waiting.
    #[tokio::test]
    async fn connections_enroll_a_few_at_a_time_and_the_rest_are_told_busy() {
        let far = Instant::now() + Duration::from_secs(600);
        let gate = EnrollGate::new(2, Duration::from_millis(50));
        let _first = gate.turn(far).await.unwrap();
        let _second = gate.turn(far).await.unwrap();
        assert!(gate.turn(far).await.is_none(), "full for the whole wait");
        let patient = EnrollGate::new(1, Duration::from_secs(600));
        let held = patient.turn(far).await.unwrap();
        assert!(
            patient.turn(Instant::now()).await.is_none(),
            "its own deadline passed"
        );

        let patient = Arc::new(patient);
        let waiting = tokio::spawn({
            let patient = patient.clone();
            async move { patient.turn(far).await.is_some() }
        });
        drop(held);
        assert!(waiting.await.unwrap(), "the turn given back is taken");
    }
}
