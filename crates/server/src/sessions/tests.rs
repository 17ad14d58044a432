//! Sessions on a real store with no agent linked: races between requests, recovery scoped to
//! its node, every task of the node ending when it stops, and a lost node's sessions.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use postern_protocol::api::Role;
use postern_protocol::{AgentFacts, AgentStatus, SessionId, SessionState};

use super::{LinkEnd, SessionConfig, Sessions};
use crate::events::EventBus;
use crate::links::LinkRegistry;
use crate::node::NodeId;
use crate::store::{AgentRecord, SessionRecord, SqliteStore, Store, UserRecord};

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

/// A session stored as it would be on `node`, in `state`.
async fn stored(
    f: &Fixture,
    n: u8,
    state: SessionState,
    node: &NodeId,
    reason: Option<&str>,
) -> SessionId {
    let session = SessionRecord {
        id: SessionId::parse(&format!("{n:032x}")).unwrap(),
        agent_id: f.agent.id.clone(),
        user_id: format!("user-{n}").into(),
        user_name: format!("user-{n}"),
        state,
        port: None,
        reason: reason.map(str::to_owned),
        created_at: i64::from(n),
        updated_at: i64::from(n),
        ended_at: None,
        node: Some(node.clone()),
        shells_kept: false,
    };
    let event = crate::events::new_event(
        postern_protocol::api::EventKind::SessionState,
        &crate::store::Actor::System,
        None,
        Some((session.id.clone(), state)),
        "stored",
    );
    f.store.insert_session(&session, &event).await.unwrap();
    session.id
}

async fn state_of(f: &Fixture, id: &SessionId) -> (SessionState, Option<String>) {
    let s = f.store.session(id).await.unwrap().unwrap();
    (s.state, s.reason)
}

#[tokio::test]
async fn a_lost_node_detaches_the_sessions_whose_shells_are_kept_and_ends_the_others() {
    let f = fixture().await;
    let (lost, survivor) = (NodeId::random(), NodeId::random());
    let kept = stored(&f, 1, SessionState::Running, &lost, None).await;
    let plain = stored(&f, 2, SessionState::Running, &lost, None).await;
    let asked = stored(&f, 3, SessionState::Requested, &lost, None).await;
    let waiting = stored(
        &f,
        4,
        SessionState::Detached,
        &lost,
        Some("agent link lost"),
    )
    .await;
    let elsewhere = stored(&f, 5, SessionState::Running, &survivor, None).await;
    // The agent's `Kept` named the first (and the one running elsewhere), on the lost node.
    f.store
        .set_shells_kept(&f.agent.id, &[kept.clone(), elsewhere.clone()])
        .await
        .unwrap();

    let sessions = f.node(survivor);
    let lost_ones = sessions.end_lost_node(&lost).await.unwrap();
    assert_eq!(
        lost_ones,
        super::LostSessions {
            detached: 1,
            ended: 2
        }
    );
    let node_lost = Some("node lost".to_owned());
    assert_eq!(
        state_of(&f, &kept).await,
        (SessionState::Detached, node_lost.clone())
    );
    assert_eq!(
        state_of(&f, &plain).await,
        (SessionState::Stopped, node_lost.clone())
    );
    assert_eq!(
        state_of(&f, &asked).await,
        (SessionState::Stopped, node_lost.clone())
    );
    assert_eq!(
        state_of(&f, &waiting).await,
        (SessionState::Detached, Some("agent link lost".into())),
        "a detached session waits on for its agent"
    );
    assert_eq!(state_of(&f, &elsewhere).await.0, SessionState::Running);

    // The agent links to the survivor and no longer has either detached session's shells:
    // each ends with its own reason.
    sessions.kept(&f.agent.id, vec![elsewhere.clone()]).await;
    assert_eq!(
        state_of(&f, &kept).await,
        (SessionState::Stopped, node_lost)
    );
    assert_eq!(
        state_of(&f, &waiting).await,
        (
            SessionState::Stopped,
            Some("the agent no longer has the session's shells".into())
        )
    );
}

#[tokio::test]
async fn a_link_lost_on_one_node_leaves_the_session_another_node_resumed() {
    let f = fixture().await;
    let (old, new) = (NodeId::random(), NodeId::random());
    // The agent's link on `old` died unnoticed; it linked to `new`, which resumed the session.
    let resumed = stored(&f, 1, SessionState::Running, &new, None).await;
    let mine = stored(&f, 2, SessionState::Running, &old, None).await;
    let kept: std::collections::HashSet<SessionId> = [resumed.clone(), mine.clone()].into();
    f.node(old)
        .link_down(&f.agent.id, &kept, LinkEnd::Offline)
        .await;
    assert_eq!(state_of(&f, &resumed).await.0, SessionState::Running);
    assert_eq!(
        state_of(&f, &mine).await,
        (SessionState::Detached, Some("agent link lost".into()))
    );
}

#[tokio::test]
async fn a_stale_link_ending_leaves_a_start_going_on_through_the_agents_newer_link() {
    let f = fixture().await;
    let (old, new) = (NodeId::random(), NodeId::random());
    // The agent linked to `new` and accepted a session there; its old link on `old` ends.
    let starting = stored(&f, 1, SessionState::Starting, &new, None).await;
    let running = stored(&f, 2, SessionState::Running, &old, None).await;
    let none = std::collections::HashSet::new();
    f.node(old.clone())
        .link_down(&f.agent.id, &none, LinkEnd::Superseded)
        .await;
    assert_eq!(state_of(&f, &starting).await.0, SessionState::Starting);
    assert_eq!(
        state_of(&f, &running).await.0,
        SessionState::Stopped,
        "its tunnel ran through the link that ended"
    );

    // The agent's only link ends: its start can no longer happen.
    f.node(old)
        .link_down(&f.agent.id, &none, LinkEnd::Offline)
        .await;
    assert_eq!(state_of(&f, &starting).await.0, SessionState::Stopped);
}
