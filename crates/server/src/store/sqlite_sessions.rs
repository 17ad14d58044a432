//! SessionStore on SQLite.

use std::str::FromStr;

use async_trait::async_trait;
use postern_protocol::{SessionId, SessionState};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::sessions::{SessionFilter, SessionRecord, SessionStore, TransitionRecord};
use super::{SqliteStore, StoreError, StoreResult};

const COLUMNS: &str =
    "id, agent_id, user_id, user_name, state, port, reason, created_at, updated_at, ended_at";

fn state(text: &str) -> StoreResult<SessionState> {
    SessionState::from_str(text).map_err(StoreError::Corrupt)
}

fn session_from_row(row: &SqliteRow) -> StoreResult<SessionRecord> {
    let id: String = row.try_get("id")?;
    let port: Option<i64> = row.try_get("port")?;
    Ok(SessionRecord {
        id: SessionId::parse(&id)
            .ok_or_else(|| StoreError::Corrupt(format!("session id {id:?}")))?,
        agent_id: row.try_get("agent_id")?,
        user_id: row.try_get("user_id")?,
        user_name: row.try_get("user_name")?,
        state: state(&row.try_get::<String, _>("state")?)?,
        port: port.and_then(|p| u16::try_from(p).ok()),
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session(&self, s: &SessionRecord) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(&format!(
            "INSERT INTO sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(s.id.as_str())
        .bind(&s.agent_id)
        .bind(&s.user_id)
        .bind(&s.user_name)
        .bind(s.state.as_str())
        .bind(s.port.map(i64::from))
        .bind(&s.reason)
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(s.ended_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO session_transitions (session_id, seq, state, reason, time) VALUES ($1, 0, $2, $3, $4)",
        )
        .bind(s.id.as_str())
        .bind(s.state.as_str())
        .bind(&s.reason)
        .bind(s.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_transition(
        &self,
        id: &SessionId,
        to: SessionState,
        reason: Option<&str>,
        port: Option<u16>,
        time: i64,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let ended = to.is_final().then_some(time);
        sqlx::query(
            "UPDATE sessions SET state = $1, reason = COALESCE($2, reason), port = COALESCE($3, port), \
             updated_at = $4, ended_at = COALESCE($5, ended_at) WHERE id = $6",
        )
        .bind(to.as_str())
        .bind(reason)
        .bind(port.map(i64::from))
        .bind(time)
        .bind(ended)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO session_transitions (session_id, seq, state, reason, time) \
             SELECT $1, COALESCE(MAX(seq), -1) + 1, $2, $3, $4 FROM session_transitions WHERE session_id = $1",
        )
        .bind(id.as_str())
        .bind(to.as_str())
        .bind(reason)
        .bind(time)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM sessions WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    async fn session_history(&self, id: &SessionId) -> StoreResult<Vec<TransitionRecord>> {
        sqlx::query(
            "SELECT state, reason, time FROM session_transitions WHERE session_id = $1 ORDER BY seq",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(TransitionRecord {
                state: state(&row.try_get::<String, _>("state")?)?,
                reason: row.try_get("reason")?,
                time: row.try_get("time")?,
            })
        })
        .collect()
    }

    async fn list_sessions(&self, f: &SessionFilter) -> StoreResult<Vec<SessionRecord>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sessions \
             WHERE ($1 IS NULL OR agent_id = $1) AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR state = $3) \
             ORDER BY created_at DESC, id LIMIT $4"
        ))
        .bind(&f.agent_id)
        .bind(&f.user_id)
        .bind(f.state.map(|s| s.as_str()))
        .bind(i64::from(if f.limit == 0 { 500 } else { f.limit }))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(session_from_row)
        .collect()
    }

    async fn unfinished_sessions(&self) -> StoreResult<Vec<SessionRecord>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sessions WHERE state NOT IN ('stopped', 'failed') ORDER BY created_at"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(session_from_row)
        .collect()
    }
}
