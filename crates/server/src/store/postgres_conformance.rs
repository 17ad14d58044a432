//! The store conformance suite on PostgreSQL, each case on a fresh database of the server
//! `POSTERN_TEST_POSTGRES` names (scripts/test starts a throwaway cluster and sets it). Without
//! the variable the cases are skipped with a notice, unless `CI` is set: there they fail.

use std::sync::Arc;

use super::PgStore;
use super::conformance::every_case;
use super::postgres::testing::fresh_database;

async fn open() -> Option<((), Arc<PgStore>)> {
    let url = fresh_database().await?;
    let store = PgStore::open(&url, Default::default()).await.unwrap();
    Some(((), Arc::new(store)))
}

every_case!(open());

/// PostgreSQL cannot hold a NUL character in text (SQLite can): a lookup or a write with one
/// is the request's fault, said so, never a storage failure or a 500.
#[tokio::test]
async fn text_with_nul_is_refused_as_the_requests_fault() {
    use crate::store::{AgentFilter, AgentSearch, StoreError, UserStore};
    let Some((_, store)) = open().await else {
        return;
    };
    let refused = |r: Result<(), StoreError>| match r {
        Err(e @ StoreError::Unstorable) => assert!(e.storage_failure().is_none()),
        other => panic!("{other:?}"),
    };
    refused(store.user_by_name("a\0b").await.map(|_| ()));
    let search = AgentFilter {
        search: Some("x\0".into()),
        ..Default::default()
    };
    refused(store.find_agents(&search).await.map(|_| ()));
    let mut user =
        super::conformance::user(&*store, "u1", postern_protocol::api::Role::Viewer).await;
    user.id = "u2".into();
    user.name = "nul\0name".into();
    refused(store.insert_user(&user).await);
}

mod wakeups {
    use std::time::Duration;

    use super::*;
    use crate::store::{Topic, Wake, Wakeups};

    /// How long a test waits for a wake-up that must come (never reached when it works).
    const PATIENCE: Duration = Duration::from_secs(30);

    async fn next(wakes: &mut tokio::sync::broadcast::Receiver<Wake>) -> Wake {
        tokio::time::timeout(PATIENCE, wakes.recv())
            .await
            .expect("a wake-up")
            .unwrap()
    }

    /// Two stores on one database are two nodes: a wake-up on one reaches the other; when the
    /// listening connection is cut, the store listens again and says `Resync`, and wake-ups
    /// reach it again after that.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakeups_reach_other_nodes_and_resync_after_a_lost_connection() {
        let Some(url) = fresh_database().await else {
            return;
        };
        let a = PgStore::open(&url, Default::default()).await.unwrap();
        let b = PgStore::open(&url, Default::default()).await.unwrap();
        let mut on_b = b.wakeups();
        a.wake(Topic::Sessions);
        assert_eq!(next(&mut on_b).await, Wake::Changed(Topic::Sessions));

        let cut: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(&a.pool)
        .await
        .unwrap();
        assert_eq!(cut, 2, "each store listens on one connection");
        assert_eq!(next(&mut on_b).await, Wake::Resync);
        a.wake(Topic::Links);
        assert_eq!(next(&mut on_b).await, Wake::Changed(Topic::Links));
    }
}

/// The node's heartbeat has a connection of its own: it is written while every pooled
/// connection is taken (thousands of agents linking at once), or other nodes would judge a
/// live node dead and take it over.
#[tokio::test]
async fn a_heartbeat_is_written_while_every_pooled_connection_is_taken() {
    use crate::node::NodeId;
    use crate::store::NodeStore;
    let Some(url) = fresh_database().await else {
        return;
    };
    let settings = super::PgPoolSettings {
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(1),
    };
    let store = PgStore::open(&url, settings).await.unwrap();
    let node = NodeId::random();
    store.register_node(&node, None, 1).await.unwrap();
    // Every connection the pool may open, taken (the last acquire waits out its timeout).
    let mut taken = Vec::new();
    while let Ok(connection) = store.pool.acquire().await {
        taken.push(connection);
    }
    assert!(store.node_heartbeat(&node, 2).await.unwrap());
}
