//! ClusterKeyStore, NodeStore and Wakeups on SQLite. Wake-ups reach this process only: nodes
//! sharing a SQLite file learn of each other's changes by their poll.

use async_trait::async_trait;
use sqlx::Row;
use tokio::sync::broadcast;

use super::cluster::{ClusterKeyStore, NodeRecord, NodeStore, Topic, Wake, Wakeups};
use super::{SqliteStore, StoreResult};

#[async_trait]
impl ClusterKeyStore for SqliteStore {
    async fn cluster_key(&self, name: &str, candidate: &str, now: i64) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO cluster_keys (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM cluster_keys WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

#[async_trait]
impl NodeStore for SqliteStore {
    async fn register_node(&self, id: &str, address: Option<&str>, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO nodes (id, address, started_at, heartbeat_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (id) DO UPDATE SET address = $2, started_at = $3, heartbeat_at = $3",
        )
        .bind(id)
        .bind(address)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn node_heartbeat(&self, id: &str, now: i64) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE nodes SET heartbeat_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        sqlx::query("SELECT id, address, started_at, heartbeat_at FROM nodes ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(NodeRecord {
                    id: row.try_get("id")?,
                    address: row.try_get("address")?,
                    started_at: row.try_get("started_at")?,
                    heartbeat_at: row.try_get("heartbeat_at")?,
                })
            })
            .collect()
    }
}

impl Wakeups for SqliteStore {
    fn wake(&self, topic: Topic) {
        // No receivers is fine.
        let _ = self.wakes.send(Wake::Changed(topic));
    }

    fn wakeups(&self) -> broadcast::Receiver<Wake> {
        self.wakes.subscribe()
    }
}
