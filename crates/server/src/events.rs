//! The event bus: every audit-worthy change is stored, then published live, in id order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use postern_protocol::api::{EventAgent, EventKind, EventSession, EventView, Role};
use postern_protocol::{SessionId, SessionState};
use tokio::sync::{Mutex, broadcast};

use crate::clock::now_ms;
use crate::store::{AgentRecord, EventAgentRef, EventRecord, NewEvent, Store};

const LIVE_BUFFER: usize = 1024;

pub struct EventBus {
    store: Arc<dyn Store>,
    live: broadcast::Sender<EventView>,
    /// Held across insert + send so that subscribers see ids in increasing order.
    order: Mutex<()>,
    /// Open event streams (see `follow`).
    followers: Arc<AtomicUsize>,
}

impl EventBus {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            live: broadcast::channel(LIVE_BUFFER).0,
            order: Mutex::new(()),
            followers: Arc::new(AtomicUsize::new(0)),
        }
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
        actor: &str,
        agent: Option<&AgentRecord>,
        detail: impl Into<String>,
    ) {
        self.publish_with_session(kind, actor, agent, None, detail)
            .await
    }

    pub async fn publish_with_session(
        &self,
        kind: EventKind,
        actor: &str,
        agent: Option<&AgentRecord>,
        session: Option<(SessionId, SessionState)>,
        detail: impl Into<String>,
    ) {
        let event = NewEvent {
            session,
            time: now_ms(),
            kind,
            actor: actor.to_owned(),
            agent: agent.map(|a| EventAgentRef {
                id: a.id.clone(),
                name: a.name.clone(),
                did: a.did.clone(),
            }),
            detail: detail.into(),
        };
        let _order = self.order.lock().await;
        match self.store.insert_event(&event).await {
            Ok(id) => {
                // No subscribers is fine.
                let _ = self.live.send(view(EventRecord { id, event }));
            }
            Err(e) => tracing::error!(error = %e, kind = %kind, "could not store event"),
        }
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
        actor: e.actor,
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
