//! The embedded SQLite store (WAL mode, one file in the data dir).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use postern_protocol::{AgentFacts, AgentStatus};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use tokio::sync::broadcast;

use super::cluster::{WAKE_BUFFER, Wake};
use super::{AgentRecord, Store, StoreError, StoreResult};

pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// This process's wake-ups (see `Wakeups`).
    pub(super) wakes: broadcast::Sender<Wake>,
}

impl SqliteStore {
    /// Opens (creating if needed) `postern.db` in `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> StoreResult<Self> {
        Self::open_file(&data_dir.join(super::STORE_FILE)).await
    }

    /// Opens (creating if needed) the SQLite file at `path` and applies migrations.
    pub async fn open_file(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // The CLI's `admin add-user` may write while a server runs.
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            wakes: broadcast::channel(WAKE_BUFFER).0,
        })
    }
}

impl SqliteStore {
    /// A transaction that takes the write lock at its start. Every read-then-write goes
    /// through one: a deferred transaction that read first cannot upgrade once another
    /// writer has committed (SQLITE_BUSY_SNAPSHOT, which `busy_timeout` cannot wait out),
    /// while `BEGIN IMMEDIATE` waits its turn under the busy timeout.
    pub(super) async fn write_tx(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// How the storage failed, for errors that are not about the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageFailure {
    /// No space left: writes fail until some is freed (reads still work).
    Full,
    /// The database cannot be used right now (I/O error, locked past the busy timeout,
    /// unreadable, read-only, pool closed).
    Unavailable,
}

impl StoreError {
    /// Whether this error is the storage failing (rather than the data or the request).
    pub fn storage_failure(&self) -> Option<StorageFailure> {
        let Self::Database(e) = self else {
            return None;
        };
        match e {
            sqlx::Error::Database(db) => {
                // SQLite's extended result code: the primary code is its low byte.
                let code: i32 = db.code()?.parse().ok()?;
                match code & 0xff {
                    SQLITE_FULL => Some(StorageFailure::Full),
                    SQLITE_BUSY | SQLITE_LOCKED | SQLITE_READONLY | SQLITE_IOERR
                    | SQLITE_CORRUPT | SQLITE_CANTOPEN | SQLITE_NOTADB => {
                        Some(StorageFailure::Unavailable)
                    }
                    _ => None,
                }
            }
            sqlx::Error::Io(io) if io.raw_os_error() == Some(ENOSPC) => Some(StorageFailure::Full),
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Some(StorageFailure::Unavailable),
            _ => None,
        }
    }
}

// SQLite's primary result codes (sqlite3.h) and Linux's "no space left on device".
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_NOTADB: i32 = 26;
const ENOSPC: i32 = 28;

pub(super) fn conflict(what: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_owned())
        }
        _ => StoreError::Database(e),
    }
}

pub(super) fn corrupt(field: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{field}: {e}"))
}

pub(super) fn agent_from_row(row: &SqliteRow) -> StoreResult<AgentRecord> {
    let status: String = row.try_get("status")?;
    let facts: String = row.try_get("facts")?;
    Ok(AgentRecord {
        id: row.try_get("id")?,
        did: row.try_get("did")?,
        name: row.try_get("name")?,
        ssh_public_key: row.try_get("ssh_public_key")?,
        status: AgentStatus::from_str(&status).map_err(|e| corrupt("agents.status", e))?,
        facts: serde_json::from_str(&facts).map_err(|e| corrupt("agents.facts", e))?,
        enrolled_at: row.try_get("enrolled_at")?,
        last_seen: row.try_get("last_seen")?,
        remote_addr: row.try_get("remote_addr")?,
    })
}

pub(super) const AGENT_COLUMNS: &str =
    "id, did, name, ssh_public_key, status, facts, enrolled_at, last_seen, remote_addr";

#[async_trait]
impl Store for SqliteStore {
    async fn insert_agent(&self, agent: &AgentRecord) -> StoreResult<()> {
        let facts = serde_json::to_string(&agent.facts).map_err(|e| corrupt("facts", e))?;
        sqlx::query(
            "INSERT INTO agents (id, did, name, ssh_public_key, status, facts, enrolled_at, last_seen, remote_addr) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&agent.id)
        .bind(&agent.did)
        .bind(&agent.name)
        .bind(&agent.ssh_public_key)
        .bind(agent.status.as_str())
        .bind(facts)
        .bind(agent.enrolled_at)
        .bind(agent.last_seen)
        .bind(&agent.remote_addr)
        .execute(&self.pool)
        .await
        .map_err(conflict(&format!("agent {:?}", agent.name)))?;
        Ok(())
    }

    async fn agent_by_ssh_key(&self, ssh_public_key: &str) -> StoreResult<Option<AgentRecord>> {
        sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE ssh_public_key = $1"
        ))
        .bind(ssh_public_key)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(agent_from_row)
        .transpose()
    }

    async fn agent_by_did(&self, did: &str) -> StoreResult<Option<AgentRecord>> {
        sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE did = $1"
        ))
        .bind(did)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(agent_from_row)
        .transpose()
    }

    async fn agent_by_id(&self, id: &str) -> StoreResult<Option<AgentRecord>> {
        sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(agent_from_row)
            .transpose()
    }

    async fn agent_name_taken(&self, name: &str) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(agent_from_row)
            .collect()
    }

    async fn count_agents(&self, status: AgentStatus) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE status = $1")
            .bind(status.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn set_agent_status(
        &self,
        id: &str,
        status: AgentStatus,
        by: &str,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE agents SET status = $1, decided_by = $2, decided_at = $3 WHERE id = $4",
        )
        .bind(status.as_str())
        .bind(by)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn update_agent_facts(&self, id: &str, facts: &AgentFacts) -> StoreResult<()> {
        let facts = serde_json::to_string(facts).map_err(|e| corrupt("facts", e))?;
        sqlx::query("UPDATE agents SET facts = $1 WHERE id = $2")
            .bind(facts)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn update_agent_seen(
        &self,
        id: &str,
        last_seen: i64,
        remote_addr: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE agents SET last_seen = $1, remote_addr = COALESCE($2, remote_addr) WHERE id = $3",
        )
        .bind(last_seen)
        .bind(remote_addr)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
