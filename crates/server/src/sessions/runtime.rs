//! The node-local side of sessions: what this node holds for them and loses when it stops —
//! the agents' links (to send `StartSsh`/`StopSsh`), tunnel ports, running tunnels, and every
//! task (timers, idle watches, tunnel and terminal copies). Each task is tracked and ends
//! when the node shuts down. Nothing here decides a session's state: `lifecycle` does.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use postern_protocol::{AgentId, ServerMessage, SessionId};
use russh::server::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ports::PortPool;
use super::tunnel::{Activity, OpenTunnel, Tunnel};
use crate::config::PortRange;
use crate::links::{LinkCommand, LinkRegistry};
use crate::metrics::Metrics;

pub struct NodeRuntime {
    links: Arc<LinkRegistry>,
    ports: PortPool,
    /// Tunnels of running sessions.
    tunnels: Mutex<HashMap<SessionId, OpenTunnel>>,
    tasks: TaskTracker,
    /// Cancelled when the node stops; every task and tunnel here ends with it.
    shutdown: CancellationToken,
    /// Given to each tunnel, which counts its bytes.
    metrics: Metrics,
}

impl NodeRuntime {
    pub fn new(links: Arc<LinkRegistry>, ports: PortPool, metrics: Metrics) -> Self {
        Self {
            links,
            ports,
            metrics,
            tunnels: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }

    fn tunnels(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, OpenTunnel>> {
        self.tunnels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a task of this node; it must end once `stopping()` is cancelled.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Cancelled when the node stops.
    pub fn stopping(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub fn is_online(&self, agent_id: &AgentId) -> bool {
        self.links.is_online(agent_id)
    }

    /// Sends a control message on the agent's link, if this node holds it.
    pub fn send(&self, agent_id: &AgentId, message: ServerMessage) {
        self.links.command(agent_id, LinkCommand::send(message));
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn port_range(&self) -> PortRange {
        self.ports.range()
    }

    /// Tunnel ports held now, and how many the range has.
    pub fn tunnel_ports(&self) -> (usize, usize) {
        (self.ports.in_use(), self.ports.range().len())
    }

    /// Binds a tunnel port for the session and starts accepting on it, over `handle` (the
    /// link of `agent_id`). `None` when the range has no free port.
    pub async fn open_tunnel(
        &self,
        id: &SessionId,
        agent_id: &AgentId,
        handle: Handle,
    ) -> Option<Tunnel> {
        let (port, listener) = self.ports.bind().await?;
        let tunnel = Tunnel {
            session: id.clone(),
            agent: agent_id.clone(),
            port,
            handle,
            stop: self.shutdown.child_token(),
            // What counts as use is what the agent's link said in its hello.
            activity: Activity::new(self.links.session_use(agent_id)),
            metrics: self.metrics.clone(),
        };
        let open = OpenTunnel::start(tunnel.clone(), listener);
        self.tunnels().insert(id.clone(), open);
        Some(tunnel)
    }

    /// The running tunnel of a session, if this node holds it.
    pub fn tunnel(&self, id: &SessionId) -> Option<Tunnel> {
        self.tunnels().get(id).map(|open| open.tunnel.clone())
    }

    /// The agent's count of logins through its session's tunnel, if this node holds it.
    /// False if the session is another agent's; one whose tunnel is gone has nothing left
    /// to keep alive (true).
    pub fn logins(&self, agent_id: &AgentId, id: &SessionId, count: u32) -> bool {
        match self.tunnels().get(id) {
            Some(open) if open.tunnel.agent != *agent_id => false,
            Some(open) => {
                open.tunnel.activity.logins(count);
                true
            }
            None => true,
        }
    }

    /// Closes a session's tunnel, if it has one, and only then hands its port back.
    pub async fn close_tunnel(&self, id: &SessionId) {
        let open = self.tunnels().remove(id);
        if let Some(open) = open {
            self.ports.release(open.close().await);
        }
    }

    /// The node stops: every tunnel closes and every task is told to end.
    pub async fn close(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        let open: Vec<OpenTunnel> = self.tunnels().drain().map(|(_, t)| t).collect();
        for tunnel in open {
            self.ports.release(tunnel.close().await);
        }
    }

    /// Waits for the tasks to end (after `close`, and after the links have closed).
    pub async fn wait(&self) {
        self.tasks.wait().await;
    }
}
