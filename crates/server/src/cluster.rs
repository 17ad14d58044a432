//! This node among the nodes of one database: it registers and heartbeats, records the
//! links it holds, learns which links the other live nodes hold, and takes over a node whose
//! heartbeat went stale.
//!
//! - **Heartbeat**: one row write per `heartbeat` per node (nothing per agent), from a task of
//!   its own on a database connection of its own, so that no other work of the node (reading
//!   the fleet's links, taking a lost node over, thousands of agents linking) can delay it
//!   past `dead_after` and have a live node taken over. A node whose
//!   heartbeat has not changed for `dead_after` is dead. Staleness is judged by each observer
//!   on its own monotonic clock (the value it last saw, and since when), so clock skew between
//!   nodes cannot kill a live node; only a node seen for the first time is judged by the wall
//!   clock.
//! - **Links**: the node holding a link writes its row on link up and down and on liveness
//!   changes (`LinkStore`). Other nodes read the rows of live nodes on a wake-up of `Links` or
//!   `Nodes`, on `Resync`, and at every heartbeat (the backstop for lost wake-ups, and the
//!   only way on a shared SQLite file), into their link registry; rows of a dead node are
//!   not believed.
//! - **Node loss**: every survivor that sees a node dead detaches its running sessions whose
//!   shells the agent keeps and ends the others (`node lost`; each session's compare-and-set
//!   makes that happen once), then tries to take it over: removing its `nodes` row while its
//!   heartbeat is still the stale value (compare-and-set), with its link rows. The one that
//!   wins publishes the agents' `agent.offline` and watches the detached sessions.
//! - **Own health**: when this node's heartbeat fails for `dead_after`, other nodes may take it
//!   over, so it is not ready (readiness answers 503) until a heartbeat succeeds again; if it
//!   was taken over meanwhile it registers again and writes its links again.
//! - **last_seen**: kept in memory while linked; stored when a link ends and when the node
//!   stops (batched). A node that dies stores nothing: the survivor that takes it over (or
//!   the node itself, starting again) stores its last heartbeat as its agents' `last_seen`.
//!   Idle agents cost the database nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use postern_protocol::AgentId;
use postern_protocol::api::{EventKind, Liveness};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::events::EventBus;
use crate::links::LinkRegistry;
use crate::node::NodeId;
use crate::sessions::{LinkEnd, Sessions};
use crate::store::{
    Actor, AgentFilter, IdSet, LinkEnded, LinkRecord, Store, StoreError, Topic, Wake,
};

/// How a node keeps its place among the others (server settings `node_heartbeat` and
/// `node_dead_after`; see docs/ARCHITECTURE.md "Nodes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub heartbeat: Duration,
    pub dead_after: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
        }
    }
}

pub struct Cluster {
    node: NodeId,
    store: Arc<dyn Store>,
    links: Arc<LinkRegistry>,
    events: Arc<EventBus>,
    sessions: Arc<Sessions>,
    config: ClusterConfig,
    /// Wall-clock ms of this node's last successful heartbeat.
    last_beat: AtomicI64,
    /// Set while the heartbeat has failed for longer than `dead_after`.
    unhealthy: AtomicBool,
    /// The node address registered (`--node-listen`), kept for re-registering.
    address: std::sync::Mutex<Option<String>>,
    /// Set when this node registered again after being taken over: its link rows are gone,
    /// and the next refresh writes every one of them again (`reconcile`).
    rewrite_links: AtomicBool,
}

/// The least time between two reads of every node's links on a wake-up. Each read is of the
/// whole fleet's rows; read on every wake-up, a fleet linking at once (each link's write wakes
/// every node) had every node reading the whole table back to back, a cost that grew with the
/// fleet until linking stalled (30,000 agents on three nodes). A change on another node is
/// seen here within this gap plus the read.
const READ_GAP: Duration = Duration::from_secs(1);

/// What writing a link's row said of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkClaim {
    /// The store names this node's link as the agent's.
    Held,
    /// A link of the agent that came up later on another node holds the row: this one is
    /// stale (the agent gave up on it while its row waited for the database).
    Superseded,
    /// The row could not be written now; the next heartbeat's reconcile writes it.
    Unrecorded,
}

/// What this node saw of another: its heartbeat value, and since when it has not changed.
struct Seen {
    heartbeat_at: i64,
    since: Instant,
}

impl Cluster {
    pub fn new(
        node: NodeId,
        store: Arc<dyn Store>,
        links: Arc<LinkRegistry>,
        events: Arc<EventBus>,
        sessions: Arc<Sessions>,
        config: ClusterConfig,
    ) -> Self {
        Self {
            node,
            store,
            links,
            events,
            sessions,
            config,
            last_beat: AtomicI64::new(now_ms()),
            unhealthy: AtomicBool::new(false),
            address: std::sync::Mutex::new(None),
            rewrite_links: AtomicBool::new(false),
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// At start, before the node serves: registers it, and forgets the links its last run
    /// held (they died with it; their agents were last seen at its last heartbeat and are
    /// told offline).
    pub async fn register(&self, address: Option<&str>) -> Result<(), StoreError> {
        *self.address.lock().unwrap_or_else(|e| e.into_inner()) = address.map(str::to_owned);
        let now = now_ms();
        let last_run = self.store.list_nodes().await?;
        let last_beat = last_run
            .iter()
            .find(|n| n.id == self.node)
            .map_or(now, |n| n.heartbeat_at);
        self.store.register_node(&self.node, address, now).await?;
        self.last_beat.store(now, Ordering::Relaxed);
        let gone = self.store.clear_node_links(&self.node, last_beat).await?;
        if !gone.is_empty() {
            self.store.wake(Topic::Links);
        }
        self.offline(gone, "link lost: its node restarted").await;
        Ok(())
    }

    /// Whether this node may claim anything: false once its last heartbeat is `dead_after`
    /// old (other nodes may have taken it over), whether writes fail or hang.
    pub fn healthy(&self) -> bool {
        now_ms().saturating_sub(self.last_beat.load(Ordering::Relaxed))
            < millis(self.config.dead_after)
    }

    /// An agent's link came up on this node at `connected_at` (`LinkId::connected_at`).
    pub async fn link_up(&self, agent_id: &AgentId, connected_at: i64) -> LinkClaim {
        let link = LinkRecord {
            agent_id: agent_id.clone(),
            node: self.node.clone(),
            connected_at,
            liveness: Liveness::Online,
        };
        match self.store.link_up(&link).await {
            Ok(true) => {
                self.store.wake(Topic::Links);
                LinkClaim::Held
            }
            Ok(false) => LinkClaim::Superseded,
            Err(error) => {
                tracing::warn!(%error, agent = %agent_id, "could not record the agent's link; the next heartbeat writes it");
                LinkClaim::Unrecorded
            }
        }
    }

    /// An agent's link on this node answers again, or stopped answering. False when the
    /// store names no link of this node for the agent (it dialled another node since, or the
    /// row is not written yet): the change is then not this node's to announce.
    pub async fn link_liveness(&self, agent_id: &AgentId, liveness: Liveness) -> bool {
        match self
            .store
            .link_liveness(agent_id, &self.node, liveness)
            .await
        {
            Ok(true) => {
                self.store.wake(Topic::Links);
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::error!(%error, agent = %agent_id, "could not record the link's liveness");
                true
            }
        }
    }

    /// An agent's link on this node ended, last heard from at `last_seen`. `Superseded` when
    /// another node holds the agent's link: it is online there, not offline.
    pub async fn link_down(&self, agent_id: &AgentId, last_seen: i64) -> LinkEnd {
        match self.store.link_down(agent_id, &self.node, last_seen).await {
            Ok(LinkEnded::Removed) => {
                self.store.wake(Topic::Links);
                LinkEnd::Offline
            }
            Ok(LinkEnded::HeldBy(node)) => {
                tracing::info!(agent = %agent_id, %node, "a stale link ended; the agent is linked to another node");
                LinkEnd::Superseded
            }
            Ok(LinkEnded::Absent) => LinkEnd::Offline,
            Err(error) => {
                tracing::error!(%error, agent = %agent_id, "could not record the end of the agent's link");
                LinkEnd::Offline
            }
        }
    }

    /// Makes the store's link rows agree with the links this node holds (`rows`: every row,
    /// as just read). A link whose row is missing or older is written again (its first write
    /// failed: the database was unreachable or its pool timed out); a link older than the
    /// agent's row on another node is stale — the agent gave up on it and dialled that node —
    /// and is cut. Nothing is written while rows and links agree, so idle costs nothing.
    /// Links registered less than a heartbeat before `read_at` are left to their own first
    /// write, unless this node was taken over and registered again (`rewrite_links`): then
    /// every row it wrote is gone.
    async fn reconcile(&self, rows: &[LinkRecord], read_at: i64) {
        let settled = if self.rewrite_links.swap(false, Ordering::Relaxed) {
            i64::MAX
        } else {
            read_at.saturating_sub(millis(self.config.heartbeat))
        };
        let held: HashMap<&AgentId, &LinkRecord> =
            rows.iter().map(|row| (&row.agent_id, row)).collect();
        let mut rewritten = false;
        for (mine, registered_at) in self.links.local_links_registered(&self.node) {
            let newer_elsewhere = match held.get(&mine.agent_id) {
                Some(row) if row.node == self.node && row.connected_at >= mine.connected_at => {
                    continue;
                }
                Some(row) if row.node != self.node && row.connected_at > mine.connected_at => {
                    Some(row.connected_at)
                }
                _ if registered_at > settled => continue,
                _ => match self.store.link_up(&mine).await {
                    Ok(true) => {
                        rewritten = true;
                        tracing::info!(agent = %mine.agent_id, "wrote the agent's link row again");
                        None
                    }
                    // Another node's newer link took the row since it was read.
                    Ok(false) => Some(mine.connected_at + 1),
                    Err(error) => {
                        tracing::warn!(%error, "could not write this node's links again; next heartbeat");
                        break;
                    }
                },
            };
            if let Some(than) = newer_elsewhere
                && self.links.cut_older(&mine.agent_id, than)
            {
                tracing::warn!(agent = %mine.agent_id, "cut a stale link: the agent is linked to another node since");
            }
        }
        if rewritten {
            self.store.wake(Topic::Links);
        }
    }

    /// Runs until `shutdown`: heartbeats (in a task of its own), reads the other nodes'
    /// links, takes over dead nodes; at the end stores its links' `last_seen`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let beating = tokio::spawn(self.clone().beat(shutdown.clone()));
        let mut wakeups = self.store.wakeups();
        // The backstop read: at the heartbeat's pace, whether or not wake-ups came.
        let mut beat = tokio::time::interval(self.config.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen: HashMap<NodeId, Seen> = HashMap::new();
        // Wake-ups coalesce: a read of every link is a read of the whole fleet, so at most
        // one per `READ_GAP` however fast links change (see `READ_GAP`).
        let mut read_at = Instant::now();
        let mut wanted = false;
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    self.refresh(&mut seen).await;
                    (read_at, wanted) = (Instant::now(), false);
                }
                wake = wakeups.recv() => match wake {
                    Ok(Wake::Changed(Topic::Links | Topic::Nodes)) | Ok(Wake::Resync)
                    | Err(RecvError::Lagged(_)) => wanted = true,
                    Ok(Wake::Changed(_)) => {}
                    // The store is going away: the heartbeat keeps reading.
                    Err(RecvError::Closed) => wakeups = self.store.wakeups(),
                },
                () = tokio::time::sleep_until(read_at + READ_GAP), if wanted => {
                    self.refresh(&mut seen).await;
                    (read_at, wanted) = (Instant::now(), false);
                }
                _ = shutdown.cancelled() => break,
            }
        }
        self.store_last_seen().await;
        let _ = beating.await;
    }

    /// Heartbeats every `heartbeat` until `shutdown`, apart from everything else the node
    /// does: a refresh or a take-over that takes long must not make this node look dead.
    async fn beat(self: Arc<Self>, shutdown: CancellationToken) {
        let mut beat = tokio::time::interval(self.config.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = beat.tick() => self.heartbeat().await,
                _ = shutdown.cancelled() => break,
            }
        }
    }

    async fn heartbeat(&self) {
        let now = now_ms();
        match self.store.node_heartbeat(&self.node, now).await {
            Ok(true) => self.beat_at(now),
            Ok(false) => {
                // Taken over while it could not heartbeat: its links were removed and its
                // sessions ended. Come back; the next refresh writes the links it still
                // holds (not here: thousands of writes would hold the heartbeat up again).
                tracing::warn!(node = %self.node, "this node was taken over by another; registering again");
                if self.reregister().await.is_ok() {
                    self.beat_at(now);
                }
            }
            Err(error) => {
                let silent = now.saturating_sub(self.last_beat.load(Ordering::Relaxed));
                let dead_after = millis(self.config.dead_after);
                if silent >= dead_after && !self.unhealthy.swap(true, Ordering::Relaxed) {
                    tracing::error!(%error, "this node cannot heartbeat: not ready until the database answers");
                } else {
                    tracing::warn!(%error, "node heartbeat failed");
                }
            }
        }
    }

    fn beat_at(&self, now: i64) {
        self.last_beat.store(now, Ordering::Relaxed);
        if self.unhealthy.swap(false, Ordering::Relaxed) {
            tracing::info!("node heartbeat written again: ready");
        }
    }

    async fn reregister(&self) -> Result<(), StoreError> {
        let address = self
            .address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.store
            .register_node(&self.node, address.as_deref(), now_ms())
            .await?;
        self.rewrite_links.store(true, Ordering::Relaxed);
        self.store.wake(Topic::Nodes);
        Ok(())
    }

    /// Reads the nodes and their links: folds the live nodes' links into the registry and
    /// takes over the dead ones.
    async fn refresh(&self, seen: &mut HashMap<NodeId, Seen>) {
        let read_at = now_ms();
        let (nodes, links) =
            match tokio::try_join!(self.store.list_nodes(), self.store.list_links()) {
                Ok(read) => read,
                Err(error) => {
                    tracing::warn!(%error, "could not read the other nodes' links");
                    return;
                }
            };
        let now = Instant::now();
        let wall = now_ms();
        let dead_after = self.config.dead_after;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        seen.retain(|id, _| nodes.iter().any(|n| &n.id == id));
        for node in &nodes {
            if node.id == self.node {
                continue;
            }
            let entry = seen.entry(node.id.clone()).or_insert_with(|| {
                // First sight: how long ago its wall clock says it beat, at most `dead_after`.
                let age = Duration::from_millis(
                    u64::try_from(wall.saturating_sub(node.heartbeat_at)).unwrap_or(0),
                )
                .min(dead_after);
                Seen {
                    heartbeat_at: node.heartbeat_at,
                    since: now.checked_sub(age).unwrap_or(now),
                }
            });
            if entry.heartbeat_at != node.heartbeat_at {
                *entry = Seen {
                    heartbeat_at: node.heartbeat_at,
                    since: now,
                };
            }
            if now.duration_since(entry.since) >= dead_after {
                dead.push((node.id.clone(), node.heartbeat_at));
            } else {
                live.push(node.id.clone());
            }
        }
        if !self.healthy() {
            // Others may be taking this node over: it takes nobody over, and its links are
            // written again when it heartbeats (`reregister`).
            self.fold(links, &live);
            return;
        }
        self.reconcile(&links, read_at).await;
        self.fold(links, &live);
        for (node, heartbeat_at) in dead {
            self.take_over(&node, heartbeat_at).await;
        }
    }

    /// Takes the rows of live nodes other than this one into the registry; a row of an
    /// unknown node (one taken over, whose rows are going) is not believed.
    fn fold(&self, links: Vec<LinkRecord>, live: &[NodeId]) {
        self.links.fold_remote(
            links
                .into_iter()
                .filter(|l| live.contains(&l.node))
                .collect(),
        );
    }

    /// Detaches or ends a dead node's sessions, then removes it and its links if its
    /// heartbeat is still `heartbeat_at`; the one that does owns its detached sessions' wait.
    async fn take_over(&self, dead: &NodeId, heartbeat_at: i64) {
        match self.sessions.end_lost_node(dead).await {
            Ok(crate::sessions::LostSessions {
                detached: 0,
                ended: 0,
            }) => {}
            Ok(lost) => tracing::warn!(
                node = %dead,
                detached = lost.detached,
                ended = lost.ended,
                "detached (shells kept) or ended the sessions of a lost node"
            ),
            Err(error) => {
                tracing::error!(%error, node = %dead, "could not end a lost node's sessions");
                return;
            }
        }
        let agents = match self.store.take_over_node(dead, heartbeat_at).await {
            Ok(Some(agents)) => agents,
            // Another survivor took it over, or it came back.
            Ok(None) => return,
            Err(error) => {
                tracing::error!(%error, node = %dead, "could not take a lost node over");
                return;
            }
        };
        tracing::warn!(node = %dead, agents = agents.len(), "took over a node that stopped heartbeating");
        self.sessions.adopt_lost_node(dead).await;
        self.store.wake(Topic::Nodes);
        self.store.wake(Topic::Links);
        self.store.wake(Topic::Sessions);
        self.offline(agents, "link lost: its node was lost").await;
    }

    /// Announces `agents` offline: their records in one read, their events stored together
    /// (the event writer batches what is queued at once). One round trip each held this
    /// node's refresh for minutes when a lost node had ten thousand agents.
    async fn offline(&self, agents: Vec<AgentId>, detail: &str) {
        if agents.is_empty() {
            return;
        }
        let filter = AgentFilter {
            ids: Some(IdSet::In(agents)),
            ..AgentFilter::default()
        };
        let agents = match self.store.find_agents(&filter).await {
            Ok(page) => page.agents,
            Err(error) => {
                tracing::error!(%error, "could not look up the agents whose links were lost");
                return;
            }
        };
        join_all(agents.iter().map(|agent| {
            self.events
                .publish(EventKind::AgentOffline, &Actor::System, Some(agent), detail)
        }))
        .await;
    }

    /// Stores the `last_seen` of every link this node holds (as it stops).
    async fn store_last_seen(&self) {
        let seen = self.links.seen_since(0);
        if seen.is_empty() {
            return;
        }
        if let Err(error) = self.store.store_last_seen(&seen).await {
            tracing::warn!(%error, agents = seen.len(), "could not store last_seen");
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
