//! `LinkStore` written once for both databases (`link_store!` expands it for a store type).
//! A node changes only the rows it holds (`… AND node_id = $2`); taking a dead node over is
//! one transaction whose first statement is a compare-and-set on the node's heartbeat, so of
//! several survivors exactly one removes it and its links (on PostgreSQL a second deleter
//! waits for the first and then finds no row; on SQLite writers run one at a time).

macro_rules! link_store {
    ($store:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use postern_protocol::AgentId;
            use postern_protocol::api::Liveness;
            use sqlx::Row;

            use $crate::node::NodeId;
            use $crate::store::links::{
                LAST_SEEN_BATCH, LAST_SEEN_OF_NODE, LinkEnded, LinkRecord, LinkRow, LinkStore,
                last_seen_statement,
            };
            use $crate::store::{StoreError, StoreResult};

            #[async_trait]
            impl LinkStore for $store {
                async fn link_up(&self, link: &LinkRecord) -> StoreResult<bool> {
                    let done = sqlx::query(
                        "INSERT INTO agent_links (agent_id, node_id, connected_at, liveness) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (agent_id) DO UPDATE \
                         SET node_id = $2, connected_at = $3, liveness = $4 \
                         WHERE agent_links.connected_at <= $3",
                    )
                    .bind(link.agent_id.as_str())
                    .bind(link.node.as_str())
                    .bind(link.connected_at)
                    .bind(link.liveness.as_str())
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn link_liveness(
                    &self,
                    agent_id: &AgentId,
                    node: &NodeId,
                    liveness: Liveness,
                ) -> StoreResult<bool> {
                    let done = sqlx::query(
                        "UPDATE agent_links SET liveness = $3 WHERE agent_id = $1 AND node_id = $2",
                    )
                    .bind(agent_id.as_str())
                    .bind(node.as_str())
                    .bind(liveness.as_str())
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn link_down(
                    &self,
                    agent_id: &AgentId,
                    node: &NodeId,
                    last_seen: i64,
                ) -> StoreResult<LinkEnded> {
                    let mut tx = self.write_tx().await?;
                    sqlx::query("UPDATE agents SET last_seen = $2 WHERE id = $1")
                        .bind(agent_id.as_str())
                        .bind(last_seen)
                        .execute(&mut *tx)
                        .await?;
                    let done =
                        sqlx::query("DELETE FROM agent_links WHERE agent_id = $1 AND node_id = $2")
                            .bind(agent_id.as_str())
                            .bind(node.as_str())
                            .execute(&mut *tx)
                            .await?;
                    let ended = if done.rows_affected() == 1 {
                        LinkEnded::Removed
                    } else {
                        let holder: Option<String> = sqlx::query_scalar(
                            "SELECT node_id FROM agent_links WHERE agent_id = $1",
                        )
                        .bind(agent_id.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                        match holder {
                            Some(node) => {
                                LinkEnded::HeldBy(NodeId::parse(&node).ok_or_else(|| {
                                    StoreError::Corrupt(format!("agent_links.node_id: {node:?}"))
                                })?)
                            }
                            None => LinkEnded::Absent,
                        }
                    };
                    tx.commit().await?;
                    Ok(ended)
                }

                async fn list_links(&self) -> StoreResult<Vec<LinkRecord>> {
                    sqlx::query("SELECT agent_id, node_id, connected_at, liveness FROM agent_links")
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(|row| {
                            LinkRecord::try_from(LinkRow {
                                agent_id: row.try_get("agent_id")?,
                                node_id: row.try_get("node_id")?,
                                connected_at: row.try_get("connected_at")?,
                                liveness: row.try_get("liveness")?,
                            })
                        })
                        .collect()
                }

                async fn clear_node_links(
                    &self,
                    node: &NodeId,
                    last_seen: i64,
                ) -> StoreResult<Vec<AgentId>> {
                    let mut tx = self.write_tx().await?;
                    sqlx::query(LAST_SEEN_OF_NODE)
                        .bind(node.as_str())
                        .bind(last_seen)
                        .execute(&mut *tx)
                        .await?;
                    let agents: Vec<String> = sqlx::query_scalar(
                        "DELETE FROM agent_links WHERE node_id = $1 RETURNING agent_id",
                    )
                    .bind(node.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(agents.into_iter().map(AgentId::from).collect())
                }

                async fn take_over_node(
                    &self,
                    node: &NodeId,
                    heartbeat_at: i64,
                ) -> StoreResult<Option<Vec<AgentId>>> {
                    let mut tx = self.write_tx().await?;
                    let won = sqlx::query("DELETE FROM nodes WHERE id = $1 AND heartbeat_at = $2")
                        .bind(node.as_str())
                        .bind(heartbeat_at)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        == 1;
                    if !won {
                        return Ok(None);
                    }
                    sqlx::query(LAST_SEEN_OF_NODE)
                        .bind(node.as_str())
                        .bind(heartbeat_at)
                        .execute(&mut *tx)
                        .await?;
                    let agents: Vec<String> = sqlx::query_scalar(
                        "DELETE FROM agent_links WHERE node_id = $1 RETURNING agent_id",
                    )
                    .bind(node.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(Some(agents.into_iter().map(AgentId::from).collect()))
                }

                async fn store_last_seen(&self, seen: &[(AgentId, i64)]) -> StoreResult<()> {
                    for batch in seen.chunks(LAST_SEEN_BATCH) {
                        let statement = last_seen_statement(batch.len());
                        let mut query = sqlx::query(&statement);
                        for (id, time) in batch {
                            query = query.bind(id.as_str()).bind(*time);
                        }
                        query.execute(&self.pool).await?;
                    }
                    Ok(())
                }
            }
        };
    };
}
pub(crate) use link_store;
