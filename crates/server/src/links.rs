//! Which agents are connected right now, whether each still answers, and a way to reach each
//! one's control task.
//!
//! The registry holds only a sender per live link: the control task that owns the link does
//! the I/O. Online means "a link is registered". Whether the agent answers comes from its
//! heartbeats: `sweep`, run by one task for all links, marks a link not responding after the
//! agent's missed heartbeats and cuts it after the heartbeat timeout (see `liveness`).
//!
//! Beside this node's own links it keeps the links other live nodes hold, as the store last
//! said (`fold_remote`, see `cluster.rs`), so that every view of the fleet (lists, counts,
//! presence changes) is true whichever node an agent dialled. Commands and sessions reach
//! this node's links only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use postern_protocol::api::Liveness;
use postern_protocol::{AgentId, ServerMessage};
use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::gateway::Cut;
use crate::metrics::{LinkEnd, Metrics};
use crate::presence::{PresenceDelta, PresenceLog};
use crate::store::LinkRecord;

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

/// What shows that one of an agent's sessions is in use, and so not idle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionUse {
    /// An open channel through the session's tunnel, logged in or not: all the server knows
    /// of an agent that does not report logins (older agents).
    #[default]
    Channels,
    /// A connection logged in through the session, as the agent reports (`logins`).
    Logins,
}

/// When silence means trouble: set by the server's configuration, scaled by the heartbeat
/// interval each agent states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessPolicy {
    /// Assumed for agents that do not state their heartbeat interval.
    pub interval: Duration,
    /// Missed heartbeats before "not responding".
    pub misses: u32,
    /// Silence before the link is dropped; never less than one interval past "not
    /// responding", so that an agent with a slow heartbeat is not dropped for it.
    pub timeout: Duration,
}

impl Default for LivenessPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            misses: 3,
            timeout: Duration::from_secs(40),
        }
    }
}

impl LivenessPolicy {
    /// The silences (ms) after which a link with this heartbeat is not responding, and lost.
    fn limits(&self, stated: Option<Duration>) -> (i64, i64) {
        let interval = stated.unwrap_or(self.interval);
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let quiet = millis(interval).saturating_mul(i64::from(self.misses));
        let lost = millis(self.timeout).max(quiet.saturating_add(millis(interval)));
        (quiet, lost)
    }

    /// How often the sweep looks: a quarter of the interval, within 100 ms and 2.5 s — the
    /// 2.5 s is all it adds to the time a dead link is found.
    pub fn sweep_period(&self) -> Duration {
        (self.interval / 4).clamp(Duration::from_millis(100), Duration::from_millis(2500))
    }
}

struct Link {
    generation: u64,
    commands: mpsc::Sender<LinkCommand>,
    connected_at: i64,
    /// When it was registered (enrolled), which may be well after `connected_at` in a storm.
    registered_at: i64,
    last_seen: i64,
    /// Silence (ms) after which it is not responding, and lost.
    quiet_after: i64,
    lost_after: i64,
    responding: bool,
    lost: bool,
    /// Cut because the agent linked to another node since (`cut_older`).
    stale: bool,
    cut: Cut,
    session_use: SessionUse,
    /// The presence version of this link's last change: coming up, or its liveness (see
    /// `presence.rs`).
    changed: u64,
}

/// A link another live node holds, as the store says.
struct Remote {
    liveness: Liveness,
    /// When it came up (the store keeps no fresher sign of life: see `cluster.rs`).
    connected_at: i64,
    /// The presence version of its last change seen here.
    changed: u64,
}

#[derive(Default)]
pub struct LinkRegistry {
    links: Mutex<HashMap<AgentId, Link>>,
    /// Links of other live nodes; taken only while `links` is held.
    remote: Mutex<HashMap<AgentId, Remote>>,
    generations: AtomicU64,
    policy: LivenessPolicy,
    /// Taken only while `links` is held, so the map and the log change together.
    presence: Mutex<PresenceLog>,
    metrics: Metrics,
}

/// Proof of registration; `LinkRegistry::unregister` only removes the link it names, so an
/// old connection closing cannot take a newer one offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkId {
    generation: u64,
    connected_at: i64,
}

impl LinkId {
    /// When the link came up (wall-clock ms): what orders it against the agent's links on
    /// other nodes (see `LinkStore::link_up`).
    pub fn connected_at(&self) -> i64 {
        self.connected_at
    }
}

/// A link to register: it heartbeats every `heartbeat` (or the configured interval), shows
/// its sessions' use by `session_use`, is ended by `cut`, and was accepted at `connected_at`
/// (wall-clock ms).
pub struct NewLink {
    pub commands: mpsc::Sender<LinkCommand>,
    pub heartbeat: Option<Duration>,
    pub session_use: SessionUse,
    pub cut: Cut,
    pub connected_at: i64,
}

/// The agent's registered link was accepted after this one: this one is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewerLink;

/// A link as it was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    pub last_seen: i64,
    /// The sweep dropped it for its silence (ms).
    pub lost_after: Option<i64>,
}

/// What one sweep changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Agents that just stopped responding.
    pub quiet: Vec<AgentId>,
    /// Agents whose links were just cut for their silence.
    pub lost: Vec<AgentId>,
}

impl LinkRegistry {
    pub fn new(policy: LivenessPolicy, metrics: Metrics) -> Self {
        Self {
            policy,
            metrics,
            ..Self::default()
        }
    }

    pub fn policy(&self) -> LivenessPolicy {
        self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self) -> std::sync::MutexGuard<'_, PresenceLog> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Remote>> {
        self.remote.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the links other live nodes hold (`links`: the store's rows of live nodes other
    /// than this one). Each change of what another node holds takes a presence version, as a
    /// link of this node does; an agent linked here shows as this node's link whatever the
    /// store says of it.
    pub fn fold_remote(&self, links: Vec<LinkRecord>) {
        let local = self.lock();
        let mut remote = self.remote();
        let mut log = self.log();
        let mut next: HashMap<AgentId, Remote> = HashMap::with_capacity(links.len());
        for link in links {
            let changed = match remote.get(&link.agent_id) {
                Some(was) if was.liveness == link.liveness => was.changed,
                // A link of this node hides the other node's row: nothing changes for readers.
                _ if local.contains_key(&link.agent_id) => 0,
                Some(_) => log.changed(),
                None => log.up(&link.agent_id),
            };
            next.insert(
                link.agent_id,
                Remote {
                    liveness: link.liveness,
                    connected_at: link.connected_at,
                    changed,
                },
            );
        }
        for (id, gone) in remote.iter() {
            if !next.contains_key(id) && !local.contains_key(id) {
                log.down(id, gone.connected_at);
            }
        }
        *remote = next;
    }

    /// Registers a live link. Returns its id and the previous link's command sender (if any)
    /// so the caller can close it — unless the agent's registered link is newer (accepted
    /// later: the agent dialled again while this one was still enrolling), when this one is
    /// stale and not registered.
    pub fn register(
        &self,
        agent_id: &AgentId,
        link: NewLink,
    ) -> Result<(LinkId, Option<mpsc::Sender<LinkCommand>>), NewerLink> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let (quiet_after, lost_after) = self.policy.limits(link.heartbeat);
        let mut links = self.lock();
        if links
            .get(agent_id)
            .is_some_and(|l| l.connected_at > link.connected_at)
        {
            return Err(NewerLink);
        }
        let changed = self.log().up(agent_id);
        let now = now_ms();
        let previous = links.insert(
            agent_id.clone(),
            Link {
                generation,
                commands: link.commands,
                connected_at: link.connected_at,
                registered_at: now,
                last_seen: now,
                quiet_after,
                lost_after,
                responding: true,
                lost: false,
                stale: false,
                cut: link.cut,
                session_use: link.session_use,
                changed,
            },
        );
        self.metrics.link_opened();
        if previous.is_some() {
            self.metrics.link_closed(LinkEnd::Replaced);
        }
        Ok((
            LinkId {
                generation,
                connected_at: link.connected_at,
            },
            previous.map(|l| l.commands),
        ))
    }

    /// Removes the link if it is still the registered one; returns how it was if it was.
    pub fn unregister(&self, agent_id: &AgentId, id: LinkId) -> Option<Gone> {
        let mut links = self.lock();
        if links
            .get(agent_id)
            .is_some_and(|l| l.generation == id.generation)
        {
            links.remove(agent_id).map(|l| {
                let mut log = self.log();
                match self.remote().get_mut(agent_id) {
                    // Another node holds it now: still online, as that node says.
                    Some(remote) => remote.changed = log.up(agent_id),
                    None => log.down(agent_id, l.last_seen),
                }
                self.metrics.link_closed(if l.lost {
                    LinkEnd::Lost
                } else if l.stale {
                    LinkEnd::Stale
                } else {
                    LinkEnd::Closed
                });
                Gone {
                    last_seen: l.last_seen,
                    lost_after: l.lost.then_some(l.lost_after),
                }
            })
        } else {
            None
        }
    }

    /// A sign of life. Returns true if the agent was not responding until now.
    pub fn touch(&self, agent_id: &AgentId) -> bool {
        let mut links = self.lock();
        match links.get_mut(agent_id) {
            Some(link) if !link.lost => {
                link.last_seen = now_ms();
                let recovered = !std::mem::replace(&mut link.responding, true);
                if recovered {
                    link.changed = self.log().changed();
                }
                recovered
            }
            _ => false,
        }
    }

    pub fn is_online(&self, agent_id: &AgentId) -> bool {
        self.lock().contains_key(agent_id)
    }

    /// Whether the agent answers, on whichever live node holds its link.
    pub fn liveness(&self, agent_id: &AgentId) -> Liveness {
        let links = self.lock();
        match links.get(agent_id) {
            Some(link) => link.liveness(),
            None => self
                .remote()
                .get(agent_id)
                .map_or(Liveness::Offline, |r| r.liveness),
        }
    }

    /// Cuts this node's link of the agent if it came up before `than`: the agent dialled
    /// another node since, so this link is a stale one (its agent no longer reads it, so it
    /// is cut, not asked to close). True if one was cut.
    pub fn cut_older(&self, agent_id: &AgentId, than: i64) -> bool {
        let mut links = self.lock();
        match links.get_mut(agent_id) {
            Some(link) if link.connected_at < than => {
                link.stale = true;
                link.cut.cut();
                true
            }
            _ => false,
        }
    }

    /// The links this node holds, as its store rows say them, each with when it was
    /// registered (a link registered just now is still writing its own row).
    pub fn local_links_registered(&self, node: &crate::node::NodeId) -> Vec<(LinkRecord, i64)> {
        self.lock()
            .iter()
            .map(|(id, link)| {
                let record = LinkRecord {
                    agent_id: id.clone(),
                    node: node.clone(),
                    connected_at: link.connected_at,
                    liveness: link.liveness(),
                };
                (record, link.registered_at)
            })
            .collect()
    }

    /// This node's links heard from since `since` (ms): whose `last_seen` to store.
    pub fn seen_since(&self, since: i64) -> Vec<(AgentId, i64)> {
        self.lock()
            .iter()
            .filter(|(_, link)| link.last_seen > since)
            .map(|(id, link)| (id.clone(), link.last_seen))
            .collect()
    }

    /// How the agent's link shows that its sessions are in use (channels when offline).
    pub fn session_use(&self, agent_id: &AgentId) -> SessionUse {
        self.lock()
            .get(agent_id)
            .map_or(SessionUse::default(), |l| l.session_use)
    }

    pub fn last_seen(&self, agent_id: &AgentId) -> Option<i64> {
        self.lock().get(agent_id).map(|l| l.last_seen)
    }

    /// Hands a command to the agent's control task; false if the agent is offline or its
    /// link is too backed up to take more (it will get its state again on reconnect).
    pub fn command(&self, agent_id: &AgentId, command: LinkCommand) -> bool {
        let sender = self.lock().get(agent_id).map(|l| l.commands.clone());
        match sender {
            Some(s) => s.try_send(command).is_ok(),
            None => false,
        }
    }

    /// Every connected agent, on any live node, with the time it was last heard from (for
    /// another node's link: when it came up) and whether it answers.
    pub fn presence(&self) -> Vec<(AgentId, i64, Liveness)> {
        let links = self.lock();
        let remote = self.remote();
        links
            .iter()
            .map(|(id, link)| (id.clone(), link.last_seen, link.liveness()))
            .chain(
                remote
                    .iter()
                    .filter(|(id, _)| !links.contains_key(*id))
                    .map(|(id, r)| (id.clone(), r.connected_at, r.liveness)),
            )
            .collect()
    }

    /// What changed since `cursor` (a cursor of this registry), or every online agent when
    /// the cursor cannot be answered with a delta.
    pub fn presence_since(&self, cursor: Option<&str>) -> PresenceDelta {
        let links = self.lock();
        let remote = self.remote();
        let log = self.log();
        log.delta(
            cursor,
            links
                .iter()
                .map(|(id, link)| (id, link.changed, link.last_seen, link.liveness()))
                .chain(
                    remote
                        .iter()
                        .filter(|(id, _)| !links.contains_key(*id))
                        .map(|(id, r)| (id, r.changed, r.connected_at, r.liveness)),
                ),
        )
    }

    /// The ids of the connected agents, on any live node.
    pub fn online_ids(&self) -> Vec<AgentId> {
        let links = self.lock();
        let remote = self.remote();
        let mut ids: Vec<AgentId> = links.keys().cloned().collect();
        ids.extend(remote.keys().filter(|id| !links.contains_key(*id)).cloned());
        ids
    }

    /// How many agents are connected to any live node, and how many of those are not
    /// responding.
    pub fn connection_counts(&self) -> (u64, u64) {
        let links = self.lock();
        let remote = self.remote();
        let elsewhere = remote.iter().filter(|(id, _)| !links.contains_key(*id));
        let (mut all, mut quiet) = (links.len() as u64, 0u64);
        quiet += links
            .values()
            .filter(|l| l.liveness() == Liveness::NotResponding)
            .count() as u64;
        for (_, r) in elsewhere {
            all += 1;
            quiet += u64::from(r.liveness == Liveness::NotResponding);
        }
        (all, quiet)
    }

    /// How many agents are connected to this node.
    pub fn online_count(&self) -> usize {
        self.lock().len()
    }

    /// Connected agents: how many answer, how many do not.
    pub fn liveness_counts(&self) -> (usize, usize) {
        let links = self.lock();
        let responding = links
            .values()
            .filter(|l| l.liveness() == Liveness::Online)
            .count();
        (responding, links.len() - responding)
    }

    /// Marks the links silent for too long as of `now`: not responding, or lost — those are
    /// cut, and their control tasks take them offline.
    pub fn sweep(&self, now: i64) -> Swept {
        let mut swept = Swept::default();
        let mut links = self.lock();
        let mut log = self.log();
        for (id, link) in links.iter_mut() {
            let silence = now.saturating_sub(link.last_seen);
            if link.lost {
                continue;
            }
            let was = link.liveness();
            if silence > link.lost_after {
                link.lost = true;
                link.cut.cut();
                swept.lost.push(id.clone());
            } else if link.responding && silence > link.quiet_after {
                link.responding = false;
                swept.quiet.push(id.clone());
            }
            // A poller of presence changes learns of it as of this version.
            if link.liveness() != was {
                link.changed = log.changed();
            }
        }
        swept
    }
}

impl Link {
    fn liveness(&self) -> Liveness {
        if self.responding && !self.lost {
            Liveness::Online
        } else {
            Liveness::NotResponding
        }
    }
}

#[cfg(test)]
mod tests;
