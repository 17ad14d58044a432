//! Persistent state behind one trait, so callers never see a database driver.
//! SQLite (embedded, in the data dir) and PostgreSQL implement it with the same SQL text
//! (ids are text, times unix ms, `$N` placeholders) written once in `sql_*.rs`, and the same
//! row mapping (`rows.rs`); each backend's file holds only what differs.

pub mod agents;
pub mod cluster;
#[cfg(test)]
mod conformance;
pub mod events;
mod failure;
pub mod links;
mod postgres;
#[cfg(test)]
mod postgres_conformance;
mod postgres_wakeups;
mod rows;
pub mod sessions;
mod sql_agents;
mod sql_cluster;
mod sql_events;
mod sql_links;
mod sql_sessions;
mod sql_throttle;
mod sql_tokens;
mod sql_users;
mod sqlite;
mod sqlite_agents;
mod sqlite_cluster;
#[cfg(test)]
mod sqlite_concurrency;
#[cfg(test)]
mod sqlite_conformance;
#[cfg(test)]
mod sqlite_events;
#[cfg(test)]
mod sqlite_sessions;
pub mod throttle;
pub mod tokens;
pub mod users;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use postern_protocol::{AgentFacts, AgentId, AgentStatus};

pub use agents::{AgentFilter, AgentPage, AgentSearch, AgentTally, IdSet, PrefixMatch};
pub use cluster::{
    ClusterKeyStore, Database, DatabaseUrlError, NodeRecord, NodeStore, Topic, Wake, Wakeups,
};
pub use events::{Actor, EventAgentRef, EventRecord, EventStore, NewEvent};
pub use failure::StorageFailure;
pub use links::{LinkEnded, LinkRecord, LinkStore};
pub use postgres::{PgPoolSettings, PgStore, testing as postgres_testing};
pub use sessions::{
    SessionChange, SessionFilter, SessionInsert, SessionRecord, SessionStore, TransitionRecord,
};
pub use sqlite::SqliteStore;
pub use throttle::{LoginAttempts, LoginThrottleStore, StoredAttempts};
pub use tokens::{TokenId, TokenPays, TokenRecord, TokenStore, TokenUse};
pub use users::{UserId, UserRecord, UserStore};

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
    /// Text the request gave holds a character the database cannot store or compare (NUL:
    /// PostgreSQL refuses it in text, where SQLite keeps it): the request's fault.
    #[error("text holding a NUL character cannot be stored or looked up")]
    Unstorable,
    /// The database named by the `database` setting cannot be opened.
    #[error("cannot open the database: {0}")]
    Open(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if failure::is_unstorable_text(&e) {
            return Self::Unstorable;
        }
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

/// Opens (creating or migrating if needed) the store `database` names; `data_dir` holds the
/// store when no database is set. A PostgreSQL pool gets the default settings.
pub async fn open(database: &Database, data_dir: &Path) -> StoreResult<Arc<dyn Store>> {
    open_with(database, data_dir, PgPoolSettings::default()).await
}

/// `open`, with a PostgreSQL pool of these settings (the server's `database_*` settings).
pub async fn open_with(
    database: &Database,
    data_dir: &Path,
    pool: PgPoolSettings,
) -> StoreResult<Arc<dyn Store>> {
    match database {
        Database::DataDir => Ok(Arc::new(SqliteStore::open(data_dir).await?)),
        Database::Sqlite(path) => Ok(Arc::new(SqliteStore::open_file(path).await?)),
        Database::Postgres(url) => Ok(Arc::new(PgStore::open(url, pool).await?)),
    }
}

#[derive(Clone, Debug)]
pub struct AgentRecord {
    pub id: AgentId,
    pub did: String,
    pub name: String,
    pub ssh_public_key: String,
    pub status: AgentStatus,
    pub facts: AgentFacts,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
    pub remote_addr: Option<String>,
}

/// Rows written through a store since it opened, by table, where the database lets the store
/// count them (SQLite, by its update hook); empty where it does not (PostgreSQL: its
/// statistics count the whole database, not one node).
pub trait WriteCount {
    fn rows_written(&self) -> std::collections::BTreeMap<String, u64>;
}

#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + TokenStore
    + EventStore
    + LoginThrottleStore
    + AgentSearch
    + LinkStore
    + WriteCount
    + ClusterKeyStore
    + NodeStore
    + Wakeups
    + Send
    + Sync
    + 'static
{
    // Agents
    async fn insert_agent(&self, agent: &AgentRecord) -> StoreResult<()>;
    async fn agent_by_ssh_key(&self, ssh_public_key: &str) -> StoreResult<Option<AgentRecord>>;
    async fn agent_by_did(&self, did: &str) -> StoreResult<Option<AgentRecord>>;
    async fn agent_by_id(&self, id: &AgentId) -> StoreResult<Option<AgentRecord>>;
    async fn agent_name_taken(&self, name: &str) -> StoreResult<bool>;
    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>>;
    async fn count_agents(&self, status: AgentStatus) -> StoreResult<u64>;
    async fn set_agent_status(
        &self,
        id: &AgentId,
        status: AgentStatus,
        by: &str,
        now: i64,
    ) -> StoreResult<()>;
    async fn update_agent_facts(&self, id: &AgentId, facts: &AgentFacts) -> StoreResult<()>;
    async fn update_agent_seen(
        &self,
        id: &AgentId,
        last_seen: i64,
        remote_addr: Option<&str>,
    ) -> StoreResult<()>;
}
