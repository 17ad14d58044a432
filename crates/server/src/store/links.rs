//! Which node holds each agent's link, in the store, so that every node can tell every
//! agent's true online state whichever node the agent dialled. The node holding a link
//! writes its row when the link comes up or goes down and when its liveness changes; never
//! per heartbeat. `last_seen` stays in each node's memory and reaches the store when a link
//! ends, when the node stops (`store_last_seen`, batched), and, for a node that died, as its
//! last heartbeat when it is taken over or starts again: an idle fleet writes nothing.

use async_trait::async_trait;
use postern_protocol::AgentId;
use postern_protocol::api::Liveness;

use super::{StoreError, StoreResult};
use crate::node::NodeId;

/// How many agents one `store_last_seen` statement names: two parameters each, well within
/// SQLite's 32,766 and PostgreSQL's 65,535 parameters per statement.
pub const LAST_SEEN_BATCH: usize = 1000;

/// An agent's link as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRecord {
    pub agent_id: AgentId,
    /// The node that holds it.
    pub node: NodeId,
    pub connected_at: i64,
    /// `Online` or `NotResponding` (a link that is down has no row).
    pub liveness: Liveness,
}

/// What ending a node's link did to the agent's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEnded {
    /// The row was this node's and is gone: the agent is offline.
    Removed,
    /// Another node holds the agent's link (it dialled there since): still online.
    HeldBy(NodeId),
    /// There was no row (it was never written, or its node was taken over).
    Absent,
}

/// Stores `$2` as `last_seen` of the agents whose links node `$1` held, unless they were seen
/// later (on another node since): a dead node's agents were linked at least until its last
/// heartbeat.
pub const LAST_SEEN_OF_NODE: &str = "UPDATE agents SET last_seen = $2 \
     WHERE id IN (SELECT agent_id FROM agent_links WHERE node_id = $1) \
     AND (last_seen IS NULL OR last_seen < $2)";

/// A link row as every database returns it, before it is checked.
pub struct LinkRow {
    pub agent_id: String,
    pub node_id: String,
    pub connected_at: i64,
    pub liveness: String,
}

impl TryFrom<LinkRow> for LinkRecord {
    type Error = StoreError;

    fn try_from(row: LinkRow) -> StoreResult<Self> {
        let node = NodeId::parse(&row.node_id).ok_or_else(|| {
            StoreError::Corrupt(format!("agent_links.node_id: {:?}", row.node_id))
        })?;
        let liveness = match row.liveness.as_str() {
            "online" => Liveness::Online,
            "not_responding" => Liveness::NotResponding,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "agent_links.liveness: {other:?}"
                )));
            }
        };
        Ok(Self {
            agent_id: row.agent_id.into(),
            node,
            connected_at: row.connected_at,
            liveness,
        })
    }
}

#[async_trait]
pub trait LinkStore: Send + Sync {
    /// The link's node holds it from now on, unless the row names a link that came up later
    /// (`connected_at`) on another node: then the row stays and false is returned. A link's
    /// row can be written late (its node waited for the database while the agent gave up
    /// and dialled another node): the newer link must keep the row, or the old link's end
    /// would remove it and leave a connected agent shown offline.
    async fn link_up(&self, link: &LinkRecord) -> StoreResult<bool>;
    /// A liveness change of a link `node` holds; false when `node` no longer holds it.
    async fn link_liveness(
        &self,
        agent_id: &AgentId,
        node: &NodeId,
        liveness: Liveness,
    ) -> StoreResult<bool>;
    /// The link `node` held ended: the agent's `last_seen` is stored, and its row removed if
    /// `node` still holds it (a newer link on another node stays).
    async fn link_down(
        &self,
        agent_id: &AgentId,
        node: &NodeId,
        last_seen: i64,
    ) -> StoreResult<LinkEnded>;
    /// Every link row, of live and dead nodes alike.
    async fn list_links(&self) -> StoreResult<Vec<LinkRecord>>;
    /// Removes every row of `node` (at its start: the links of its last run are gone), their
    /// agents last seen at `last_seen` (that run's last heartbeat) unless seen later.
    /// Returns the agents whose rows went.
    async fn clear_node_links(&self, node: &NodeId, last_seen: i64) -> StoreResult<Vec<AgentId>>;
    /// Takes a dead node over, once: removes its `nodes` row if its heartbeat is still
    /// `heartbeat_at` (compare-and-set, so of several survivors exactly one wins), and its
    /// link rows with it, their agents last seen at `heartbeat_at` unless seen later, in one
    /// transaction. `Some(agents whose rows went)` to the winner, `None` to everyone else (and
    /// when the node heartbeated again).
    async fn take_over_node(
        &self,
        node: &NodeId,
        heartbeat_at: i64,
    ) -> StoreResult<Option<Vec<AgentId>>>;
    /// Stores the agents' `last_seen` times: one statement per `LAST_SEEN_BATCH` agents.
    async fn store_last_seen(&self, seen: &[(AgentId, i64)]) -> StoreResult<()>;
}

/// `UPDATE agents SET last_seen = CASE id WHEN $1 THEN $2 … END WHERE id IN ($1, …)` for
/// `n` agents: the same text on SQLite and PostgreSQL (neither's `UPDATE … FROM VALUES`
/// reads the same on the other). Parameters: id, time, id, time, …
pub fn last_seen_statement(n: usize) -> String {
    let mut cases = String::new();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (id, time) = (2 * i + 1, 2 * i + 2);
        cases.push_str(&format!(" WHEN ${id} THEN CAST(${time} AS BIGINT)"));
        ids.push(format!("${id}"));
    }
    format!(
        "UPDATE agents SET last_seen = CASE id{cases} END WHERE id IN ({})",
        ids.join(", ")
    )
}
