//! Slows down password guessing: after a few failures, a user name or a source address must
//! wait before it may try again, doubling each time.
//!
//! This is the node's own, in-memory throttle: it refuses a burst on this node without asking
//! the database. The counts every node shares (a guesser spreading attempts over nodes) are
//! `shared_throttle`'s, by the same rules.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a user name gets for free before it must wait.
pub(super) const FREE_PER_USER: u32 = 3;
/// Failures a source address gets for free (it may try several user names).
pub(super) const FREE_PER_SOURCE: u32 = 10;
const MAX_DELAY: Duration = Duration::from_secs(300);
/// Entries quiet for this long are forgotten.
pub(super) const FORGET_AFTER: Duration = Duration::from_secs(3600);
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<Key, Entry>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Source(IpAddr),
}

struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

impl LoginThrottle {
    fn keys(user: &str, source: Option<IpAddr>) -> Vec<(Key, u32)> {
        let mut keys = vec![(Key::User(user.to_owned()), FREE_PER_USER)];
        if let Some(ip) = source {
            keys.push((Key::Source(ip), FREE_PER_SOURCE));
        }
        keys
    }

    /// Takes one attempt for `user` from `source`, or `Err(wait)` while either must wait.
    /// The attempt counts as a failure from this moment, in the same step as the check, so
    /// that attempts made at once cannot all pass the check before any has failed; a right
    /// password takes it back (`succeeded`), as does an attempt never made (`cancel`).
    pub fn begin(&self, user: &str, source: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let keys = Self::keys(user, source);
        let wait = keys
            .iter()
            .filter_map(|(k, _)| entries.get(k)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        if entries.len() > MAX_ENTRIES {
            entries.retain(|_, e| now.duration_since(e.last_failure) < FORGET_AFTER);
        }
        for (key, free) in keys {
            let entry = entries.entry(key).or_insert(Entry {
                failures: 0,
                last_failure: now,
                blocked_until: None,
            });
            if now.duration_since(entry.last_failure) > FORGET_AFTER {
                entry.failures = 0;
            }
            entry.failures += 1;
            entry.last_failure = now;
            if let Some(delay) = delay_after(entry.failures, free) {
                entry.blocked_until = Some(now + delay);
            }
        }
        Ok(())
    }

    /// The attempt `begin` took was not made (nothing was checked): it does not count.
    pub fn cancel(&self, user: &str, source: Option<IpAddr>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for (key, free) in Self::keys(user, source) {
            Self::take_back(&mut entries, &key, free);
        }
    }

    /// A successful login clears the user's record; the source only loses this attempt
    /// (one right password must not wipe out many wrong guesses at other names).
    pub fn succeeded(&self, user: &str, source: Option<IpAddr>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&Key::User(user.to_owned()));
        if let Some(ip) = source {
            Self::take_back(&mut entries, &Key::Source(ip), FREE_PER_SOURCE);
        }
    }

    fn take_back(entries: &mut HashMap<Key, Entry>, key: &Key, free: u32) {
        if let Some(entry) = entries.get_mut(key) {
            entry.failures = entry.failures.saturating_sub(1);
            if entry.failures < free {
                entry.blocked_until = None;
            }
        }
    }
}

/// How long a key with `failures` counted must wait before its next attempt, if at all:
/// nothing for the free ones, then 1 s doubling to `MAX_DELAY`.
pub(super) fn delay_after(failures: u32, free: u32) -> Option<Duration> {
    let doublings = failures.checked_sub(free)?.min(16);
    Some(Duration::from_secs(1u64 << doublings).min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_held_back_after_three_failures_and_waits_grow() {
        let t = LoginThrottle::default();
        let ip = Some("192.0.2.1".parse().unwrap());
        t.begin("ann", ip).unwrap();
        t.begin("ann", ip).unwrap();
        t.begin("ann", ip).unwrap();
        assert!(t.begin("ann", None).is_err());
        // Another user from another address is unaffected.
        assert!(t.begin("bob", Some("192.0.2.2".parse().unwrap())).is_ok());
        t.succeeded("ann", ip);
        t.begin("ann", ip).unwrap();
        t.begin("ann", ip).unwrap();
        t.begin("ann", ip).unwrap();
        assert!(
            t.begin("ann", None).is_err(),
            "a success starts the user afresh"
        );
    }

    #[test]
    fn attempts_in_flight_count_so_a_burst_gets_only_the_free_ones() {
        let t = LoginThrottle::default();
        let ip = Some("192.0.2.3".parse().unwrap());
        let passed = (0..100).filter(|_| t.begin("ann", ip).is_ok()).count();
        assert_eq!(passed, FREE_PER_USER as usize);
    }

    #[test]
    fn a_cancelled_attempt_does_not_count() {
        let t = LoginThrottle::default();
        let ip = Some("192.0.2.4".parse().unwrap());
        for _ in 0..10 {
            t.begin("ann", ip).unwrap();
            t.cancel("ann", ip);
        }
        assert!(t.begin("ann", ip).is_ok());
    }

    #[test]
    fn a_source_guessing_many_names_is_held_back() {
        let t = LoginThrottle::default();
        let ip = Some("192.0.2.9".parse().unwrap());
        for i in 0..FREE_PER_SOURCE {
            t.begin(&format!("user{i}"), ip).unwrap();
        }
        assert!(t.begin("someone-new", ip).is_err());
        assert!(t.begin("someone-new", None).is_ok());
    }
}
