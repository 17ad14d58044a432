//! Stored SSH sessions and their history. The store decides every transition by
//! compare-and-set on the stored state, and "one open session per user and agent" is a unique
//! index: both hold however many tasks or nodes write at once.

use async_trait::async_trait;
use postern_protocol::{AgentId, SessionId, SessionState};

use super::{NewEvent, StoreResult, UserId};
use crate::node::NodeId;

#[derive(Clone, Debug)]
pub struct SessionRecord {
    pub id: SessionId,
    pub agent_id: AgentId,
    pub user_id: UserId,
    pub user_name: String,
    pub state: SessionState,
    pub port: Option<u16>,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
    /// The node that holds the session: the one that created it, then the one that bound
    /// its tunnel. `None` for sessions stored before nodes were recorded.
    pub node: Option<NodeId>,
    /// The agent keeps shells of this session (it listed it in its last `Kept`): if the
    /// node holding it is lost, it detaches instead of ending.
    pub shells_kept: bool,
}

#[derive(Clone, Debug)]
pub struct TransitionRecord {
    pub state: SessionState,
    pub reason: Option<String>,
    pub time: i64,
}

#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    pub agent_id: Option<AgentId>,
    pub user_id: Option<UserId>,
    pub state: Option<SessionState>,
    /// Newest first, at most this many.
    pub limit: u32,
}

/// One compare-and-set step: the session moves from `from` to `to` only if it is still in
/// `from` when the write lands.
#[derive(Clone, Debug)]
pub struct SessionChange<'a> {
    pub id: &'a SessionId,
    pub from: SessionState,
    pub to: SessionState,
    pub reason: Option<&'a str>,
    /// The tunnel port, once bound.
    pub port: Option<u16>,
    /// Set when a node takes the session over (binds its tunnel).
    pub node: Option<&'a NodeId>,
    /// The node the change was decided on as the session's holder (None: none recorded): it
    /// applies only if the session still names that node, as `from` guards its state. A
    /// survivor deciding on a lost node's session must not move one another node took over
    /// meanwhile, even back in the same state.
    pub holder: Option<&'a NodeId>,
    pub time: i64,
}

/// The outcome of storing a new session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionInsert {
    /// Stored with its first transition and its event (this id).
    Inserted { event: i64 },
    /// The user already has an open session on the agent; nothing was stored.
    AlreadyOpen,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new open session with its first transition and `event`, unless the user
    /// already has an open session on the agent.
    async fn insert_session(
        &self,
        session: &SessionRecord,
        event: &NewEvent,
    ) -> StoreResult<SessionInsert>;
    /// Applies `change` and appends its transition and `event`, all or nothing. `None` (and
    /// nothing written) when the session is no longer in `change.from`: another writer moved it
    /// first. Otherwise the id of the stored event.
    async fn transition_session(
        &self,
        change: &SessionChange<'_>,
        event: &NewEvent,
    ) -> StoreResult<Option<i64>>;
    async fn session(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>>;
    async fn session_history(&self, id: &SessionId) -> StoreResult<Vec<TransitionRecord>>;
    async fn list_sessions(&self, filter: &SessionFilter) -> StoreResult<Vec<SessionRecord>>;
    /// Sessions of `node` (and those stored before nodes were recorded) in any state but
    /// stopped and failed, oldest first.
    async fn unfinished_sessions(&self, node: &NodeId) -> StoreResult<Vec<SessionRecord>>;
    /// Records which open sessions of `agent_id` the agent keeps shells for (`kept`, its
    /// latest `Kept`): those are marked, its other sessions are not. Writes only what changed;
    /// ids of other agents' sessions are ignored.
    async fn set_shells_kept(&self, agent_id: &AgentId, kept: &[SessionId]) -> StoreResult<()>;
}

/// A session row as any database returns it: the columns in plain types, turned into a
/// record (and checked) here, once for every database.
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: String,
    pub agent_id: String,
    pub user_id: String,
    pub user_name: String,
    pub state: String,
    pub port: Option<i64>,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
    pub node_id: Option<String>,
    /// 0 or 1.
    pub shells_kept: i64,
}

/// The columns of `SessionRow`, in its order.
pub const SESSION_COLUMNS: &str = "id, agent_id, user_id, user_name, state, port, reason, \
     created_at, updated_at, ended_at, node_id, shells_kept";

pub fn parse_state(text: &str) -> StoreResult<SessionState> {
    text.parse()
        .map_err(|e| super::StoreError::Corrupt(format!("sessions.state: {e}")))
}

impl TryFrom<SessionRow> for SessionRecord {
    type Error = super::StoreError;

    fn try_from(row: SessionRow) -> StoreResult<Self> {
        let corrupt = |what: &str, value: &dyn std::fmt::Debug| {
            super::StoreError::Corrupt(format!("{what} {value:?}"))
        };
        Ok(SessionRecord {
            id: SessionId::parse(&row.id).ok_or_else(|| corrupt("sessions.id", &row.id))?,
            state: parse_state(&row.state)?,
            port: row
                .port
                .map(|p| u16::try_from(p).map_err(|_| corrupt("sessions.port", &p)))
                .transpose()?,
            node: row
                .node_id
                .map(|n| NodeId::parse(&n).ok_or_else(|| corrupt("sessions.node_id", &n)))
                .transpose()?,
            agent_id: AgentId::from(row.agent_id),
            user_id: UserId::from(row.user_id),
            user_name: row.user_name,
            reason: row.reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
            ended_at: row.ended_at,
            shells_kept: row.shells_kept != 0,
        })
    }
}
