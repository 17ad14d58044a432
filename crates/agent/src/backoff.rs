//! Reconnection delays: exponential, capped, with full jitter (a uniformly random delay up to
//! the current cap), so that thousands of agents losing one server do not return in step.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The current cap: `min · 2^attempt`, at most `max`.
    pub fn cap(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The next delay, given a random number; advances the cap.
    pub fn next_with(&mut self, random: u64) -> Duration {
        let cap_ms = self.cap().as_millis() as u64;
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(random % (cap_ms + 1))
    }

    pub fn next_delay(&mut self) -> Duration {
        let mut bytes = [0u8; 8];
        // Without randomness the delay is the cap: slower, never wrong.
        if getrandom::fill(&mut bytes).is_err() {
            bytes = [0xff; 8];
        }
        self.next_with(u64::from_le_bytes(bytes))
    }

    /// After a link that stayed up a while, start again from the smallest delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_double_up_to_the_maximum_and_delays_stay_under_them() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut caps = Vec::new();
        for i in 0..10u64 {
            let cap = b.cap();
            caps.push(cap.as_secs());
            let d = b.next_with(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!(d <= cap);
        }
        assert_eq!(caps, vec![1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        b.reset();
        assert_eq!(b.cap(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_delays_over_the_whole_range() {
        let mut seen_low = false;
        let mut seen_high = false;
        for r in 0..1000u64 {
            let mut b = Backoff::new(Duration::from_secs(8), Duration::from_secs(8));
            let d = b.next_with(r * 7919);
            seen_low |= d < Duration::from_secs(2);
            seen_high |= d > Duration::from_secs(6);
        }
        assert!(seen_low && seen_high);
    }
}
