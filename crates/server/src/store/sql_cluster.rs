//! `ClusterKeyStore` and `NodeStore` written once for both databases (`cluster_store!`
//! expands them for a store type). Wake-ups are each database's own.

macro_rules! cluster_store {
    ($store:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use $crate::store::StoreResult;
            use $crate::node::NodeId;
            use $crate::store::cluster::{ClusterKeyStore, NodeRecord, NodeStore};
            use $crate::store::rows::Columns;

            #[async_trait]
            impl ClusterKeyStore for $store {
                async fn cluster_key(
                    &self,
                    name: &str,
                    candidate: &str,
                    now: i64,
                ) -> StoreResult<String> {
                    // Of nodes racing, the first insert wins and the others' do nothing (on
                    // PostgreSQL they wait for it to commit); all then read the winner's.
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
            impl NodeStore for $store {
                async fn register_node(
                    &self,
                    id: &NodeId,
                    address: Option<&str>,
                    now: i64,
                ) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO nodes (id, address, started_at, heartbeat_at) \
                         VALUES ($1, $2, $3, $3) \
                         ON CONFLICT (id) DO UPDATE SET address = $2, started_at = $3, heartbeat_at = $3",
                    )
                    .bind(id.as_str())
                    .bind(address)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn node_heartbeat(&self, id: &NodeId, now: i64) -> StoreResult<bool> {
                    let done = sqlx::query("UPDATE nodes SET heartbeat_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(id.as_str())
                        .execute(self.beat_pool())
                        .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
                    sqlx::query(
                        "SELECT id, address, started_at, heartbeat_at FROM nodes ORDER BY id",
                    )
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|row| {
                        Ok(NodeRecord {
                            id: {
                                let id = row.text("id")?;
                                NodeId::parse(&id).ok_or_else(|| {
                                    $crate::store::rows::corrupt("nodes.id", format!("{id:?}"))
                                })?
                            },
                            address: row.opt_text("address")?,
                            started_at: row.int("started_at")?,
                            heartbeat_at: row.int("heartbeat_at")?,
                        })
                    })
                    .collect()
                }
            }
        };
    };
}
pub(crate) use cluster_store;
