//! Where the other nodes are: which may hold an agent's link, and the node address each
//! takes node streams on. Read from the store, which every node writes its own row to.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use postern_protocol::AgentId;

use crate::node::NodeId;
use crate::store::{NodeRecord, Store, StoreResult};

/// Another node and its node address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub node: NodeId,
    pub address: SocketAddr,
}

#[async_trait]
pub trait Directory: Send + Sync {
    /// The other nodes that may hold `agent_id`'s link, most likely first.
    async fn link_candidates(&self, me: &NodeId, agent_id: &AgentId) -> StoreResult<Vec<Peer>>;
    /// Where `node` takes node streams; `None` if it has no node address.
    async fn address(&self, node: &NodeId) -> StoreResult<Option<SocketAddr>>;
}

/// The directory kept in the store.
pub struct StoreDirectory {
    store: Arc<dyn Store>,
}

impl StoreDirectory {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self { store })
    }
}

fn peer_of(node: &NodeRecord) -> Option<Peer> {
    Some(Peer {
        node: node.id.clone(),
        address: node.address.as_deref()?.parse().ok()?,
    })
}

#[async_trait]
impl Directory for StoreDirectory {
    // The node the store records as holding the agent's link; none: the agent is offline.
    async fn link_candidates(&self, me: &NodeId, agent_id: &AgentId) -> StoreResult<Vec<Peer>> {
        let links = self.store.list_links().await?;
        let Some(link) = links.iter().find(|l| l.agent_id == *agent_id) else {
            return Ok(Vec::new());
        };
        if link.node == *me {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .list_nodes()
            .await?
            .iter()
            .filter(|n| n.id == link.node)
            .filter_map(peer_of)
            .collect())
    }

    async fn address(&self, node: &NodeId) -> StoreResult<Option<SocketAddr>> {
        Ok(self
            .store
            .list_nodes()
            .await?
            .iter()
            .find(|n| n.id == *node)
            .and_then(peer_of)
            .map(|p| p.address))
    }
}
