//! Wake-ups on SQLite: they reach this process only, so nodes sharing a SQLite file learn of
//! each other's changes by their poll. (Keys and nodes are shared: `sql_cluster.rs`.)

use tokio::sync::broadcast;

use super::SqliteStore;
use super::cluster::{Topic, Wake, Wakeups};

super::sql_cluster::cluster_store!(SqliteStore);

impl Wakeups for SqliteStore {
    fn wake(&self, topic: Topic) {
        // No receivers is fine.
        let _ = self.wakes.send(Wake::Changed(topic));
    }

    fn wakeups(&self) -> broadcast::Receiver<Wake> {
        self.wakes.subscribe()
    }
}
