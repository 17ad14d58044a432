//! The event bus: every audit-worthy change is stored, then published live, in id order.
//! Events are stored by whoever records the change (a session's transition stores its event
//! in the same transaction); the bus sends them live strictly in id order, filling any gap
//! from the store, so a subscriber that skips ids it has seen never loses one.
//!
//! Several nodes share one store: the bus sends every event stored by any node. Its own
//! writes it sends at once; the others' it reads from the store (`catch_up`) when the store
//! wakes it, after a missed wake-up (`Wake::Resync`), and on a slow poll that backstops a
//! wake-up lost without notice (`follow_store`). Wake-ups carry nothing: the table is the
//! truth.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use postern_protocol::api::{EventAgent, EventKind, EventSession, EventView, Role};
use postern_protocol::{SessionId, SessionState};
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::store::{
    Actor, AgentRecord, EventAgentRef, EventRecord, NewEvent, Store, StoreResult, Topic, Wake,
};

pub(crate) mod writer;

const LIVE_BUFFER: usize = 1024;
/// Stored events one read takes, while catching up.
const PAGE: u32 = 500;

pub struct EventBus {
    store: Arc<dyn Store>,
    /// This node's event writer (`writer.rs`): stores what is published, in batches.
    writer: mpsc::UnboundedSender<writer::Queued>,
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
            writer: writer::start(store.clone()),
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
        let (stored, id) = oneshot::channel();
        let queued = writer::Queued {
            event: event.clone(),
            stored,
        };
        if self.writer.send(queued).is_err() {
            tracing::error!(kind = %kind, "could not store event: the event writer has ended");
            return;
        }
        match id.await {
            Ok(Ok(id)) => self.announce(EventRecord { id, event }).await,
            Ok(Err(e)) => tracing::error!(error = %e, kind = %kind, "could not store event"),
            // Its batch was given up; the writer said so.
            Err(_) => {}
        }
    }

    /// Sends live an event already stored (by this bus or with the change it records), after
    /// every event stored before it that was not sent yet.
    pub async fn announce(&self, record: EventRecord) {
        // Every node's bus reads it now, this one's too (it finds it sent already).
        self.store.wake(Topic::Events);
        let mut sent = self.sent.lock().await;
        if record.id <= *sent {
            return;
        }
        if record.id > *sent + 1 {
            // Events stored before this one are not out yet (their writers are on their way
            // here, or on other nodes): send them first, from the store.
            if let Err(e) = self.send_stored(&mut sent, Some(record.id)).await {
                tracing::error!(error = %e, "could not read events to send live");
            }
        }
        *sent = record.id;
        // No subscribers is fine.
        let _ = self.live.send(view(record));
    }

    /// Sends live every stored event not sent yet, in id order: those of other nodes.
    pub async fn catch_up(&self) -> StoreResult<()> {
        let mut sent = self.sent.lock().await;
        self.send_stored(&mut sent, None).await
    }

    /// Sends the stored events after `sent` (and before `before`), page by page.
    async fn send_stored(&self, sent: &mut i64, before: Option<i64>) -> StoreResult<()> {
        loop {
            let page = self.store.events_after(*sent, PAGE).await?;
            let full = page.len() == PAGE as usize;
            for e in page {
                if before.is_some_and(|before| e.id >= before) {
                    return Ok(());
                }
                *sent = e.id;
                let _ = self.live.send(view(e));
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Sends live what other nodes store, until `stop`: when the store wakes it for events,
    /// when wake-ups may have been missed (`Wake::Resync`, or this receiver lagged), and on
    /// every `poll` tick, the backstop for a wake-up lost without notice. A read that fails is
    /// logged and made up for by the next wake-up or tick.
    pub async fn follow_store(self: Arc<Self>, poll: Duration, stop: CancellationToken) {
        let mut wakeups = self.store.wakeups();
        let mut hearing = true;
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let read = tokio::select! {
                _ = tick.tick() => true,
                woken = wakeups.recv(), if hearing => match woken {
                    Ok(Wake::Changed(Topic::Events) | Wake::Resync)
                    | Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Ok(Wake::Changed(_)) => false,
                    Err(broadcast::error::RecvError::Closed) => {
                        tracing::warn!("the store's wake-ups ended; other nodes' events come by the poll only");
                        hearing = false;
                        false
                    }
                },
                () = stop.cancelled() => return,
            };
            if read && let Err(e) = self.catch_up().await {
                tracing::warn!(error = %e, "could not read the events other nodes stored");
            }
        }
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
    /// A subscription of its own, counted nowhere (tests feed it).
    #[cfg(test)]
    pub fn detached(live: broadcast::Receiver<EventView>) -> Self {
        Self {
            live,
            count: Arc::new(AtomicUsize::new(1)),
        }
    }

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
