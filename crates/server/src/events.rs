//! The event bus: every audit-worthy change is stored, then published live, in id order.
//! Events are stored by whoever records the change (a session's transition stores its event
//! in the same transaction); the bus sends them live strictly in id order, filling any gap
//! from the store, so a subscriber that skips ids it has seen never loses one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use postern_protocol::api::{EventAgent, EventKind, EventSession, EventView, Role};
use postern_protocol::{SessionId, SessionState};
use tokio::sync::{Mutex, broadcast};

use crate::clock::now_ms;
use crate::store::{Actor, AgentRecord, EventAgentRef, EventRecord, NewEvent, Store, StoreResult};

const LIVE_BUFFER: usize = 1024;

pub struct EventBus {
    store: Arc<dyn Store>,
    live: broadcast::Sender<EventView>,
    /// The newest event id sent live. Only orders this node's live sends; what is stored,
    /// and in which order, the store decides.
    sent: Mutex<i64>,
    /// Open event streams (see `follow`).
    followers: Arc<AtomicUsize>,
}

impl EventBus {
    /// A bus that sends live the events stored from now on.
    pub async fn new(store: Arc<dyn Store>) -> StoreResult<Self> {
        let newest = store.latest_events(1).await?.last().map_or(0, |e| e.id);
        Ok(Self {
            store,
            live: broadcast::channel(LIVE_BUFFER).0,
            sent: Mutex::new(newest),
            followers: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EventView> {
        self.live.subscribe()
    }

    /// A subscription for an event stream, counted as one follower for as long as it lives.
    pub fn follow(&self) -> Follower {
        self.followers.fetch_add(1, Ordering::Relaxed);
        Follower {
            live: self.live.subscribe(),
            count: self.followers.clone(),
        }
    }

    /// Event streams open now.
    pub fn followers(&self) -> usize {
        self.followers.load(Ordering::Relaxed)
    }

    /// Stores and publishes an event. A store failure is logged, not returned: the action the
    /// event records has already happened and must not be undone by the audit log.
    pub async fn publish(
        &self,
        kind: EventKind,
        actor: &Actor,
        agent: Option<&AgentRecord>,
        detail: impl Into<String>,
    ) {
        self.publish_with_session(kind, actor, agent, None, detail)
            .await
    }

    pub async fn publish_with_session(
        &self,
        kind: EventKind,
        actor: &Actor,
        agent: Option<&AgentRecord>,
        session: Option<(SessionId, SessionState)>,
        detail: impl Into<String>,
    ) {
        let event = new_event(kind, actor, agent, session, detail);
        match self.store.insert_event(&event).await {
            Ok(id) => self.announce(EventRecord { id, event }).await,
            Err(e) => tracing::error!(error = %e, kind = %kind, "could not store event"),
        }
    }

    /// Sends live an event already stored (by this bus or with the change it records), after
    /// every event stored before it that was not sent yet.
    pub async fn announce(&self, record: EventRecord) {
        let mut sent = self.sent.lock().await;
        if record.id <= *sent {
            return;
        }
        if record.id > *sent + 1 {
            // Events stored before this one are not out yet (their writers are on their way
            // here): send them first, from the store.
            let missing = u32::try_from(record.id - *sent - 1).unwrap_or(u32::MAX);
            match self.store.events_after(*sent, missing).await {
                Ok(earlier) => {
                    for e in earlier.into_iter().filter(|e| e.id < record.id) {
                        *sent = e.id;
                        // No subscribers is fine.
                        let _ = self.live.send(view(e));
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not read events to send live"),
            }
        }
        *sent = record.id;
        let _ = self.live.send(view(record));
    }
}

/// An event as recorded now.
pub fn new_event(
    kind: EventKind,
    actor: &Actor,
    agent: Option<&AgentRecord>,
    session: Option<(SessionId, SessionState)>,
    detail: impl Into<String>,
) -> NewEvent {
    NewEvent {
        session,
        time: now_ms(),
        kind,
        actor: actor.clone(),
        agent: agent.map(|a| EventAgentRef {
            id: a.id.clone(),
            name: a.name.clone(),
            did: a.did.clone(),
        }),
        detail: detail.into(),
    }
}

/// An event stream's subscription; dropping it ends the count.
pub struct Follower {
    live: broadcast::Receiver<EventView>,
    count: Arc<AtomicUsize>,
}

impl Follower {
    pub async fn recv(&mut self) -> Result<EventView, broadcast::error::RecvError> {
        self.live.recv().await
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn view(record: EventRecord) -> EventView {
    let e = record.event;
    EventView {
        id: record.id,
        time: e.time,
        kind: e.kind,
        actor: e.actor.to_string(),
        agent: e.agent.map(|a| EventAgent {
            id: a.id,
            name: a.name,
            did: a.did,
        }),
        session: e.session.map(|(id, state)| EventSession { id, state }),
        detail: e.detail,
    }
}

/// What a user with `role` may see of an event. The name typed at a failed login may be a
/// password typed into the wrong field: only administrators see it; others see that a login
/// failed.
pub fn visible_to(mut event: EventView, role: Role) -> EventView {
    if event.kind == EventKind::UserLoginFailed && role < Role::Admin {
        event.detail = REDACTED_LOGIN_FAILURE.to_owned();
    }
    event
}

pub const REDACTED_LOGIN_FAILURE: &str =
    "failed login (the name tried is shown to administrators only)";
