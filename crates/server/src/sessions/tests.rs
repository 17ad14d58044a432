//! Sessions on a real store with no agent linked: races between requests, recovery scoped to
//! its node, and every task of the node ending when it stops.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use postern_protocol::api::Role;
use postern_protocol::{AgentFacts, AgentStatus, SessionState};

use super::{SessionConfig, Sessions};
use crate::events::EventBus;
use crate::links::LinkRegistry;
use crate::node::NodeId;
use crate::store::{AgentRecord, SqliteStore, Store, UserRecord};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    events: Arc<EventBus>,
    agent: AgentRecord,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let agent = AgentRecord {
        id: "agent".into(),
        did: "did:key:zagent".into(),
        name: "agent".into(),
        ssh_public_key: "ssh-ed25519 agent".into(),
        status: AgentStatus::Approved,
        facts: AgentFacts::default(),
        enrolled_at: 0,
        last_seen: None,
        remote_addr: None,
    };
    store.insert_agent(&agent).await.unwrap();
    let events = Arc::new(EventBus::new(store.clone()).await.unwrap());
    Fixture {
        _dir: dir,
        store,
        events,
        agent,
    }
}

impl Fixture {
    /// The sessions of one node; the start timeout is long enough never to fire in a test.
    fn node(&self, node: NodeId) -> Arc<Sessions> {
        Sessions::new(
            self.store.clone(),
            self.events.clone(),
            Arc::new(LinkRegistry::default()),
            SessionConfig {
                ports: crate::config::PortRange {
                    first: 20000,
                    last: 20001,
                },
                bind: "127.0.0.1".parse().unwrap(),
                start_timeout: Duration::from_secs(3600),
                idle_timeout: Duration::from_secs(3600),
            },
            node,
            crate::metrics::Metrics::default(),
            None,
        )
    }
}

fn user(id: &str) -> UserRecord {
    UserRecord {
        id: id.into(),
        name: id.into(),
        role: Role::Operator,
        password_hash: "x".into(),
        created_at: 0,
        notifications_read_up_to: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_requests_of_one_user_on_one_agent_start_one_session() {
    let f = fixture().await;
    // Two nodes on one store, each asked several times at once.
    let nodes = [f.node(NodeId::random()), f.node(NodeId::random())];
    let ann = user("ann");
    let asks = (0..16).map(|n| {
        let sessions = nodes[n % 2].clone();
        let (ann, agent) = (ann.clone(), f.agent.clone());
        async move { sessions.request(&ann, &agent).await.unwrap() }
    });
    let answers = join_all(asks).await;
    assert_eq!(answers.iter().filter(|(_, created)| *created).count(), 1);
    let id = &answers[0].0.id;
    assert!(
        answers.iter().all(|(s, _)| &s.id == id),
        "every ask got the one session"
    );
}

#[tokio::test]
async fn recovery_ends_the_sessions_of_its_own_node_only() {
    let f = fixture().await;
    let (mine, theirs) = (NodeId::random(), NodeId::random());
    let (a, b) = (f.node(mine.clone()), f.node(theirs));
    let (my_session, _) = a.request(&user("ann"), &f.agent).await.unwrap();
    let (their_session, _) = b.request(&user("bob"), &f.agent).await.unwrap();
    a.close().await;
    // This node starts again (same id) and recovers.
    f.node(mine).recover().await.unwrap();
    let mine = f.store.session(&my_session.id).await.unwrap().unwrap();
    assert_eq!(
        (mine.state, mine.reason.as_deref()),
        (SessionState::Stopped, Some("server restarted"))
    );
    let theirs = f.store.session(&their_session.id).await.unwrap().unwrap();
    assert_eq!(
        theirs.state,
        SessionState::Requested,
        "another node's session"
    );
}

#[tokio::test]
async fn a_stopping_node_ends_every_task_of_its_sessions() {
    let f = fixture().await;
    let sessions = f.node(NodeId::random());
    // A request whose start timer would run for an hour.
    let (session, _) = sessions.request(&user("ann"), &f.agent).await.unwrap();
    sessions.close().await;
    // Without the tracker and its cancellation this would wait for the timer: the guard
    // only turns a hang into a failure.
    tokio::time::timeout(Duration::from_secs(60), sessions.wait())
        .await
        .expect("the start timer ended with the node");
    let stored = f.store.session(&session.id).await.unwrap().unwrap();
    assert_eq!(
        stored.state,
        SessionState::Requested,
        "ends at the next start"
    );
}
