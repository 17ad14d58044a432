//! Health for load balancers: alive (the process answers: nothing to check) and ready (the
//! store answers a read, this node's heartbeat is current — other nodes may take a node over
//! whose heartbeat failed — and the HTTP and agent listeners are accepting; not while
//! stopping).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cluster::Cluster;
use crate::store::{Store, StoreError};

/// A readiness probe waits this long for the store: load balancers give a probe a few
/// seconds (AWS 5 s, Kubernetes 1 s by default, often raised), and a hung store must read as
/// not ready rather than as a probe that timed out.
pub const STORE_DEADLINE: Duration = Duration::from_secs(2);

/// A listener whose accept loop readiness watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Http,
    Agents,
}

impl Listener {
    fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "HTTP",
            Listener::Agents => "agent gateway",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the server is stopping")]
    Stopping,
    #[error("the {} listener is not accepting", .0.as_str())]
    ListenerDown(Listener),
    /// The cause goes to the log, not to whoever probes.
    #[error("the store does not answer")]
    Store(#[source] StoreError),
    #[error("the store did not answer within {} s", STORE_DEADLINE.as_secs())]
    StoreTimeout,
    #[error("this node's heartbeat has failed: other nodes may have taken it over")]
    Heartbeat,
}

pub struct Readiness {
    store: Arc<dyn Store>,
    /// This node among the others; `None` in tests of readiness alone.
    cluster: Option<Arc<Cluster>>,
    http: Arc<AtomicBool>,
    agents: Arc<AtomicBool>,
    stopping: AtomicBool,
}

impl Readiness {
    pub fn new(store: Arc<dyn Store>, cluster: Option<Arc<Cluster>>) -> Self {
        Self {
            store,
            cluster,
            http: Arc::default(),
            agents: Arc::default(),
            stopping: AtomicBool::new(false),
        }
    }

    /// Runs a listener's accept loop, counting it up for as long as it runs.
    pub fn track<F>(&self, listener: Listener, serve: F) -> impl Future<Output = ()> + use<F>
    where
        F: Future<Output = ()>,
    {
        let flag = match listener {
            Listener::Http => self.http.clone(),
            Listener::Agents => self.agents.clone(),
        };
        async move {
            flag.store(true, Ordering::Relaxed);
            let _down = Down(flag);
            serve.await;
        }
    }

    /// From now on the server is not ready: load balancers stop sending it traffic while it
    /// finishes what it serves.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub async fn check(&self) -> Result<(), NotReady> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(NotReady::Stopping);
        }
        if self.cluster.as_ref().is_some_and(|c| !c.healthy()) {
            return Err(NotReady::Heartbeat);
        }
        for (listener, up) in [
            (Listener::Http, &self.http),
            (Listener::Agents, &self.agents),
        ] {
            if !up.load(Ordering::Relaxed) {
                return Err(NotReady::ListenerDown(listener));
            }
        }
        match tokio::time::timeout(STORE_DEADLINE, self.store.count_users()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(NotReady::Store(error)),
            Err(_) => Err(NotReady::StoreTimeout),
        }
    }
}

/// Marks a listener down when its loop ends, however it ends.
struct Down(Arc<AtomicBool>);

impl Drop for Down {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn ready_only_while_both_listeners_run_and_not_once_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let ready = Readiness::new(store, None);
        assert!(matches!(
            ready.check().await,
            Err(NotReady::ListenerDown(Listener::Http))
        ));

        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn(ready.track(Listener::Http, async {
            let _ = http_stopped.await;
        }));
        let agents = tokio::spawn(ready.track(Listener::Agents, std::future::pending()));
        tokio::task::yield_now().await;
        // The tasks run on this thread's runtime too: wait until both have started.
        while ready.check().await.is_err() {
            tokio::task::yield_now().await;
        }
        let _ = stop_http.send(());
        http.await.unwrap();
        assert!(matches!(
            ready.check().await,
            Err(NotReady::ListenerDown(Listener::Http))
        ));

        agents.abort();
        let _ = agents.await;
        assert!(
            !ready.agents.load(Ordering::Relaxed),
            "an aborted loop counts as down"
        );
        ready.stopping();
        assert!(matches!(ready.check().await, Err(NotReady::Stopping)));
    }
}
