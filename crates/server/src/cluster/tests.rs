//! The cluster's own tests: a node taken over while alive, its health, and its links' rows
//! kept true against the store.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::gateway::Cut;
use crate::links::{NewLink, SessionUse};
use crate::sessions::SessionConfig;
use crate::store::SqliteStore;

async fn node(store: Arc<dyn Store>) -> Arc<Cluster> {
    node_with(store, ClusterConfig::default()).await
}

async fn node_with(store: Arc<dyn Store>, config: ClusterConfig) -> Arc<Cluster> {
    node_as(store, config, NodeId::random()).await
}

/// The node `node` (again, when it ran before on the store).
async fn node_as(store: Arc<dyn Store>, config: ClusterConfig, node: NodeId) -> Arc<Cluster> {
    let events = Arc::new(EventBus::new(store.clone()).await.unwrap());
    let links = Arc::new(LinkRegistry::default());
    let sessions = Sessions::new(
        store.clone(),
        events.clone(),
        links.clone(),
        SessionConfig {
            ports: crate::config::PortRange {
                first: 20000,
                last: 20001,
            },
            bind: "127.0.0.1".parse().unwrap(),
            start_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(600),
        },
        node.clone(),
        crate::metrics::Metrics::default(),
        None,
    );
    Arc::new(Cluster::new(node, store, links, events, sessions, config))
}

async fn agent(store: &dyn Store, id: &str) {
    store
        .insert_agent(&crate::store::AgentRecord {
            id: id.into(),
            did: format!("did:key:z{id}"),
            name: id.into(),
            ssh_public_key: format!("ssh-ed25519 {id}"),
            status: postern_protocol::AgentStatus::Approved,
            facts: postern_protocol::AgentFacts::default(),
            enrolled_at: 0,
            last_seen: None,
            remote_addr: None,
        })
        .await
        .unwrap();
}

/// A node whose links are judged settled at once (a heartbeat of zero), so that one refresh
/// reconciles every link registered before it.
async fn settled_node(store: Arc<dyn Store>) -> Arc<Cluster> {
    let config = ClusterConfig {
        heartbeat: Duration::ZERO,
        ..ClusterConfig::default()
    };
    let me = node_with(store, config).await;
    me.register(None).await.unwrap();
    me
}

fn link(me: &Cluster, agent: &str) -> (crate::links::LinkId, Cut) {
    let (commands, _inbox) = mpsc::channel(1);
    let cut = Cut::default();
    let (id, _) = me
        .links
        .register(
            &agent.into(),
            NewLink {
                commands,
                heartbeat: None,
                session_use: SessionUse::Logins,
                cut: cut.clone(),
                connected_at: now_ms(),
            },
        )
        .unwrap();
    (id, cut)
}

/// A link whose row could not be written when it came up (the pool timed out in a storm) is
/// written by the node's next refresh: a connected agent is not left shown offline.
#[tokio::test]
async fn a_link_whose_row_was_never_written_is_written_by_the_next_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    agent(&*store, "a1").await;
    let me = settled_node(store.clone()).await;
    let (id, cut) = link(&me, "a1");
    assert!(store.list_links().await.unwrap().is_empty());

    me.refresh(&mut HashMap::new()).await;
    let rows = store.list_links().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0].node, me.node());
    assert_eq!(rows[0].connected_at, id.connected_at());
    assert!(!cut.is_cut());
}

/// A link older than the agent's row on another node is stale (the agent gave up on it while
/// its row waited for the database, and dialled the other node): the refresh cuts it, and its
/// late first write would not have taken the row.
#[tokio::test]
async fn a_link_older_than_the_agents_link_on_another_node_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    agent(&*store, "a1").await;
    let me = settled_node(store.clone()).await;
    let other = settled_node(store.clone()).await;
    let (stale, cut) = link(&me, "a1");
    let (newer, kept) = link(&other, "a1");
    assert!(newer.connected_at() >= stale.connected_at());
    let newer_at = stale.connected_at() + 1;
    let row = LinkRecord {
        agent_id: "a1".into(),
        node: other.node().clone(),
        connected_at: newer_at,
        liveness: Liveness::Online,
    };
    assert!(store.link_up(&row).await.unwrap());
    assert_eq!(
        me.link_up(&"a1".into(), stale.connected_at()).await,
        LinkClaim::Superseded
    );

    me.refresh(&mut HashMap::new()).await;
    assert!(cut.is_cut(), "the stale link is cut");
    assert_eq!(store.list_links().await.unwrap(), [row]);
    assert!(!kept.is_cut());
}

#[tokio::test]
async fn a_node_taken_over_while_alive_comes_back_with_its_links() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    agent(&*store, "a1").await;
    let me = node(store.clone()).await;
    me.register(None).await.unwrap();
    let (commands, _inbox) = mpsc::channel(1);
    let (id, _) = me
        .links
        .register(
            &"a1".into(),
            NewLink {
                commands,
                heartbeat: None,
                session_use: SessionUse::Logins,
                cut: Cut::default(),
                connected_at: now_ms(),
            },
        )
        .unwrap();
    assert_eq!(
        me.link_up(&"a1".into(), id.connected_at()).await,
        LinkClaim::Held
    );

    // Another node found this one stale and took it over: its row and links are gone.
    let row = store.list_nodes().await.unwrap().remove(0);
    let taken = store
        .take_over_node(me.node(), row.heartbeat_at)
        .await
        .unwrap();
    assert_eq!(taken, Some(vec![AgentId::from("a1")]));

    // Its next heartbeat finds that out and registers again; its next refresh writes its
    // links again (the link is younger than a heartbeat: written all the same).
    me.heartbeat().await;
    assert_eq!(store.list_nodes().await.unwrap().len(), 1);
    assert!(store.list_links().await.unwrap().is_empty());
    me.refresh(&mut HashMap::new()).await;
    let links = store.list_links().await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(&links[0].node, me.node());
    assert!(me.healthy());
}

#[tokio::test]
async fn a_node_whose_heartbeat_is_stale_is_not_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let me = node(store.clone()).await;
    me.register(None).await.unwrap();
    assert!(me.healthy());
    // As if the last heartbeat that got through was `dead_after` ago.
    me.last_beat
        .store(now_ms() - millis(me.config.dead_after), Ordering::Relaxed);
    assert!(!me.healthy());
    let readiness = crate::health::Readiness::new(store, Some(me.clone()));
    assert!(matches!(
        readiness.check().await,
        Err(crate::health::NotReady::Heartbeat)
    ));
    me.heartbeat().await;
    assert!(
        me.healthy(),
        "a heartbeat that gets through makes it healthy again"
    );
}

/// A node's heartbeat goes on while the rest of its work waits on the database (here the link
/// table is locked, as a long take-over or a linking storm holds a node's refresh): with the
/// heartbeat behind the refresh, other nodes took a live node over.
#[tokio::test]
async fn the_heartbeat_goes_on_while_the_nodes_other_work_waits_for_the_database() {
    use sqlx::Connection;
    let Some(url) = crate::store::postgres_testing::fresh_database().await else {
        return;
    };
    let pg = crate::store::PgStore::open(&url, Default::default())
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(pg);
    let config = ClusterConfig {
        heartbeat: Duration::from_millis(50),
        ..ClusterConfig::default()
    };
    let me = node_with(store.clone(), config).await;
    me.register(None).await.unwrap();
    let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE agent_links IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(me.clone().run(shutdown.clone()));

    // Two heartbeats seen to land: the first may be the one before the refresh got stuck.
    let beat_at = |nodes: Vec<crate::store::NodeRecord>| nodes[0].heartbeat_at;
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut last = beat_at(store.list_nodes().await.unwrap());
        for _ in 0..2 {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let now = beat_at(store.list_nodes().await.unwrap());
                if now != last {
                    last = now;
                    break;
                }
            }
        }
    })
    .await
    .expect("no heartbeat while the refresh waited for the link table");
    tx.rollback().await.unwrap();
    shutdown.cancel();
    running.await.unwrap();
}

/// The node that takes a lost node over announces every agent the lost node held offline,
/// each once (their records read at once, their events stored in batches).
#[tokio::test]
async fn taking_a_node_over_announces_each_of_its_agents_offline_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let me = node(store.clone()).await;
    me.register(None).await.unwrap();
    let lost = NodeId::random();
    store.register_node(&lost, None, 1).await.unwrap();
    // More than one batch of the event writer.
    let count = crate::events::writer::MAX_BATCH + 200;
    for i in 0..count {
        let id = format!("a{i:04}");
        agent(&*store, &id).await;
        let link = LinkRecord {
            agent_id: id.as_str().into(),
            node: lost.clone(),
            connected_at: 1,
            liveness: Liveness::Online,
        };
        assert!(store.link_up(&link).await.unwrap());
    }

    me.take_over(&lost, 1).await;
    let events = store.events_after(0, 10_000).await.unwrap();
    let mut offline: Vec<String> = events
        .iter()
        .filter(|e| e.event.kind == EventKind::AgentOffline)
        .map(|e| e.event.agent.as_ref().unwrap().id.to_string())
        .collect();
    offline.sort();
    let expected: Vec<String> = (0..count).map(|i| format!("a{i:04}")).collect();
    assert_eq!(offline, expected);
    assert!(store.list_links().await.unwrap().is_empty());
}

/// A node that died and starts again before anyone took it over forgets its last run's links;
/// their agents were linked until that run's last heartbeat, which becomes their `last_seen`
/// (nothing was stored while they idled).
#[tokio::test]
async fn a_node_starting_again_stores_its_last_runs_agents_as_seen_at_its_last_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    agent(&*store, "a1").await;
    let first = node(store.clone()).await;
    first.register(None).await.unwrap();
    let (id, _) = link(&first, "a1");
    assert_eq!(
        first.link_up(&"a1".into(), id.connected_at()).await,
        LinkClaim::Held
    );
    let last_beat = now_ms() - 1_000;
    assert!(store.node_heartbeat(first.node(), last_beat).await.unwrap());

    let again = node_as(
        store.clone(),
        ClusterConfig::default(),
        first.node().clone(),
    )
    .await;
    again.register(None).await.unwrap();
    assert!(store.list_links().await.unwrap().is_empty());
    let agent = store.agent_by_id(&"a1".into()).await.unwrap().unwrap();
    assert_eq!(agent.last_seen, Some(last_beat));
}
