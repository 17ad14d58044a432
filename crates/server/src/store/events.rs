//! Stored events: the audit log and what the live stream replays. Ids increase in the order
//! events are stored; readers page by id.

use std::str::FromStr;

use async_trait::async_trait;
use postern_protocol::api::EventKind;
use postern_protocol::{AgentId, SessionId, SessionState};

use super::{StoreError, StoreResult, UserRecord};

/// Who did what an event records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The server itself: timeouts, link loss, restarts, enrollment, liveness.
    System,
    /// The agent the event is about (its answers to session requests).
    Agent,
    /// `postern admin` on the server's host.
    AdminCli,
    /// `postern quickstart`, for the agent it starts.
    Quickstart,
    /// An enrollment token that approves its agent on enrollment.
    EnrollmentToken,
    /// A logged-in user, by name.
    User(String),
}

impl Actor {
    pub fn user(user: &UserRecord) -> Self {
        Self::User(user.name.clone())
    }

    /// As stored and shown: a user by name, the others by a word no user name is confused
    /// with in practice (a user named like one reads back as it; the text is the same).
    pub fn as_str(&self) -> &str {
        match self {
            Self::System => "system",
            Self::Agent => "agent",
            Self::AdminCli => "admin-cli",
            Self::Quickstart => "quickstart",
            Self::EnrollmentToken => "enrollment-token",
            Self::User(name) => name,
        }
    }

    pub fn from_stored(text: String) -> Self {
        match text.as_str() {
            "system" => Self::System,
            "agent" => Self::Agent,
            "admin-cli" => Self::AdminCli,
            "quickstart" => Self::Quickstart,
            "enrollment-token" => Self::EnrollmentToken,
            _ => Self::User(text),
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct NewEvent {
    pub time: i64,
    pub kind: EventKind,
    pub actor: Actor,
    pub agent: Option<EventAgentRef>,
    pub session: Option<(SessionId, SessionState)>,
    pub detail: String,
}

#[derive(Clone, Debug)]
pub struct EventAgentRef {
    pub id: AgentId,
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
    /// Stores the events in one transaction, in order; their ids, in the same order.
    async fn insert_events(&self, events: &[NewEvent]) -> StoreResult<Vec<i64>>;
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
            id: id.into(),
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
                actor: Actor::from_stored(row.actor),
                agent,
                detail: row.detail,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_read_back_as_they_were_stored() {
        for actor in [
            Actor::System,
            Actor::Agent,
            Actor::AdminCli,
            Actor::Quickstart,
            Actor::EnrollmentToken,
            Actor::User("ann".into()),
        ] {
            assert_eq!(Actor::from_stored(actor.as_str().to_owned()), actor);
        }
    }
}
