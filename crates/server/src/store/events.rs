//! Stored events: the audit log and what the live stream replays. Ids increase in the order
//! events are stored; readers page by id.

use std::str::FromStr;

use async_trait::async_trait;
use postern_protocol::api::EventKind;
use postern_protocol::{SessionId, SessionState};

use super::{StoreError, StoreResult};

#[derive(Clone, Debug)]
pub struct NewEvent {
    pub time: i64,
    pub kind: EventKind,
    pub actor: String,
    pub agent: Option<EventAgentRef>,
    pub session: Option<(SessionId, SessionState)>,
    pub detail: String,
}

#[derive(Clone, Debug)]
pub struct EventAgentRef {
    pub id: String,
    pub name: String,
    pub did: String,
}

#[derive(Clone, Debug)]
pub struct EventRecord {
    pub id: i64,
    pub event: NewEvent,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    async fn insert_event(&self, event: &NewEvent) -> StoreResult<i64>;
    /// Events with id greater than `after`, oldest first.
    async fn events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<EventRecord>>;
    /// The newest `limit` events, oldest first.
    async fn latest_events(&self, limit: u32) -> StoreResult<Vec<EventRecord>>;
}

/// An event row as any database returns it.
#[derive(Clone, Debug)]
pub struct EventRow {
    pub id: i64,
    pub time: i64,
    pub kind: String,
    pub actor: String,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub agent_did: Option<String>,
    pub session_id: Option<String>,
    pub session_state: Option<String>,
    pub detail: String,
}

/// The columns of `EventRow`, in its order.
pub const EVENT_COLUMNS: &str =
    "id, time, kind, actor, agent_id, agent_name, agent_did, session_id, session_state, detail";

impl TryFrom<EventRow> for EventRecord {
    type Error = StoreError;

    fn try_from(row: EventRow) -> StoreResult<Self> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("events.{what}: {e}"))
        };
        let agent = row.agent_id.map(|id| EventAgentRef {
            id,
            name: row.agent_name.unwrap_or_default(),
            did: row.agent_did.unwrap_or_default(),
        });
        let session = match (row.session_id, row.session_state) {
            (Some(id), Some(state)) => Some((
                SessionId::parse(&id).ok_or_else(|| corrupt("session_id", &id))?,
                SessionState::from_str(&state).map_err(|e| corrupt("session_state", &e))?,
            )),
            _ => None,
        };
        Ok(EventRecord {
            id: row.id,
            event: NewEvent {
                session,
                time: row.time,
                kind: EventKind::from_str(&row.kind).map_err(|e| corrupt("kind", &e))?,
                actor: row.actor,
                agent,
                detail: row.detail,
            },
        })
    }
}
