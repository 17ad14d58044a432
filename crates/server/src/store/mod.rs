//! Persistent state behind one trait, so callers never see a database driver.
//! SQLite (embedded, in the data dir) is the implementation today; PostgreSQL will implement
//! the same trait with the same SQL text (ids are text, times unix ms, `$N` placeholders).

pub mod agents;
#[cfg(test)]
mod conformance;
pub mod sessions;
mod sqlite;
mod sqlite_agents;
#[cfg(test)]
mod sqlite_concurrency;
#[cfg(test)]
mod sqlite_conformance;
mod sqlite_sessions;
mod sqlite_users;
pub mod users;

use async_trait::async_trait;
use postern_protocol::api::EventKind;
use postern_protocol::{AgentFacts, AgentStatus, SessionId, SessionState};

pub use agents::{AgentFilter, AgentPage, AgentSearch, AgentTally, IdSet, PrefixMatch};
pub use sessions::{
    SessionChange, SessionFilter, SessionInsert, SessionRecord, SessionStore, TransitionRecord,
};
pub use sqlite::{SqliteStore, StorageFailure};
pub use users::{UserRecord, UserStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    // The cause is in the message and not a `source()` (one cause, once): the server logs
    // these with `%error`, which shows only the message.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The store's file in the data directory.
pub const STORE_FILE: &str = "postern.db";

#[derive(Clone, Debug)]
pub struct AgentRecord {
    pub id: String,
    pub did: String,
    pub name: String,
    pub ssh_public_key: String,
    pub status: AgentStatus,
    pub facts: AgentFacts,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
    pub remote_addr: Option<String>,
}

#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub id: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: u32,
    pub uses: u32,
    pub revoked: bool,
}

/// The outcome of presenting an enrollment token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenUse {
    /// Valid: one use was taken.
    Consumed,
    Expired,
    UsedUp,
    Revoked,
    Unknown,
}

#[derive(Clone, Debug)]
pub struct NewEvent {
    pub time: i64,
    pub kind: EventKind,
    pub actor: String,
    pub agent: Option<EventAgentRef>,
    pub session: Option<(SessionId, SessionState)>,
    pub detail: String,
}

#[derive(Clone, Debug)]
pub struct EventAgentRef {
    pub id: String,
    pub name: String,
    pub did: String,
}

#[derive(Clone, Debug)]
pub struct EventRecord {
    pub id: i64,
    pub event: NewEvent,
}

#[async_trait]
pub trait Store: UserStore + SessionStore + AgentSearch + Send + Sync + 'static {
    // Agents
    async fn insert_agent(&self, agent: &AgentRecord) -> StoreResult<()>;
    async fn agent_by_ssh_key(&self, ssh_public_key: &str) -> StoreResult<Option<AgentRecord>>;
    async fn agent_by_did(&self, did: &str) -> StoreResult<Option<AgentRecord>>;
    async fn agent_by_id(&self, id: &str) -> StoreResult<Option<AgentRecord>>;
    async fn agent_name_taken(&self, name: &str) -> StoreResult<bool>;
    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>>;
    async fn count_agents(&self, status: AgentStatus) -> StoreResult<u64>;
    async fn set_agent_status(
        &self,
        id: &str,
        status: AgentStatus,
        by: &str,
        now: i64,
    ) -> StoreResult<()>;
    async fn update_agent_facts(&self, id: &str, facts: &AgentFacts) -> StoreResult<()>;
    async fn update_agent_seen(
        &self,
        id: &str,
        last_seen: i64,
        remote_addr: Option<&str>,
    ) -> StoreResult<()>;

    // Enrollment tokens
    async fn insert_token(&self, token: &TokenRecord, token_hash: &str) -> StoreResult<()>;
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    /// Revokes by id or unique id prefix; returns the revoked token.
    async fn revoke_token(&self, id: &str, now: i64) -> StoreResult<Option<TokenRecord>>;
    /// Takes one use of the token, atomically, if it is valid at `now`.
    async fn use_token(&self, token_hash: &str, now: i64) -> StoreResult<TokenUse>;

    // Events
    async fn insert_event(&self, event: &NewEvent) -> StoreResult<i64>;
    /// Events with id greater than `after`, oldest first.
    async fn events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<EventRecord>>;
    /// The newest `limit` events, oldest first.
    async fn latest_events(&self, limit: u32) -> StoreResult<Vec<EventRecord>>;
}
