//! The live event stream (server-sent events), resumable from the last event id seen.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use postern_protocol::api::{EventView, Role};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiQuery, Caller};
use crate::events;

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
    let backlog = match resume {
        Some(after) => s.store.events_after(after, PAGE).await?,
        None => {
            s.store
                .latest_events(query.limit.unwrap_or(20).min(PAGE))
                .await?
        }
    };
    let follow = query.follow.unwrap_or(true);
    let (tx, rx) = mpsc::channel::<EventView>(64);

    tokio::spawn(async move {
        let mut last = resume.unwrap_or(0);
        let mut page: Vec<EventView> = backlog.into_iter().map(events::view).collect();
        // Replay in pages until caught up with the store.
        loop {
            let full = page.len() as u32 == PAGE;
            for event in page {
                last = last.max(event.id);
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if !full {
                break;
            }
            page = match s.store.events_after(last, PAGE).await {
                Ok(p) => p.into_iter().map(events::view).collect(),
                Err(_) => return,
            };
        }
        if !follow {
            return;
        }
        loop {
            let received = tokio::select! {
                r = live.recv() => r,
                _ = s.shutdown.cancelled() => return,
                _ = tx.closed() => return,
            };
            let batch = match received {
                Ok(event) if event.id > last => vec![event],
                Ok(_) => continue,
                // Fell behind the live buffer: fill the gap from the store.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match s.store.events_after(last, PAGE).await {
                        Ok(p) => p.into_iter().map(events::view).collect(),
                        Err(_) => return,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            for event in batch {
                last = last.max(event.id);
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
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
