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
//!
//! Before its turn, a connection authenticates, which looks its key up in the store: at most
//! `LOOKUPS_AT_ONCE` of those run at once. The agents of a lost node all dial the survivors
//! at once; their thousands of lookups queued in the database pool ahead of the statements of
//! the enrollments under way, which then crawled (tens of agents linked per 10 s on each
//! survivor for the first minute) while the waiting ones were told busy and backed off.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Connections enrolling at once on one node: enough to keep a pool of tens of database
/// connections busy (each enrollment holds one only per statement), few enough that none waits
/// behind more than a few dozen others for a connection.
pub const AT_ONCE: usize = 64;
/// How long a connection waits for its turn before it is told the node is busy: well inside
/// the agent's 30 s wait for the server's first reply.
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Authentication lookups at once on one node: a few, so that the pool's queue holds the
/// enrollments' statements rather than thousands of lookups (see the module's comment).
pub const LOOKUPS_AT_ONCE: usize = 16;
/// Refusals are logged as a count, at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct EnrollGate {
    turns: Arc<Semaphore>,
    lookups: Semaphore,
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
        Self::new(AT_ONCE, QUEUE_WAIT, LOOKUPS_AT_ONCE)
    }
}

impl EnrollGate {
    pub fn new(at_once: usize, wait: Duration, lookups: usize) -> Self {
        Self {
            turns: Arc::new(Semaphore::new(at_once.max(1))),
            lookups: Semaphore::new(lookups.max(1)),
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

    /// Waits for a turn to look a key up (no deadline of its own: the connection's
    /// handshake has one). The turn ends when dropped. `None` only if the semaphore were
    /// closed, which it never is.
    pub async fn lookup_turn(&self) -> Option<SemaphorePermit<'_>> {
        self.lookups.acquire().await.ok()
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
                free_turns = self.turns.available_permits(),
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
        let gate = EnrollGate::new(2, Duration::from_millis(50), 1);
        let _first = gate.turn(far).await.unwrap();
        let _second = gate.turn(far).await.unwrap();
        assert!(gate.turn(far).await.is_none(), "full for the whole wait");
        let patient = EnrollGate::new(1, Duration::from_secs(600), 1);
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

    /// Key lookups run a few at a time; a turn given back goes to the next.
    #[tokio::test]
    async fn key_lookups_run_a_few_at_a_time() {
        use futures::FutureExt;
        let gate = EnrollGate::new(1, Duration::from_secs(1), 2);
        let first = gate.lookup_turn().await;
        let _second = gate.lookup_turn().await;
        assert!(gate.lookup_turn().now_or_never().is_none(), "both taken");
        drop(first);
        assert!(gate.lookup_turn().now_or_never().flatten().is_some());
    }
}
