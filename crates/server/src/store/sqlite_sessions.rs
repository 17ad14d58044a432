//! SessionStore on SQLite.

use async_trait::async_trait;
use postern_protocol::SessionId;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::sessions::{
    SESSION_COLUMNS as COLUMNS, SessionChange, SessionFilter, SessionInsert, SessionRecord,
    SessionRow, SessionStore, TransitionRecord, parse_state,
};
use super::sqlite_events::insert_event_on;
use super::{NewEvent, SqliteStore, StoreResult, UserId};
use crate::node::NodeId;

fn session_from_row(row: &SqliteRow) -> StoreResult<SessionRecord> {
    SessionRecord::try_from(SessionRow {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        user_id: row.try_get("user_id")?,
        user_name: row.try_get("user_name")?,
        state: row.try_get("state")?,
        port: row.try_get("port")?,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        ended_at: row.try_get("ended_at")?,
        node_id: row.try_get("node_id")?,
    })
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session(
        &self,
        s: &SessionRecord,
        event: &NewEvent,
    ) -> StoreResult<SessionInsert> {
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(s.id.as_str())
        .bind(&s.agent_id)
        .bind(s.user_id.as_str())
        .bind(&s.user_name)
        .bind(s.state.as_str())
        .bind(s.port.map(i64::from))
        .bind(&s.reason)
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(s.ended_at)
        .bind(s.node.as_ref().map(NodeId::as_str))
        .execute(&mut *tx)
        .await;
        match inserted {
            // The unique index on open sessions per user and agent (session ids are random).
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Ok(SessionInsert::AlreadyOpen);
            }
            other => other?,
        };
        sqlx::query(
            "INSERT INTO session_transitions (session_id, seq, state, reason, time) VALUES ($1, 0, $2, $3, $4)",
        )
        .bind(s.id.as_str())
        .bind(s.state.as_str())
        .bind(&s.reason)
        .bind(s.created_at)
        .execute(&mut *tx)
        .await?;
        let event = insert_event_on(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(SessionInsert::Inserted { event })
    }

    async fn transition_session(
        &self,
        change: &SessionChange<'_>,
        event: &NewEvent,
    ) -> StoreResult<Option<i64>> {
        let mut tx = self.write_tx().await?;
        let ended = change.to.is_final().then_some(change.time);
        let moved = sqlx::query(
            "UPDATE sessions SET state = $1, reason = COALESCE($2, reason), port = COALESCE($3, port), \
             updated_at = $4, ended_at = COALESCE($5, ended_at), node_id = COALESCE($6, node_id) \
             WHERE id = $7 AND state = $8",
        )
        .bind(change.to.as_str())
        .bind(change.reason)
        .bind(change.port.map(i64::from))
        .bind(change.time)
        .bind(ended)
        .bind(change.node.map(NodeId::as_str))
        .bind(change.id.as_str())
        .bind(change.from.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            return Ok(None);
        }
        // The row update above orders writers of one session, so the next seq is free.
        sqlx::query(
            "INSERT INTO session_transitions (session_id, seq, state, reason, time) \
             SELECT $1, COALESCE(MAX(seq), -1) + 1, $2, $3, $4 FROM session_transitions WHERE session_id = $1",
        )
        .bind(change.id.as_str())
        .bind(change.to.as_str())
        .bind(change.reason)
        .bind(change.time)
        .execute(&mut *tx)
        .await?;
        let event = insert_event_on(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(Some(event))
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
                state: parse_state(&row.try_get::<String, _>("state")?)?,
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
        .bind(f.user_id.as_ref().map(UserId::as_str))
        .bind(f.state.map(|s| s.as_str()))
        .bind(i64::from(if f.limit == 0 { 500 } else { f.limit }))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(session_from_row)
        .collect()
    }

    async fn unfinished_sessions(&self, node: &NodeId) -> StoreResult<Vec<SessionRecord>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sessions WHERE state NOT IN ('stopped', 'failed') \
             AND (node_id = $1 OR node_id IS NULL) ORDER BY created_at"
        ))
        .bind(node.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(session_from_row)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use postern_protocol::SessionState;
    use sqlx::migrate::Migrator;
    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;

    /// A store from before nodes were recorded opens with every session kept; should it hold
    /// two open sessions of one user on one agent, the older ends as a restart ends it.
    #[tokio::test]
    async fn the_node_migration_keeps_an_existing_store() {
        let dir = tempfile::tempdir().unwrap();
        let all = sqlx::migrate!("./migrations/sqlite");
        let before = Migrator {
            migrations: Cow::Owned(
                all.iter()
                    .filter(|m| m.version < 4)
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            ..Migrator::DEFAULT
        };
        {
            let options = SqliteConnectOptions::new()
                .filename(dir.path().join(crate::store::STORE_FILE))
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            before.run(&pool).await.unwrap();
            sqlx::query("INSERT INTO agents (id, did, name, ssh_public_key, status, facts, enrolled_at) VALUES ('a', 'd', 'n', 'k', 'approved', '{}', 0)")
                .execute(&pool).await.unwrap();
            for (id, created) in [("0", 1), ("1", 2), ("2", 3)] {
                let id = format!("{id:0>32}");
                let state = if id.ends_with('2') {
                    "stopped"
                } else {
                    "running"
                };
                sqlx::query("INSERT INTO sessions (id, agent_id, user_id, user_name, state, created_at, updated_at) VALUES ($1, 'a', 'u', 'ann', $2, $3, $3)")
                    .bind(&id).bind(state).bind(created).execute(&pool).await.unwrap();
                sqlx::query("INSERT INTO session_transitions (session_id, seq, state, time) VALUES ($1, 0, $2, $3)")
                    .bind(&id).bind(state).bind(created).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let id = |n: &str| SessionId::parse(&format!("{n:0>32}")).unwrap();
        let older = store.session(&id("0")).await.unwrap().unwrap();
        assert_eq!(
            (older.state, older.reason.as_deref(), older.node),
            (SessionState::Stopped, Some("server restarted"), None)
        );
        assert_eq!(store.session_history(&id("0")).await.unwrap().len(), 2);
        let newer = store.session(&id("1")).await.unwrap().unwrap();
        assert_eq!(newer.state, SessionState::Running);
        let adopted = store.unfinished_sessions(&NodeId::random()).await.unwrap();
        assert_eq!(
            adopted.len(),
            1,
            "the one open session, stored before nodes"
        );
    }
}
