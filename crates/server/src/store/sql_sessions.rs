//! `SessionStore` written once for both databases (`session_store!` expands it for a store
//! type). Transitions are compare-and-set on the stored state and holding node
//! (`UPDATE … WHERE id = $1 AND state = $2 AND node_id = $3`: on PostgreSQL a second writer
//! waits for the first and re-checks what it left), and "one open session per user and
//! agent" is the unique index `sessions_one_open`.

macro_rules! session_store {
    ($store:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use postern_protocol::{AgentId, SessionId};
            use $crate::node::NodeId;
            use $crate::store::rows::{Columns, is_unique_violation, session_from_row};
            use $crate::store::sessions::{
                SESSION_COLUMNS as COLUMNS, SessionChange, SessionFilter, SessionInsert,
                SessionRecord, SessionStore, TransitionRecord, parse_state,
            };
            use $crate::store::{NewEvent, StoreResult, UserId};

            #[async_trait]
            impl SessionStore for $store {
                async fn insert_session(
                    &self,
                    s: &SessionRecord,
                    event: &NewEvent,
                ) -> StoreResult<SessionInsert> {
                    let mut tx = self.write_tx().await?;
                    let inserted = sqlx::query(&format!(
                        "INSERT INTO sessions ({COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                    ))
                    .bind(s.id.as_str())
                    .bind(s.agent_id.as_str())
                    .bind(s.user_id.as_str())
                    .bind(&s.user_name)
                    .bind(s.state.as_str())
                    .bind(s.port.map(i64::from))
                    .bind(&s.reason)
                    .bind(s.created_at)
                    .bind(s.updated_at)
                    .bind(s.ended_at)
                    .bind(s.node.as_ref().map(NodeId::as_str))
                    .bind(i64::from(s.shells_kept))
                    .execute(&mut *tx)
                    .await;
                    match inserted {
                        // The unique index on open sessions per user and agent (session ids
                        // are random).
                        Err(e) if is_unique_violation(&e) => return Ok(SessionInsert::AlreadyOpen),
                        other => other?,
                    };
                    sqlx::query(
                        "INSERT INTO session_transitions (session_id, seq, state, reason, time) \
                         VALUES ($1, 0, $2, $3, $4)",
                    )
                    .bind(s.id.as_str())
                    .bind(s.state.as_str())
                    .bind(&s.reason)
                    .bind(s.created_at)
                    .execute(&mut *tx)
                    .await?;
                    let event = Self::insert_event_in(&mut tx, event).await?;
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
                    // A session running again (back from detached) has no reason any more;
                    // an ending keeps the reason its stopping gave.
                    let moved = sqlx::query(
                        "UPDATE sessions SET state = $1, \
                         reason = CASE WHEN $1 = 'running' THEN NULL ELSE COALESCE($2, reason) END, \
                         port = COALESCE($3, port), updated_at = $4, \
                         ended_at = COALESCE($5, ended_at), node_id = COALESCE($6, node_id) \
                         WHERE id = $7 AND state = $8 \
                         AND (node_id = $9 OR (node_id IS NULL AND $9 IS NULL))",
                    )
                    .bind(change.to.as_str())
                    .bind(change.reason)
                    .bind(change.port.map(i64::from))
                    .bind(change.time)
                    .bind(ended)
                    .bind(change.node.map(NodeId::as_str))
                    .bind(change.id.as_str())
                    .bind(change.from.as_str())
                    .bind(change.holder.map(NodeId::as_str))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if moved != 1 {
                        return Ok(None);
                    }
                    // The row update above orders writers of one session (it holds the row
                    // until commit), so the next seq is free.
                    sqlx::query(
                        "INSERT INTO session_transitions (session_id, seq, state, reason, time) \
                         SELECT $1, COALESCE(MAX(seq), -1) + 1, $2, $3, $4 \
                         FROM session_transitions WHERE session_id = $1",
                    )
                    .bind(change.id.as_str())
                    .bind(change.to.as_str())
                    .bind(change.reason)
                    .bind(change.time)
                    .execute(&mut *tx)
                    .await?;
                    let event = Self::insert_event_in(&mut tx, event).await?;
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
                        "SELECT state, reason, time FROM session_transitions \
                         WHERE session_id = $1 ORDER BY seq",
                    )
                    .bind(id.as_str())
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|row| {
                        Ok(TransitionRecord {
                            state: parse_state(&row.text("state")?)?,
                            reason: row.opt_text("reason")?,
                            time: row.int("time")?,
                        })
                    })
                    .collect()
                }

                async fn list_sessions(&self, f: &SessionFilter) -> StoreResult<Vec<SessionRecord>> {
                    sqlx::query(&format!(
                        "SELECT {COLUMNS} FROM sessions \
                         WHERE ($1 IS NULL OR agent_id = $1) AND ($2 IS NULL OR user_id = $2) \
                         AND ($3 IS NULL OR state = $3) \
                         ORDER BY created_at DESC, id LIMIT $4"
                    ))
                    .bind(f.agent_id.as_ref().map(AgentId::as_str))
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

                async fn set_shells_kept(&self, agent_id: &AgentId, kept: &[SessionId]) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    let marked: Vec<String> = sqlx::query(
                        "SELECT id FROM sessions WHERE agent_id = $1 AND shells_kept = 1",
                    )
                    .bind(agent_id.as_str())
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|row| row.text("id"))
                    .collect::<StoreResult<_>>()?;
                    let listed: std::collections::HashSet<&str> =
                        kept.iter().map(SessionId::as_str).collect();
                    for id in marked.iter().filter(|id| !listed.contains(id.as_str())) {
                        sqlx::query("UPDATE sessions SET shells_kept = 0 WHERE id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for id in listed.iter().filter(|id| !marked.iter().any(|m| m == *id)) {
                        sqlx::query(
                            "UPDATE sessions SET shells_kept = 1 WHERE id = $1 AND agent_id = $2 \
                             AND state NOT IN ('stopped', 'failed')",
                        )
                        .bind(*id)
                        .bind(agent_id.as_str())
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }
            }
        };
    };
}
pub(crate) use session_store;
