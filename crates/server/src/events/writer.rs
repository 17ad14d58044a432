//! The node's one event writer: events published on this node are queued, and the writer
//! stores everything queued meanwhile in one transaction (`insert_events`). Storing events
//! one transaction each serialized a storm of links behind the event-order lock (on
//! PostgreSQL an advisory lock held across nodes: at 15,000 agents re-linking on two cores,
//! each link's `agent.online` waited seconds for the lock and its holder, long enough for the
//! agent to be judged not responding). One lock and one commit per batch is what the lock
//! costs now, whatever the batch's size.
//!
//! Queue order is store order: two events one node publishes one after the other (an
//! agent's `online` and then its `offline`) get ids in that order.
//!
//! A batch the storage cannot take now (unreachable, pool timed out) is tried again with
//! backoff for up to `RETRY_FOR`, publishers waiting meanwhile; only then are its events
//! given up (logged). A batch refused for its data is stored one event at a time, so that
//! one bad event does not take the others with it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{NewEvent, Store, StoreResult};

/// Events one transaction stores at most, in one statement: nine parameters each, 9,000 in
/// all, within SQLite's 32,766 and PostgreSQL's 65,535 per statement.
pub(crate) const MAX_BATCH: usize = 1000;
/// How long a batch is tried again while the storage is unavailable: the database's
/// restart or a pool's timeout in a storm, not an outage (the node is unready by then).
const RETRY_FOR: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(4);

/// An event waiting to be stored, and who waits for its id (dropped unanswered when its
/// batch was given up, which the writer logs).
pub struct Queued {
    pub event: NewEvent,
    pub stored: oneshot::Sender<StoreResult<i64>>,
}

/// Starts the writer; it ends when every sender is dropped.
pub fn start(store: Arc<dyn Store>) -> mpsc::UnboundedSender<Queued> {
    let (queue, inbox) = mpsc::unbounded_channel();
    tokio::spawn(write(store, inbox));
    queue
}

async fn write(store: Arc<dyn Store>, mut inbox: mpsc::UnboundedReceiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (events, waiting): (Vec<NewEvent>, Vec<_>) =
            batch.drain(..).map(|q| (q.event, q.stored)).unzip();
        match store_batch(&*store, &events).await {
            Ok(ids) => {
                for (stored, id) in waiting.into_iter().zip(ids) {
                    let _ = stored.send(Ok(id));
                }
            }
            // Refused for its data: each on its own, so only the bad one fails.
            Err(error) if error.storage_failure().is_none() && events.len() > 1 => {
                for (event, stored) in events.iter().zip(waiting) {
                    let one = store_batch(&*store, std::slice::from_ref(event)).await;
                    let _ = stored.send(one.map(|ids| ids[0]));
                }
            }
            // Said here once for the batch; its publishers find their wait ended unanswered.
            Err(error) => {
                tracing::error!(%error, events = events.len(), "could not store events; given up");
            }
        }
    }
}

/// Stores `events`, trying again while the storage is unavailable, up to `RETRY_FOR`.
async fn store_batch(store: &dyn Store, events: &[NewEvent]) -> StoreResult<Vec<i64>> {
    let started = tokio::time::Instant::now();
    let mut pause = FIRST_RETRY;
    loop {
        match store.insert_events(events).await {
            Ok(ids) => return Ok(ids),
            Err(error)
                if error.storage_failure().is_some() && started.elapsed() + pause < RETRY_FOR =>
            {
                tracing::warn!(%error, events = events.len(), retry_in = ?pause, "could not store events; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LAST_RETRY);
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::future::join_all;
    use postern_protocol::api::EventKind;

    use super::*;
    use crate::events::EventBus;
    use crate::store::{Actor, SqliteStore};

    async fn details(store: &dyn Store) -> Vec<String> {
        store
            .events_after(0, u32::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.detail)
            .collect()
    }

    /// Events published at once (a storm of links) are all stored, in the order they were
    /// published, each once: the batches keep queue order.
    #[tokio::test]
    async fn events_published_at_once_are_stored_each_once_in_publish_order() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let bus = EventBus::new(store.clone()).await.unwrap();
        let publish = |range: std::ops::Range<usize>| {
            join_all(range.map(|i| {
                bus.publish(
                    EventKind::AgentOnline,
                    &Actor::System,
                    None,
                    format!("e{i:04}"),
                )
            }))
        };
        let count = MAX_BATCH * 2 + 7;
        publish(0..count).await;
        let expected: Vec<String> = (0..count).map(|i| format!("e{i:04}")).collect();
        assert_eq!(details(&*store).await, expected);

        // And sent live once each, in id order (fewer than the live buffer holds for a
        // subscriber that reads only afterwards).
        let mut live = bus.subscribe();
        publish(count..count + 500).await;
        let mut sent = Vec::new();
        while let Ok(e) = live.try_recv() {
            sent.push(e.detail);
        }
        let expected: Vec<String> = (count..count + 500).map(|i| format!("e{i:04}")).collect();
        assert_eq!(sent, expected);
    }

    /// One event the database refuses (PostgreSQL holds no NUL in text) fails alone: the
    /// others published with it are stored.
    #[tokio::test]
    async fn an_event_the_database_refuses_does_not_take_its_batch_with_it() {
        let Some(url) = crate::store::postgres_testing::fresh_database().await else {
            return;
        };
        let store: Arc<dyn Store> = Arc::new(
            crate::store::PgStore::open(&url, Default::default())
                .await
                .unwrap(),
        );
        let bus = EventBus::new(store.clone()).await.unwrap();
        join_all(
            ["before", "bad\0", "after"]
                .map(|detail| bus.publish(EventKind::AgentOnline, &Actor::System, None, detail)),
        )
        .await;
        assert_eq!(details(&*store).await, ["before", "after"]);
    }
}
