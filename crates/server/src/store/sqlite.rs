//! The embedded SQLite store (WAL mode, one file in the data dir).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use postern_protocol::api::EventKind;
use postern_protocol::{AgentFacts, AgentStatus};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::{
    AgentRecord, EventAgentRef, EventRecord, NewEvent, Store, StoreError, StoreResult, TokenRecord,
    TokenUse,
};

pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) `postern.db` in `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(super::STORE_FILE))
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
        Ok(Self { pool })
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

fn token_from_row(row: &SqliteRow) -> StoreResult<TokenRecord> {
    let revoked_at: Option<i64> = row.try_get("revoked_at")?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        max_uses: row.try_get::<i64, _>("max_uses")? as u32,
        uses: row.try_get::<i64, _>("uses")? as u32,
        revoked: revoked_at.is_some(),
    })
}

fn event_from_row(row: &SqliteRow) -> StoreResult<EventRecord> {
    let kind: String = row.try_get("kind")?;
    let agent_id: Option<String> = row.try_get("agent_id")?;
    let agent = match agent_id {
        Some(id) => Some(EventAgentRef {
            id,
            name: row
                .try_get::<Option<String>, _>("agent_name")?
                .unwrap_or_default(),
            did: row
                .try_get::<Option<String>, _>("agent_did")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    let session_id: Option<String> = row.try_get("session_id")?;
    let session_state: Option<String> = row.try_get("session_state")?;
    let session = match (session_id, session_state) {
        (Some(id), Some(state)) => Some((
            postern_protocol::SessionId::parse(&id)
                .ok_or_else(|| corrupt("events.session_id", &id))?,
            postern_protocol::SessionState::from_str(&state)
                .map_err(|e| corrupt("events.session_state", e))?,
        )),
        _ => None,
    };
    Ok(EventRecord {
        id: row.try_get("id")?,
        event: NewEvent {
            session,
            time: row.try_get("time")?,
            kind: EventKind::from_str(&kind).map_err(|e| corrupt("events.kind", e))?,
            actor: row.try_get("actor")?,
            agent,
            detail: row.try_get("detail")?,
        },
    })
}

pub(super) const AGENT_COLUMNS: &str =
    "id, did, name, ssh_public_key, status, facts, enrolled_at, last_seen, remote_addr";
const TOKEN_COLUMNS: &str = "id, created_by, created_at, expires_at, max_uses, uses, revoked_at";
const EVENT_COLUMNS: &str =
    "id, time, kind, actor, agent_id, agent_name, agent_did, session_id, session_state, detail";

/// Stores an event on a connection or in a transaction (a session's transition stores its
/// event with it, so that events of one session are in the order of its transitions).
pub(super) async fn insert_event_on<'c, E>(executor: E, event: &NewEvent) -> StoreResult<i64>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let agent = event.agent.as_ref();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO events (time, kind, actor, agent_id, agent_name, agent_did, session_id, session_state, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(event.time)
    .bind(event.kind.as_str())
    .bind(&event.actor)
    .bind(agent.map(|a| a.id.as_str()))
    .bind(agent.map(|a| a.name.as_str()))
    .bind(agent.map(|a| a.did.as_str()))
    .bind(event.session.as_ref().map(|(id, _)| id.as_str()))
    .bind(event.session.as_ref().map(|(_, state)| state.as_str()))
    .bind(&event.detail)
    .fetch_one(executor)
    .await?;
    Ok(id)
}

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

    async fn insert_token(&self, token: &TokenRecord, token_hash: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, token_hash, created_by, created_at, expires_at, max_uses, uses) \
             VALUES ($1, $2, $3, $4, $5, $6, 0)",
        )
        .bind(&token.id)
        .bind(token_hash)
        .bind(&token.created_by)
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(i64::from(token.max_uses))
        .execute(&self.pool)
        .await
        .map_err(conflict("enrollment token"))?;
        Ok(())
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens ORDER BY created_at DESC"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(token_from_row)
        .collect()
    }

    async fn revoke_token(&self, id: &str, now: i64) -> StoreResult<Option<TokenRecord>> {
        let mut tx = self.write_tx().await?;
        let prefix = format!("{}%", id.replace(['%', '_'], ""));
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE id LIKE $1 LIMIT 2"
        ))
        .bind(&prefix)
        .fetch_all(&mut *tx)
        .await?;
        let [row] = rows.as_slice() else {
            return Ok(None);
        };
        let mut token = token_from_row(row)?;
        sqlx::query(
            "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2",
        )
        .bind(now)
        .bind(&token.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        token.revoked = true;
        Ok(Some(token))
    }

    async fn use_token(&self, token_hash: &str, now: i64) -> StoreResult<TokenUse> {
        // One statement takes the use only if the token is valid, so concurrent enrollments
        // can never exceed max_uses.
        let taken = sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1 \
             WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND uses < max_uses",
        )
        .bind(token_hash)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if taken == 1 {
            return Ok(TokenUse::Consumed);
        }
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(TokenUse::Unknown);
        };
        let token = token_from_row(&row)?;
        Ok(if token.revoked {
            TokenUse::Revoked
        } else if token.expires_at <= now {
            TokenUse::Expired
        } else {
            TokenUse::UsedUp
        })
    }

    async fn insert_event(&self, event: &NewEvent) -> StoreResult<i64> {
        insert_event_on(&self.pool, event).await
    }

    async fn events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<EventRecord>> {
        sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn latest_events(&self, limit: u32) -> StoreResult<Vec<EventRecord>> {
        let mut events: Vec<EventRecord> = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_from_row)
        .collect::<StoreResult<_>>()?;
        events.reverse();
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_page_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            for i in 0..5 {
                s.insert_event(&NewEvent {
                    time: i,
                    kind: EventKind::UserLogin,
                    actor: "ann".into(),
                    agent: None,
                    session: None,
                    detail: format!("e{i}"),
                })
                .await
                .unwrap();
            }
        }
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let after: Vec<_> = s.events_after(2, 10).await.unwrap();
        assert_eq!(
            after.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let latest = s.latest_events(2).await.unwrap();
        assert_eq!(
            latest
                .iter()
                .map(|e| e.event.detail.as_str())
                .collect::<Vec<_>>(),
            vec!["e3", "e4"]
        );
    }
}
