//! EventStore on SQLite.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::events::{EVENT_COLUMNS, EventRow};
use super::{EventRecord, EventStore, NewEvent, SqliteStore, StoreResult};

fn event_from_row(row: &SqliteRow) -> StoreResult<EventRecord> {
    EventRecord::try_from(EventRow {
        id: row.try_get("id")?,
        time: row.try_get("time")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        agent_id: row.try_get("agent_id")?,
        agent_name: row.try_get("agent_name")?,
        agent_did: row.try_get("agent_did")?,
        session_id: row.try_get("session_id")?,
        session_state: row.try_get("session_state")?,
        detail: row.try_get("detail")?,
    })
}

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
    .bind(event.actor.as_str())
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
impl EventStore for SqliteStore {
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
    use postern_protocol::api::EventKind;

    use super::*;
    use crate::store::Actor;

    #[tokio::test]
    async fn events_page_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            for i in 0..5 {
                s.insert_event(&NewEvent {
                    time: i,
                    kind: EventKind::UserLogin,
                    actor: Actor::User("ann".into()),
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
