//! Limits on new agents that enroll without a valid token: how many may wait for approval,
//! and how fast one source address may add more. Approved agents, known agents reconnecting
//! and token enrollments never meet them. See docs/ARCHITECTURE.md, "Limits".

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

use crate::limits::Source;

/// The settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnrollmentConfig {
    pub max_pending: u32,
    pub per_source: u32,
    pub window: Duration,
}

/// A source's allowance: up to `per_source` enrollments at once, refilled evenly over the
/// window (a token bucket).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The source's refusals were logged since it last had room.
    logged: bool,
}

#[derive(Default)]
pub struct State {
    buckets: HashMap<Source, Bucket>,
    /// The bucket map is pruned of full buckets when it grows past this.
    prune_at: usize,
    /// The pending cap's event was published; again only after the cap was left.
    cap_reported: bool,
}

/// One new pending enrollment at a time passes here: counting the pending agents and storing
/// the new one are a single step, so the cap holds exactly.
pub struct EnrollmentLimits {
    config: EnrollmentConfig,
    state: Mutex<State>,
}

/// What the cap check decided.
#[derive(Debug, PartialEq, Eq)]
pub enum PendingCheck {
    Room,
    /// Full; `first` when this is the first refusal since the cap was last left.
    Full {
        first: bool,
    },
}

impl EnrollmentLimits {
    pub fn new(config: EnrollmentConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    pub fn config(&self) -> EnrollmentConfig {
        self.config
    }

    /// Held while one new pending enrollment is checked and stored.
    pub async fn lock(&self) -> Turn<'_> {
        Turn {
            config: self.config,
            state: self.state.lock().await,
        }
    }
}

/// The right to check and store one new pending agent.
pub struct Turn<'a> {
    config: EnrollmentConfig,
    state: MutexGuard<'a, State>,
}

impl Turn<'_> {
    /// Whether `peer` may enroll one more new agent now (it is charged with `charge`).
    pub fn rate_allows(&mut self, peer: Option<IpAddr>) -> bool {
        self.rate_allows_at(peer, Instant::now())
    }

    fn rate_allows_at(&mut self, peer: Option<IpAddr>, now: Instant) -> bool {
        let Some(source) = peer.map(Source::from) else {
            return true;
        };
        let config = self.config;
        let state = &mut *self.state;
        if state.buckets.len() >= state.prune_at.max(1024) {
            // Full buckets are the same as none: only sources still being held back stay.
            state
                .buckets
                .retain(|_, b| refill(b, config, now) < f64::from(config.per_source));
            state.prune_at = state.buckets.len() * 2;
        }
        let bucket = state.buckets.entry(source).or_insert(Bucket {
            tokens: f64::from(config.per_source),
            at: now,
            logged: false,
        });
        let tokens = refill(bucket, config, now);
        if tokens >= 1.0 {
            bucket.logged = false;
            return true;
        }
        if !bucket.logged {
            bucket.logged = true;
            tracing::warn!(
                %source,
                per_source = config.per_source,
                window = ?config.window,
                "refusing new agents from this source: too many enrollments without a token"
            );
        }
        false
    }

    /// Uses one of `peer`'s enrollments (after the new agent was stored).
    pub fn charge(&mut self, peer: Option<IpAddr>) {
        if let Some(bucket) = peer.and_then(|p| self.state.buckets.get_mut(&Source::from(p))) {
            bucket.tokens -= 1.0;
        }
    }

    /// Whether one more may wait, with `pending` waiting now.
    pub fn pending_allows(&mut self, pending: u64) -> PendingCheck {
        if pending < u64::from(self.config.max_pending) {
            self.state.cap_reported = false;
            return PendingCheck::Room;
        }
        let first = !self.state.cap_reported;
        self.state.cap_reported = true;
        PendingCheck::Full { first }
    }
}

/// Brings the bucket up to date and returns its tokens.
fn refill(bucket: &mut Bucket, config: EnrollmentConfig, now: Instant) -> f64 {
    let per = f64::from(config.per_source);
    let elapsed = now.duration_since(bucket.at).as_secs_f64();
    let rate = per / config.window.as_secs_f64().max(f64::MIN_POSITIVE);
    bucket.tokens = (bucket.tokens + elapsed * rate).min(per);
    bucket.at = now;
    bucket.tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_pending: u32, per_source: u32) -> EnrollmentLimits {
        EnrollmentLimits::new(EnrollmentConfig {
            max_pending,
            per_source,
            window: Duration::from_secs(3600),
        })
    }

    #[tokio::test]
    async fn a_source_gets_its_burst_then_waits_and_others_are_not_held() {
        let limits = limits(100, 2);
        let a = Some("192.0.2.1".parse().unwrap());
        let b = Some("192.0.2.2".parse().unwrap());
        let mut turn = limits.lock().await;
        for _ in 0..2 {
            assert!(turn.rate_allows(a));
            turn.charge(a);
        }
        assert!(!turn.rate_allows(a));
        assert!(turn.rate_allows(b));
    }

    #[tokio::test]
    async fn the_allowance_comes_back_over_the_window() {
        let limits = limits(100, 2);
        let a = Some("192.0.2.1".parse().unwrap());
        let start = Instant::now();
        let mut turn = limits.lock().await;
        for _ in 0..2 {
            assert!(turn.rate_allows_at(a, start));
            turn.charge(a);
        }
        assert!(!turn.rate_allows_at(a, start));
        // One per half hour: 2 per hour.
        assert!(!turn.rate_allows_at(a, start + Duration::from_secs(1700)));
        assert!(turn.rate_allows_at(a, start + Duration::from_secs(1800)));
    }

    #[tokio::test]
    async fn the_cap_is_reported_once_until_it_is_left() {
        let limits = limits(2, 10);
        let mut turn = limits.lock().await;
        assert_eq!(turn.pending_allows(1), PendingCheck::Room);
        assert_eq!(turn.pending_allows(2), PendingCheck::Full { first: true });
        assert_eq!(turn.pending_allows(2), PendingCheck::Full { first: false });
        assert_eq!(turn.pending_allows(1), PendingCheck::Room);
        assert_eq!(turn.pending_allows(2), PendingCheck::Full { first: true });
    }
}
