//! Where the other nodes are: which may hold an agent's link, and the node address each
//! takes node streams on. Read from the store, which every node writes its own row to.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::node::NodeId;
use crate::store::{Store, StoreResult};

/// Another node and its node address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub node: NodeId,
    pub address: SocketAddr,
}

#[async_trait]
pub trait Directory: Send + Sync {
    /// The other nodes that may hold `agent_id`'s link, most likely first.
    async fn link_candidates(&self, me: &NodeId, agent_id: &str) -> StoreResult<Vec<Peer>>;
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
