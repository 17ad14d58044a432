//! Cases for what the nodes of one database share: keys, node rows.

use std::sync::Arc;

use super::RACERS;
use crate::node::NodeId;
use crate::store::Store;

/// However many nodes start at once, all get the same key: the first stored.
pub async fn racing_nodes_get_one_cluster_key(store: Arc<impl Store>) {
    let mut racers = Vec::new();
    for i in 0..RACERS {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            store
                .cluster_key("host_key", &format!("candidate-{i}"), 1)
                .await
                .unwrap()
        }));
    }
    let mut got = Vec::new();
    for racer in racers {
        got.push(racer.await.unwrap());
    }
    got.dedup();
    assert_eq!(got.len(), 1, "every node must get the same key: {got:?}");
    assert!(got[0].starts_with("candidate-"));
    assert_eq!(
        store.cluster_key("host_key", "late", 2).await.unwrap(),
        got[0]
    );
    assert_eq!(store.cluster_key("other", "mine", 2).await.unwrap(), "mine");
}

/// A node registers, heartbeats, registers again on restart; a node without a row is told so.
pub async fn nodes_register_and_heartbeat(store: Arc<impl Store>) {
    // Listed in id order.
    let [a, b, gone] = ["a", "b", "c"].map(|c| NodeId::parse(&c.repeat(32)).unwrap());
    store
        .register_node(&a, Some("10.0.0.1:2300"), 10)
        .await
        .unwrap();
    store.register_node(&b, None, 11).await.unwrap();
    assert!(store.node_heartbeat(&a, 20).await.unwrap());
    assert!(!store.node_heartbeat(&gone, 20).await.unwrap());
    let nodes = store.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].id, a);
    assert_eq!(nodes[0].address.as_deref(), Some("10.0.0.1:2300"));
    assert_eq!((nodes[0].started_at, nodes[0].heartbeat_at), (10, 20));
    assert_eq!(nodes[1].address, None);

    store
        .register_node(&a, Some("10.0.0.9:2300"), 30)
        .await
        .unwrap();
    let a = store.list_nodes().await.unwrap().remove(0);
    assert_eq!(a.address.as_deref(), Some("10.0.0.9:2300"));
    assert_eq!((a.started_at, a.heartbeat_at), (30, 30));
}

/// A wake-up reaches the waking node's own receivers.
pub async fn wakeups_reach_this_node(store: Arc<impl Store>) {
    use crate::store::{Topic, Wake};
    let mut wakes = store.wakeups();
    store.wake(Topic::Links);
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), wakes.recv())
        .await
        .expect("the wake-up arrives")
        .unwrap();
    assert_eq!(got, Wake::Changed(Topic::Links));
}
