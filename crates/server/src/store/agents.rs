//! Finding agents in a large fleet, in the store: a search over name, DID prefix, hostname
//! and OS, filters on status and on a set of ids (the caller's "online" set), and pages in
//! name order with a keyset cursor (the last name of a page: names are unique), so that a
//! fleet of 10,000 agents is read a page at a time and never loaded whole to be filtered.

use async_trait::async_trait;
use postern_protocol::{AgentId, AgentStatus};

use super::{AgentRecord, StoreResult};

/// The most agents one page may hold: enough for a screen of cards, small enough to stay a
/// few hundred kilobytes of JSON.
pub const MAX_PAGE: u32 = 1000;

/// Agents whose id is, or is not, in a set the store does not know (which agents are
/// connected lives in memory, in the link registry).
#[derive(Clone, Debug)]
pub enum IdSet {
    In(Vec<AgentId>),
    NotIn(Vec<AgentId>),
}

#[derive(Clone, Debug, Default)]
pub struct AgentFilter {
    /// Case-insensitive: part of the name, hostname or OS, or a prefix of the DID (with or
    /// without `did:key:`). Blank means no search.
    pub search: Option<String>,
    pub status: Option<AgentStatus>,
    pub ids: Option<IdSet>,
    /// Agents after this name.
    pub after: Option<String>,
    /// At most this many (1 to `MAX_PAGE`); every match when absent.
    pub limit: Option<u32>,
}

/// One page of agents and where the next one starts.
#[derive(Debug)]
pub struct AgentPage {
    pub agents: Vec<AgentRecord>,
    /// How many agents match, over all pages.
    pub total: u64,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
}

/// How many agents have each status, and how many have a session open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentTally {
    pub pending: u64,
    pub approved: u64,
    pub rejected: u64,
    pub revoked: u64,
    /// Agents with at least one session requested, starting or running.
    pub with_sessions: u64,
}

/// The agents a reference's prefix names (see `AgentSearch::agents_by_prefix`).
#[derive(Debug)]
pub enum PrefixMatch {
    None,
    One(Box<AgentRecord>),
    /// The names of every match, in name order.
    Many(Vec<String>),
}

#[async_trait]
pub trait AgentSearch: Send + Sync {
    /// The page of agents matching `filter`, in name order.
    async fn find_agents(&self, filter: &AgentFilter) -> StoreResult<AgentPage>;
    async fn agent_tally(&self) -> StoreResult<AgentTally>;
    /// The agent whose id, name or DID is exactly `reference` (the first by name when it is
    /// one agent's id and another's name).
    async fn agent_by_exact(&self, reference: &str) -> StoreResult<Option<AgentRecord>>;
    /// The agents whose name or DID starts with `prefix` (case-sensitive), or whose DID does
    /// after `did:key:`. `prefix` is not blank.
    async fn agents_by_prefix(&self, prefix: &str) -> StoreResult<PrefixMatch>;
}
