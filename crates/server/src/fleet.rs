//! Finding agents in a large fleet: the API's query (search, status, connection, page) made
//! into the store's filter, and the fleet's counts.
//!
//! Whether an agent is connected lives in memory (the link registry), everything else in the
//! store. `online=` therefore becomes the set of connected ids, taken just before the query,
//! which the store filters by in the same SQL statement as the search, the status and the
//! page. So a page holds exactly `limit` matches and the total counts exactly them, where
//! filtering after the store's LIMIT would leave short pages and wrong totals. Between two
//! pages the set may change (agents come and go); the keyset cursor (the last name) still
//! never repeats an agent nor skips one that matched all along.

use postern_protocol::{AgentId, AgentStatus};

use crate::store::{AgentFilter, AgentTally, IdSet};

#[derive(Clone, Debug, Default)]
pub struct AgentQuery {
    /// Case-insensitive: part of the name, hostname or OS, or a prefix of the DID (with or
    /// without `did:key:`).
    pub search: Option<String>,
    pub status: Option<AgentStatus>,
    pub online: Option<bool>,
    /// At most this many (capped at the store's `MAX_PAGE`); all when absent.
    pub limit: Option<u32>,
    /// Agents after this name.
    pub after: Option<String>,
}

impl AgentQuery {
    /// The store's filter; `connected` is asked for the online agents' ids only when the
    /// query filters on the connection.
    pub fn filter(&self, connected: impl FnOnce() -> Vec<AgentId>) -> AgentFilter {
        AgentFilter {
            search: self.search.clone(),
            status: self.status,
            ids: self.online.map(|online| {
                let ids = connected();
                if online {
                    IdSet::In(ids)
                } else {
                    IdSet::NotIn(ids)
                }
            }),
            after: self.after.clone(),
            limit: self.limit,
        }
    }
}

/// How many agents there are, by status and by connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetCounts {
    pub stored: AgentTally,
    /// Connected (answering or not).
    pub online: u64,
    /// Connected but silent past their missed heartbeats.
    pub not_responding: u64,
}
