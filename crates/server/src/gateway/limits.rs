//! Limits on agent connections before their control channel is up: how many may be in their
//! handshake at once (in total and per source), and the deadline by which each must be
//! enrolled or waiting for approval. See docs/ARCHITECTURE.md, "Limits".

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::limits::{FileLimit, Source};

/// How often, at most, refusals over the handshake limits are logged (with their count).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The pre-control limits of one gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeConfig {
    pub timeout: Duration,
    pub max_total: usize,
    pub max_per_source: usize,
}

impl HandshakeConfig {
    /// Holds the total to a quarter of the open-file limit, so that connections that never
    /// finish their handshake can never take the files the HTTP API and the agents' links
    /// need, whatever limit the server was started with.
    pub fn within(self, files: Option<FileLimit>) -> Self {
        let Some(files) = files else { return self };
        let quarter = usize::try_from(files.soft / 4).unwrap_or(usize::MAX).max(1);
        if quarter < self.max_total {
            tracing::warn!(
                configured = self.max_total,
                allowed = quarter,
                open_file_limit = files.soft,
                "agent handshakes held to a quarter of the open-file limit"
            );
        }
        Self {
            max_total: self.max_total.min(quarter),
            max_per_source: self.max_per_source.min(self.max_total.min(quarter)),
            ..self
        }
    }
}

/// Why a new connection was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerSource,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_source: HashMap<Source, usize>,
    refused_unlogged: u64,
    last_logged: Option<Instant>,
}

/// Counts the connections in their handshake; an `Admission` is one of them.
pub struct Handshakes {
    config: HandshakeConfig,
    counts: Mutex<Counts>,
}

impl Handshakes {
    pub fn new(config: HandshakeConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            counts: Mutex::new(Counts::default()),
        })
    }

    pub fn config(&self) -> HandshakeConfig {
        self.config
    }

    /// Admits a connection from `peer`, or says why not (and logs refusals, summarised).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admission, Refusal> {
        let source = Source::from(peer);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let from_source = counts.by_source.get(&source).copied().unwrap_or(0);
        let refusal = if counts.total >= self.config.max_total {
            Some(Refusal::Total)
        } else if from_source >= self.config.max_per_source {
            Some(Refusal::PerSource)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            counts.refused_unlogged += 1;
            let now = Instant::now();
            if counts
                .last_logged
                .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL)
            {
                tracing::warn!(
                    refused = counts.refused_unlogged,
                    last = %source,
                    ?refusal,
                    in_handshake = counts.total,
                    "refused agent connections over the handshake limits"
                );
                counts.refused_unlogged = 0;
                counts.last_logged = Some(now);
            }
            return Err(refusal);
        }
        counts.total += 1;
        counts.by_source.insert(source, from_source + 1);
        Ok(Admission {
            handshakes: self.clone(),
            source,
        })
    }

    /// Connections in their handshake now (total).
    pub fn in_handshake(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or_default()
    }

    fn release(&self, source: Source) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                counts.by_source.remove(&source);
            }
        }
    }
}

/// One connection counted as in its handshake, until dropped.
pub struct Admission {
    handshakes: Arc<Handshakes>,
    source: Source,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.handshakes.release(self.source);
    }
}

/// Given to the control task: the deadline of the handshake, and the word that the control
/// channel is up (the agent enrolled, or waits for approval).
pub struct ControlUp {
    deadline: Instant,
    accepted_at: i64,
    up: oneshot::Sender<()>,
}

impl ControlUp {
    /// For a connection accepted at `accepted_at` (wall-clock ms) that must be enrolled by
    /// `deadline`.
    pub fn new(deadline: Instant, accepted_at: i64) -> (Self, oneshot::Receiver<()>) {
        let (up, rx) = oneshot::channel();
        (
            Self {
                deadline,
                accepted_at,
                up,
            },
            rx,
        )
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// When the connection was accepted: the order of an agent's links across nodes is the
    /// order it dialled them, not the order their nodes got through enrolling them.
    pub fn accepted_at(&self) -> i64 {
        self.accepted_at
    }

    pub fn done(self) {
        let _ = self.up.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshakes(total: usize, per_source: usize) -> Arc<Handshakes> {
        Handshakes::new(HandshakeConfig {
            timeout: Duration::from_secs(30),
            max_total: total,
            max_per_source: per_source,
        })
    }

    #[test]
    fn a_source_over_its_share_is_refused_and_others_still_come_in() {
        let h = handshakes(4, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = h.admit(a).unwrap();
        let _second = h.admit(a).unwrap();
        assert_eq!(h.admit(a).err(), Some(Refusal::PerSource));
        let _third = h.admit(b).unwrap();
        let _fourth = h.admit(b).unwrap();
        assert_eq!(
            h.admit("192.0.2.3".parse().unwrap()).err(),
            Some(Refusal::Total)
        );
        drop(first);
        assert_eq!(h.in_handshake(), 3);
        assert!(h.admit(a).is_ok());
    }

    #[test]
    fn the_total_is_held_below_the_file_limit() {
        let config = HandshakeConfig {
            timeout: Duration::from_secs(30),
            max_total: 256,
            max_per_source: 16,
        };
        let low = config.within(Some(FileLimit { soft: 40, hard: 40 }));
        assert_eq!((low.max_total, low.max_per_source), (10, 10));
        let high = config.within(Some(FileLimit {
            soft: 65536,
            hard: 65536,
        }));
        assert_eq!(high, config);
    }
}
