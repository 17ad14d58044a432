//! Login throttling every node of one database shares: the failures and blocks of each user
//! name and source address are records in the store, so a password guesser that spreads its
//! attempts over several nodes is held back as if it used one. Same rules as the node's own
//! throttle (`throttle`), which stays in front of this one: a burst on one node is refused in
//! memory, and only the attempts it lets through reach the database.
//!
//! Each change is a compare-and-set on the record (read, decide here, swap if unchanged), so
//! attempts racing on several nodes are each counted, and at most the free ones pass.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::throttle::{FORGET_AFTER, FREE_PER_SOURCE, FREE_PER_USER, delay_after};
use crate::store::{LoginAttempts, Store, StoreResult};

/// Compare-and-set rounds one change may take before it gives up. Every lost round is another
/// writer's won one, and a key is blocked after a few of those, so this is never reached in
/// practice; it only bounds the work.
const MAX_ROUNDS: usize = 64;

/// What a change that lost `MAX_ROUNDS` races answers: try again shortly.
const CONTENDED: Duration = Duration::from_secs(1);

pub struct SharedThrottle {
    store: Arc<dyn Store>,
}

fn keys(user: &str, source: Option<IpAddr>) -> Vec<(String, u32)> {
    let mut keys = vec![(format!("user:{user}"), FREE_PER_USER)];
    if let Some(ip) = source {
        keys.push((format!("source:{ip}"), FREE_PER_SOURCE));
    }
    keys
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SharedThrottle {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Takes one attempt for `user` from `source` at `now` (unix ms), counted as a failure
    /// until `succeeded` or `cancel` takes it back; `Ok(Err(wait))` while either must wait.
    pub async fn begin(
        &self,
        user: &str,
        source: Option<IpAddr>,
        now: i64,
    ) -> StoreResult<Result<(), Duration>> {
        let mut taken: Vec<(String, u32)> = Vec::new();
        for (key, free) in keys(user, source) {
            let outcome = self.take(&key, free, now).await;
            match outcome {
                Ok(Ok(())) => taken.push((key, free)),
                // The keys taken so far give their attempt back: it is not made.
                Ok(Err(_)) | Err(_) => {
                    for (key, free) in &taken {
                        self.give_back_logged(key, *free).await;
                    }
                    return outcome;
                }
            }
        }
        Ok(Ok(()))
    }

    /// The attempt `begin` took was not made: it does not count.
    pub async fn cancel(&self, user: &str, source: Option<IpAddr>) {
        for (key, free) in keys(user, source) {
            self.give_back_logged(&key, free).await;
        }
    }

    /// A successful login clears the user's record; the source only gets this attempt back
    /// (one right password must not wipe out many wrong guesses at other names).
    pub async fn succeeded(&self, user: &str, source: Option<IpAddr>) {
        for (key, free) in keys(user, source) {
            let done = if key.starts_with("user:") {
                self.clear(&key).await
            } else {
                self.give_back(&key, free).await
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "could not update the shared login throttle");
            }
        }
    }

    /// Removes records quiet for longer than they are remembered.
    pub async fn forget_quiet(&self, now: i64) -> StoreResult<u64> {
        self.store
            .forget_login_attempts(now.saturating_sub(ms(FORGET_AFTER)))
            .await
    }

    async fn take(&self, key: &str, free: u32, now: i64) -> StoreResult<Result<(), Duration>> {
        for _ in 0..MAX_ROUNDS {
            let stored = self.store.login_attempts(key).await?;
            let current = stored.map(|s| s.attempts);
            if let Some(until) = current.and_then(|a| a.blocked_until)
                && until > now
            {
                let wait = u64::try_from(until - now).unwrap_or(0);
                return Ok(Err(Duration::from_millis(wait)));
            }
            let failures = current
                .filter(|a| now.saturating_sub(a.last_failure) <= ms(FORGET_AFTER))
                .map_or(0, |a| a.failures)
                .saturating_add(1);
            let new = LoginAttempts {
                failures,
                last_failure: now,
                blocked_until: delay_after(failures, free).map(|d| now.saturating_add(ms(d))),
            };
            if self
                .store
                .swap_login_attempts(key, stored.map(|s| s.version), Some(new))
                .await?
            {
                return Ok(Ok(()));
            }
        }
        Ok(Err(CONTENDED))
    }

    async fn give_back(&self, key: &str, free: u32) -> StoreResult<()> {
        for _ in 0..MAX_ROUNDS {
            let Some(stored) = self.store.login_attempts(key).await? else {
                return Ok(());
            };
            let mut attempts = stored.attempts;
            attempts.failures = attempts.failures.saturating_sub(1);
            if attempts.failures < free {
                attempts.blocked_until = None;
            }
            if self
                .store
                .swap_login_attempts(key, Some(stored.version), Some(attempts))
                .await?
            {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn give_back_logged(&self, key: &str, free: u32) {
        if let Err(e) = self.give_back(key, free).await {
            tracing::warn!(error = %e, "could not update the shared login throttle");
        }
    }

    async fn clear(&self, key: &str) -> StoreResult<()> {
        for _ in 0..MAX_ROUNDS {
            let Some(stored) = self.store.login_attempts(key).await? else {
                return Ok(());
            };
            if self
                .store
                .swap_login_attempts(key, Some(stored.version), None)
                .await?
            {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    /// Two nodes' throttles on one store.
    async fn two_nodes() -> (tempfile::TempDir, SharedThrottle, SharedThrottle) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        (
            dir,
            SharedThrottle::new(store.clone()),
            SharedThrottle::new(store),
        )
    }

    #[tokio::test]
    async fn failures_on_one_node_hold_the_user_back_on_another() {
        let (_dir, a, b) = two_nodes().await;
        let now = 1_000_000;
        a.begin("ann", None, now).await.unwrap().unwrap();
        b.begin("ann", None, now).await.unwrap().unwrap();
        a.begin("ann", None, now).await.unwrap().unwrap();
        let wait = b.begin("ann", None, now).await.unwrap().unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // The wait grows; a success on the other node starts the user afresh.
        let later = now + 1_000;
        b.begin("ann", None, later).await.unwrap().unwrap();
        assert_eq!(
            a.begin("ann", None, later).await.unwrap().unwrap_err(),
            Duration::from_secs(2)
        );
        a.succeeded("ann", None).await;
        for _ in 0..FREE_PER_USER {
            b.begin("ann", None, later).await.unwrap().unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_over_two_nodes_gets_only_the_free_attempts() {
        let (_dir, a, b) = two_nodes().await;
        let (a, b) = (Arc::new(a), Arc::new(b));
        let source = Some("192.0.2.7".parse().unwrap());
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let node = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { node.begin("ann", source, 5_000).await.unwrap() })
            })
            .collect();
        let mut passed = 0;
        for task in tasks {
            passed += usize::from(task.await.unwrap().is_ok());
        }
        assert_eq!(passed, FREE_PER_USER as usize);
    }

    #[tokio::test]
    async fn a_refused_or_cancelled_attempt_does_not_count() {
        let (_dir, a, b) = two_nodes().await;
        let source = Some("192.0.2.8".parse().unwrap());
        for _ in 0..10 {
            a.begin("bob", source, 1).await.unwrap().unwrap();
            b.cancel("bob", source).await;
        }
        // A source held back refuses the attempt; the user's count is given back with it.
        for i in 0..FREE_PER_SOURCE {
            a.begin(&format!("u{i}"), source, 1).await.unwrap().unwrap();
        }
        assert!(b.begin("carol", source, 1).await.unwrap().is_err());
        for _ in 0..FREE_PER_USER {
            b.begin("carol", None, 1).await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn quiet_records_are_forgotten() {
        let (_dir, a, _b) = two_nodes().await;
        a.begin("dan", None, 0).await.unwrap().unwrap();
        assert_eq!(a.forget_quiet(ms(FORGET_AFTER)).await.unwrap(), 0);
        assert_eq!(a.forget_quiet(ms(FORGET_AFTER) + 1).await.unwrap(), 1);
    }
}
