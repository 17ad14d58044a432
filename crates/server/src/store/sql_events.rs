//! `EventStore` written once for both databases (`event_store!` expands it for a store type).
//! Readers page by `id > last`, so ids must be in commit order: an event given a lower id but
//! committed after a reader passed that id would be skipped for good. Every event is stored
//! in a transaction that first takes the store's `lock_event_order` (nothing on SQLite, where
//! writers run one at a time; an advisory lock on PostgreSQL), so that no two event-storing
//! transactions overlap and ids are handed out in the order they commit. Events are stored
//! in batches (`insert_events`, see `events/writer.rs`): one lock and one commit for all the
//! events a node published meanwhile, where one each would serialize a storm of links.

macro_rules! event_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use $crate::store::events::EVENT_COLUMNS;
            use $crate::store::rows::event_from_row;
            use $crate::store::{EventRecord, EventStore, NewEvent, StoreResult};

            impl $store {
                /// Stores an event in `tx` (a session's transition stores its event with it,
                /// so that the events of one session are in the order of its transitions).
                pub(crate) async fn insert_event_in(
                    tx: &mut sqlx::Transaction<'static, $db>,
                    event: &NewEvent,
                ) -> StoreResult<i64> {
                    Self::lock_event_order(tx).await?;
                    let agent = event.agent.as_ref();
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO events (time, kind, actor, agent_id, agent_name, agent_did, \
                         session_id, session_state, detail) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                    )
                    .bind(event.time)
                    .bind(event.kind.as_str())
                    .bind(event.actor.as_str())
                    .bind(agent.map(|a| a.id.as_str()))
                    .bind(agent.map(|a| a.name.as_str()))
                    .bind(agent.map(|a| a.did.as_str()))
                    .bind(event.session.as_ref().map(|(id, _)| id.as_str()))
                    .bind(event.session.as_ref().map(|(_, state)| state.as_str()))
                    .bind(&event.detail)
                    .fetch_one(&mut **tx)
                    .await?;
                    Ok(id)
                }
            }

            #[async_trait]
            impl EventStore for $store {
                async fn insert_events(&self, events: &[NewEvent]) -> StoreResult<Vec<i64>> {
                    if events.is_empty() {
                        return Ok(Vec::new());
                    }
                    let mut tx = self.write_tx().await?;
                    Self::lock_event_order(&mut tx).await?;
                    // One statement for the batch: one round trip under the lock, however
                    // many events (`events/writer.rs` keeps a batch within both databases'
                    // parameter limits).
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO events (time, kind, actor, agent_id, agent_name, agent_did, \
                         session_id, session_state, detail) ",
                    );
                    insert.push_values(events, |mut row, event| {
                        let agent = event.agent.as_ref();
                        row.push_bind(event.time)
                            .push_bind(event.kind.as_str())
                            .push_bind(event.actor.as_str())
                            .push_bind(agent.map(|a| a.id.as_str().to_owned()))
                            .push_bind(agent.map(|a| a.name.clone()))
                            .push_bind(agent.map(|a| a.did.clone()))
                            .push_bind(event.session.as_ref().map(|(id, _)| id.as_str().to_owned()))
                            .push_bind(event.session.as_ref().map(|(_, state)| state.as_str()))
                            .push_bind(event.detail.clone());
                    });
                    insert.push(" RETURNING id");
                    let mut ids: Vec<i64> = insert.build_query_scalar().fetch_all(&mut *tx).await?;
                    tx.commit().await?;
                    // Both databases number the rows of one INSERT in the order of its VALUES
                    // (and no other writer runs under the lock); RETURNING's own order is not
                    // promised, so the ids are put in order.
                    ids.sort_unstable();
                    Ok(ids)
                }

                async fn events_after(
                    &self,
                    after: i64,
                    limit: u32,
                ) -> StoreResult<Vec<EventRecord>> {
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
        };
    };
}
pub(crate) use event_store;
