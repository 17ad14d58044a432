//! Presence changes since a cursor: what the app polls to keep every card's online state
//! true without fetching the fleet again.
//!
//! Every link coming up or going down, and every change of an online link's liveness (not
//! responding after missed heartbeats, responding again), takes the next version number. An
//! online link remembers the version of its last change; a link that went down leaves a
//! tombstone with its version.
//! "What changed since version v" is then the online links and tombstones newer than v. A
//! cursor names the registry's instance (`epoch`), so a cursor from before a server restart,
//! or older than the oldest tombstone kept, gets the full list of online agents instead.

use std::collections::{HashMap, VecDeque};

use postern_protocol::AgentId;
use postern_protocol::api::Liveness;

use crate::auth::secret;

/// Tombstones kept for deltas. A poller that missed more changes than this (a storm between
/// two polls) gets the full online list, which is what it needs then anyway; 4,096 entries
/// cost about 400 KiB at most.
pub const MAX_TOMBSTONES: usize = 4096;

/// One agent's presence as a delta or full list reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    pub id: AgentId,
    pub online: bool,
    pub last_seen: i64,
    /// Online or not responding while connected; offline otherwise.
    pub liveness: Liveness,
}

/// The answer to "what changed since this cursor".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceDelta {
    pub cursor: String,
    /// True: `entries` lists every online agent and every other agent is offline.
    pub full: bool,
    pub entries: Vec<PresenceEntry>,
}

/// The version counter and the tombstones; lives beside the link map, under its own lock that
/// is only ever taken while the map's lock is held, so both change together.
pub struct PresenceLog {
    epoch: String,
    version: u64,
    /// Deltas since a version below this cannot be answered (tombstones were dropped).
    floor: u64,
    gone: HashMap<AgentId, (u64, i64)>,
    /// Tombstones oldest first, to drop the oldest; an entry whose version no longer matches
    /// `gone` was superseded (the agent came back or left again).
    order: VecDeque<(u64, AgentId)>,
}

impl Default for PresenceLog {
    fn default() -> Self {
        Self {
            epoch: secret::new_id()[..12].to_owned(),
            version: 0,
            floor: 0,
            gone: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl PresenceLog {
    /// The version for a link that just came up (its tombstone, if any, is gone).
    pub fn up(&mut self, agent_id: &AgentId) -> u64 {
        self.version += 1;
        self.gone.remove(agent_id);
        self.version
    }

    /// The version for an online link whose liveness just changed.
    pub fn changed(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Records that a link went down.
    pub fn down(&mut self, agent_id: &AgentId, last_seen: i64) {
        self.version += 1;
        self.gone
            .insert(agent_id.clone(), (self.version, last_seen));
        self.order.push_back((self.version, agent_id.clone()));
        while self.gone.len() > MAX_TOMBSTONES || self.order.len() > 2 * MAX_TOMBSTONES {
            let Some((version, id)) = self.order.pop_front() else {
                break;
            };
            self.floor = self.floor.max(version);
            if self.gone.get(&id).is_some_and(|(v, _)| *v == version) {
                self.gone.remove(&id);
            }
        }
    }

    pub fn cursor(&self) -> String {
        format!("{}.{}", self.epoch, self.version)
    }

    /// The version a cursor of this instance names, if it can still be answered with a delta.
    fn since(&self, cursor: Option<&str>) -> Option<u64> {
        let (epoch, version) = cursor?.split_once('.')?;
        let version: u64 = version.parse().ok()?;
        (epoch == self.epoch && version >= self.floor && version <= self.version).then_some(version)
    }

    /// Changes since `cursor`, given the online links as (id, version of last change, last
    /// seen, liveness).
    pub fn delta<'a>(
        &self,
        cursor: Option<&str>,
        online: impl Iterator<Item = (&'a AgentId, u64, i64, Liveness)>,
    ) -> PresenceDelta {
        let Some(since) = self.since(cursor) else {
            return PresenceDelta {
                cursor: self.cursor(),
                full: true,
                entries: online
                    .map(|(id, _, last_seen, liveness)| PresenceEntry {
                        id: id.clone(),
                        online: true,
                        last_seen,
                        liveness,
                    })
                    .collect(),
            };
        };
        let mut entries: Vec<PresenceEntry> = online
            .filter(|(_, changed, _, _)| *changed > since)
            .map(|(id, _, last_seen, liveness)| PresenceEntry {
                id: id.clone(),
                online: true,
                last_seen,
                liveness,
            })
            .collect();
        entries.extend(
            self.gone
                .iter()
                .filter(|(_, (version, _))| *version > since)
                .map(|(id, (_, last_seen))| PresenceEntry {
                    id: id.clone(),
                    online: false,
                    last_seen: *last_seen,
                    liveness: Liveness::Offline,
                }),
        );
        PresenceDelta {
            cursor: self.cursor(),
            full: false,
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(log: &PresenceLog, cursor: Option<&str>, online: &[(&str, u64)]) -> PresenceDelta {
        let ids: Vec<(AgentId, u64)> = online
            .iter()
            .map(|(i, v)| (AgentId::from(*i), *v))
            .collect();
        let mut d = log.delta(
            cursor,
            ids.iter().map(|(i, v)| (i, *v, 7, Liveness::Online)),
        );
        d.entries.sort_by(|a, b| a.id.cmp(&b.id));
        d
    }

    #[test]
    fn a_delta_lists_only_what_changed_both_ways() {
        let mut log = PresenceLog::default();
        let a = log.up(&"a".into());
        let b = log.up(&"b".into());
        let first = delta(&log, None, &[("a", a), ("b", b)]);
        assert!(first.full);
        assert_eq!(first.entries.len(), 2);

        // Nothing moved: an empty delta with the same cursor.
        let quiet = delta(&log, Some(&first.cursor), &[("a", a), ("b", b)]);
        assert!(!quiet.full && quiet.entries.is_empty());
        assert_eq!(quiet.cursor, first.cursor);

        log.down(&"a".into(), 5);
        let c = log.up(&"c".into());
        let moved = delta(&log, Some(&first.cursor), &[("b", b), ("c", c)]);
        assert!(!moved.full);
        let got: Vec<(&str, bool)> = moved
            .entries
            .iter()
            .map(|e| (e.id.as_str(), e.online))
            .collect();
        assert_eq!(got, [("a", false), ("c", true)]);
        assert_eq!(moved.entries[0].last_seen, 5);

        // Back online: the tombstone goes, only the link is reported.
        let a2 = log.up(&"a".into());
        let back = delta(&log, Some(&moved.cursor), &[("a", a2), ("b", b), ("c", c)]);
        let got: Vec<(&str, bool)> = back
            .entries
            .iter()
            .map(|e| (e.id.as_str(), e.online))
            .collect();
        assert_eq!(got, [("a", true)]);
    }

    #[test]
    fn foreign_stale_or_garbled_cursors_get_the_full_list() {
        let mut log = PresenceLog::default();
        let a = log.up(&"a".into());
        let other = PresenceLog::default();
        for cursor in [
            other.cursor(),
            "garbage".into(),
            format!("{}.99", log.epoch),
        ] {
            let d = delta(&log, Some(&cursor), &[("a", a)]);
            assert!(d.full, "{cursor}");
            assert_eq!(d.entries.len(), 1);
        }
        let old = log.cursor();
        for i in 0..=MAX_TOMBSTONES {
            log.down(&format!("x{i}").into(), 0);
        }
        assert!(delta(&log, Some(&old), &[("a", a)]).full);
        assert!(log.gone.len() <= MAX_TOMBSTONES);
    }
}
