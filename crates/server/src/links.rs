//! Which agents are connected right now, and a way to reach each one's control task.
//!
//! The registry holds only a sender per live link: the control task that owns the link does
//! the I/O. Online means "a link is registered"; the link's SSH keepalives remove it when dead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use postern_protocol::ServerMessage;
use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::presence::{PresenceDelta, PresenceLog};

/// What other parts of the server may ask of a link's control task. Boxed: every idle link
/// holds a queue whose first block has room for 32 commands, so their size counts.
#[derive(Debug)]
pub enum LinkCommand {
    Send(Box<ServerMessage>),
    /// Send the message, then close the whole SSH connection.
    Close(Box<ServerMessage>),
}

impl LinkCommand {
    pub fn send(message: ServerMessage) -> Self {
        Self::Send(Box::new(message))
    }

    pub fn close(message: ServerMessage) -> Self {
        Self::Close(Box::new(message))
    }
}

struct Link {
    generation: u64,
    commands: mpsc::Sender<LinkCommand>,
    last_seen: i64,
    /// The presence version of this link's coming up (see `presence.rs`).
    changed: u64,
}

#[derive(Default)]
pub struct LinkRegistry {
    links: Mutex<HashMap<String, Link>>,
    generations: AtomicU64,
    /// Taken only while `links` is held, so the map and the log change together.
    presence: Mutex<PresenceLog>,
}

/// Proof of registration; `LinkRegistry::unregister` only removes the link it names, so an
/// old connection closing cannot take a newer one offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkId(u64);

impl LinkRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self) -> std::sync::MutexGuard<'_, PresenceLog> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a live link. Returns its id, whether the agent was offline before, and the
    /// previous link's command sender (if any) so the caller can close it.
    pub fn register(
        &self,
        agent_id: &str,
        commands: mpsc::Sender<LinkCommand>,
    ) -> (LinkId, Option<mpsc::Sender<LinkCommand>>) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let mut links = self.lock();
        let changed = self.log().up(agent_id);
        let previous = links.insert(
            agent_id.to_owned(),
            Link {
                generation,
                commands,
                last_seen: now_ms(),
                changed,
            },
        );
        (LinkId(generation), previous.map(|l| l.commands))
    }

    /// Removes the link if it is still the registered one; returns whether it was.
    pub fn unregister(&self, agent_id: &str, id: LinkId) -> bool {
        let mut links = self.lock();
        if links.get(agent_id).is_some_and(|l| l.generation == id.0) {
            if let Some(link) = links.remove(agent_id) {
                self.log().down(agent_id, link.last_seen);
            }
            true
        } else {
            false
        }
    }

    pub fn touch(&self, agent_id: &str) {
        if let Some(link) = self.lock().get_mut(agent_id) {
            link.last_seen = now_ms();
        }
    }

    pub fn is_online(&self, agent_id: &str) -> bool {
        self.lock().contains_key(agent_id)
    }

    pub fn last_seen(&self, agent_id: &str) -> Option<i64> {
        self.lock().get(agent_id).map(|l| l.last_seen)
    }

    /// Hands a command to the agent's control task; false if the agent is offline or its
    /// link is too backed up to take more (it will get its state again on reconnect).
    pub fn command(&self, agent_id: &str, command: LinkCommand) -> bool {
        let sender = self.lock().get(agent_id).map(|l| l.commands.clone());
        match sender {
            Some(s) => s.try_send(command).is_ok(),
            None => false,
        }
    }

    /// Every connected agent with the time it was last heard from.
    pub fn presence(&self) -> Vec<(String, i64)> {
        self.lock()
            .iter()
            .map(|(id, link)| (id.clone(), link.last_seen))
            .collect()
    }

    /// What changed since `cursor` (a cursor of this registry), or every online agent when
    /// the cursor cannot be answered with a delta.
    pub fn presence_since(&self, cursor: Option<&str>) -> PresenceDelta {
        let links = self.lock();
        let log = self.log();
        log.delta(
            cursor,
            links
                .iter()
                .map(|(id, link)| (id, link.changed, link.last_seen)),
        )
    }

    pub fn online_count(&self) -> usize {
        self.lock().len()
    }
}
