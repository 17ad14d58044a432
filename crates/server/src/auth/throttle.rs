//! Slows down password guessing: after a few failures, a user name or a source address must
//! wait before it may try again, doubling each time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a user name gets for free before it must wait.
const FREE_PER_USER: u32 = 3;
/// Failures a source address gets for free (it may try several user names).
const FREE_PER_SOURCE: u32 = 10;
const MAX_DELAY: Duration = Duration::from_secs(300);
/// Entries quiet for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
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

    /// `Err(wait)` while this user or source must wait before trying again.
    pub fn check(&self, user: &str, source: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let wait = Self::keys(user, source)
            .iter()
            .filter_map(|(k, _)| entries.get(k)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(w) => Err(w),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, user: &str, source: Option<IpAddr>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > MAX_ENTRIES {
            entries.retain(|_, e| now.duration_since(e.last_failure) < FORGET_AFTER);
        }
        for (key, free) in Self::keys(user, source) {
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
            if entry.failures >= free {
                let doublings = (entry.failures - free).min(16);
                let delay = Duration::from_secs(1u64 << doublings).min(MAX_DELAY);
                entry.blocked_until = Some(now + delay);
            }
        }
    }

    /// A successful login clears the user's record (not the source's: one right password
    /// must not wipe out many wrong guesses at other names).
    pub fn record_success(&self, user: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&Key::User(user.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_held_back_after_three_failures_and_waits_grow() {
        let t = LoginThrottle::default();
        let ip = Some("192.0.2.1".parse().unwrap());
        for _ in 0..2 {
            t.record_failure("ann", ip);
            assert!(t.check("ann", ip).is_ok());
        }
        t.record_failure("ann", ip);
        let first = t.check("ann", None).unwrap_err();
        t.record_failure("ann", ip);
        let second = t.check("ann", None).unwrap_err();
        assert!(second > first);
        // Another user from another address is unaffected.
        assert!(t.check("bob", Some("192.0.2.2".parse().unwrap())).is_ok());
        t.record_success("ann");
        assert!(t.check("ann", None).is_ok());
    }

    #[test]
    fn a_source_guessing_many_names_is_held_back() {
        let t = LoginThrottle::default();
        let ip = Some("192.0.2.9".parse().unwrap());
        for i in 0..FREE_PER_SOURCE {
            t.record_failure(&format!("user{i}"), ip);
        }
        assert!(t.check("someone-new", ip).is_err());
        assert!(t.check("someone-new", None).is_ok());
    }
}
