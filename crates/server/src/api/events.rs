//! The live event stream (server-sent events), resumable from the last event id seen.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use postern_protocol::api::{EventView, Role};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiQuery, Caller};
use crate::events::{self, Follower};
use crate::store::Store;

const PAGE: u32 = 500;
const RECONNECT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Replay every event after this id, then go live (the `Last-Event-ID` header wins).
    after: Option<i64>,
    /// Without `after`: how many recent events to replay first (default 20; more than 500
    /// counts as 500).
    // u32's range: the format is widened from utoipa's int32 to say so.
    #[param(format = Int64, maximum = 4294967295.0)]
    limit: Option<u32>,
    /// `false` ends the stream after the replay.
    follow: Option<bool>,
}

/// How the document describes the stream: by one message (as Open API 3.1 tools read a
/// `text/event-stream` schema), not by the `EventView` its `data` carries.
pub struct EventMessage;

impl utoipa::PartialSchema for EventMessage {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "One server-sent event. `id` is the event id: send the last one seen as \
                 `Last-Event-ID` to resume. `data` is one JSON `EventView`.",
            ))
            .property("id", ObjectBuilder::new().schema_type(Type::String))
            .required("id")
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json")
                    .description(Some("JSON: #/components/schemas/EventView")),
            )
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for EventMessage {}

/// Events as server-sent events: `id` is the event id, `data` the JSON `EventView` (which
/// carries the kind). Reconnecting with `Last-Event-ID` resumes exactly after the last one seen.
#[utoipa::path(get, path = "/api/v1/events", params(EventsQuery), responses(
    (status = 200, content_type = "text/event-stream", body = EventMessage,
        description = "Server-sent events, each described by `EventMessage`")),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Role::Viewer)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.after);
    let s = state.services.clone();
    // Subscribe before reading the backlog so nothing falls between the two.
    let mut live = s.events.follow();
    // The backlog, and the newest id the stream stands on after it: live events up to that
    // one are in the store's answer already.
    let (backlog, mut last, more) = match resume {
        Some(after) => {
            let page = s.store.events_after(after, PAGE).await?;
            let more = page.len() == PAGE as usize;
            (page, after, more)
        }
        None => {
            let limit = query.limit.unwrap_or(20).min(PAGE) as usize;
            // At least the newest one, even for `limit=0`: where live begins.
            let mut newest = s.store.latest_events(limit.max(1) as u32).await?;
            let last = newest.last().map_or(0, |e| e.id);
            newest.drain(..newest.len().saturating_sub(limit));
            (newest, last, false)
        }
    };
    let follow = query.follow.unwrap_or(true);
    let (tx, rx) = mpsc::channel::<EventView>(64);

    tokio::spawn(async move {
        // The replay: the backlog read, then on from the store until caught up with it.
        for event in backlog {
            last = last.max(event.id);
            if tx.send(events::view(event)).await.is_err() {
                return;
            }
        }
        if more && send_stored(&s.store, &tx, &mut last, None).await.is_err() {
            return;
        }
        if !follow {
            return;
        }
        relay_live(&s.store, &mut live, &tx, last, &s.shutdown).await;
    });

    // A browser reconnects a dropped stream after this (Chromium waits 3 s by default): after
    // a server restart the app must show the truth within 5 s.
    let retry = tokio_stream::once(Ok(Event::default().retry(RECONNECT)));
    let role = caller.user.role;
    let stream = ReceiverStream::new(rx).map(move |event| {
        let event = events::visible_to(event, role);
        // No `event:` name: every event reaches a browser's `onmessage`, including kinds a
        // client does not know yet; the kind is in the JSON.
        let sse = Event::default().id(event.id.to_string());
        Ok(sse
            .json_data(&event)
            .unwrap_or_else(|_| Event::default().comment("unencodable event")))
    });
    Ok(Sse::new(retry.chain(stream)).keep_alive(KeepAlive::default()))
}

/// Live, from the subscription taken before the backlog read: what it brings up to `last`
/// was replayed already; anything it skipped (a lagging subscriber, a live send that failed)
/// is filled from the store, so the stream has no gap and no repeat whichever node serves it.
/// Ends when the subscription, the stream or the server does.
async fn relay_live(
    store: &Arc<dyn Store>,
    live: &mut Follower,
    tx: &mpsc::Sender<EventView>,
    mut last: i64,
    stop: &CancellationToken,
) {
    loop {
        let received = tokio::select! {
            r = live.recv() => r,
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
        };
        let event = match received {
            Ok(event) if event.id > last => event,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if send_stored(store, tx, &mut last, None).await.is_err() {
                    return;
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if event.id > last + 1
            && send_stored(store, tx, &mut last, Some(event.id))
                .await
                .is_err()
        {
            return;
        }
        last = event.id;
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// Sends the stored events after `last` (and before `before`, if given) to `tx`, page by
/// page, moving `last`. Err when the stream is gone or the store cannot be read (the stream
/// then ends, and the client resumes from the last id it got).
async fn send_stored(
    store: &Arc<dyn Store>,
    tx: &mpsc::Sender<EventView>,
    last: &mut i64,
    before: Option<i64>,
) -> Result<(), ()> {
    loop {
        let page = store.events_after(*last, PAGE).await.map_err(|e| {
            tracing::warn!(error = %e, "could not read events for a stream");
        })?;
        let full = page.len() == PAGE as usize;
        for event in page {
            if before.is_some_and(|before| event.id >= before) {
                return Ok(());
            }
            *last = event.id;
            tx.send(events::view(event)).await.map_err(|_| ())?;
        }
        if !full {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use postern_protocol::api::EventKind;

    use super::*;
    use crate::store::{Actor, NewEvent, SqliteStore};

    /// A store holding events 1..=n, and their views.
    async fn stored(n: i64) -> (tempfile::TempDir, Arc<dyn Store>, Vec<EventView>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        for i in 1..=n {
            let event = NewEvent {
                time: i,
                kind: EventKind::UserLogin,
                actor: Actor::System,
                agent: None,
                session: None,
                detail: format!("e{i}"),
            };
            store.insert_events(&[event]).await.unwrap();
        }
        let views = store
            .events_after(0, u32::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(events::view)
            .collect();
        (dir, store, views)
    }

    /// What the stream sends after `last`, given what the subscription brings.
    async fn relayed(
        store: &Arc<dyn Store>,
        capacity: usize,
        live: impl IntoIterator<Item = EventView>,
        last: i64,
    ) -> Vec<i64> {
        let (sender, receiver) = broadcast::channel(capacity);
        for event in live {
            let _ = sender.send(event);
        }
        drop(sender);
        let (tx, mut rx) = mpsc::channel(u16::MAX as usize);
        let mut follower = Follower::detached(receiver);
        relay_live(store, &mut follower, &tx, last, &CancellationToken::new()).await;
        drop(tx);
        let mut ids = Vec::new();
        while let Some(event) = rx.recv().await {
            ids.push(event.id);
        }
        ids
    }

    #[tokio::test]
    async fn a_live_jump_is_filled_from_the_store() {
        let (_dir, store, views) = stored(7).await;
        // The subscription brings 1, 2, then 7 (3..6 went by unseen).
        let live = [&views[0], &views[1], &views[6]].map(Clone::clone);
        assert_eq!(
            relayed(&store, 16, live, 0).await,
            (1..=7).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_lags_past_a_page_misses_nothing() {
        let n = i64::from(PAGE) * 2 + 50;
        let (_dir, store, views) = stored(n).await;
        // A subscription that keeps only the last 4 of everything sent.
        let got = relayed(&store, 4, views.clone(), 10).await;
        assert_eq!(got, (11..=n).collect::<Vec<_>>());
    }
}
