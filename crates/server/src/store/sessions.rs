//! Stored SSH sessions and their history.

use async_trait::async_trait;
use postern_protocol::{SessionId, SessionState};

use super::StoreResult;

#[derive(Clone, Debug)]
pub struct SessionRecord {
    pub id: SessionId,
    pub agent_id: String,
    pub user_id: String,
    pub user_name: String,
    pub state: SessionState,
    pub port: Option<u16>,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct TransitionRecord {
    pub state: SessionState,
    pub reason: Option<String>,
    pub time: i64,
}

#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    pub agent_id: Option<String>,
    pub user_id: Option<String>,
    pub state: Option<SessionState>,
    /// Newest first, at most this many.
    pub limit: u32,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session with its first transition.
    async fn insert_session(&self, session: &SessionRecord) -> StoreResult<()>;
    /// Moves a session to `state` (with reason and port) and appends the transition.
    async fn record_transition(
        &self,
        id: &SessionId,
        state: SessionState,
        reason: Option<&str>,
        port: Option<u16>,
        time: i64,
    ) -> StoreResult<()>;
    async fn session(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>>;
    async fn session_history(&self, id: &SessionId) -> StoreResult<Vec<TransitionRecord>>;
    async fn list_sessions(&self, filter: &SessionFilter) -> StoreResult<Vec<SessionRecord>>;
    /// Sessions in any state but stopped and failed.
    async fn unfinished_sessions(&self) -> StoreResult<Vec<SessionRecord>>;
}
