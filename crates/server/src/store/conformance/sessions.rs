//! Sessions: one open per user and agent, compare-and-set transitions, recovery by node.

use std::sync::Arc;

use futures::future::join_all;
use postern_protocol::api::EventKind;
use postern_protocol::{AgentId, SessionId, SessionState};

use super::{RACERS, agent};
use crate::node::NodeId;
use crate::store::{
    Actor, NewEvent, SessionChange, SessionInsert, SessionRecord, Store, TransitionRecord,
};

fn session(n: usize, agent_id: impl Into<AgentId>, node: Option<&NodeId>) -> SessionRecord {
    SessionRecord {
        id: SessionId::parse(&format!("{n:032x}")).unwrap(),
        agent_id: agent_id.into(),
        user_id: "u".into(),
        user_name: "ann".into(),
        state: SessionState::Requested,
        port: None,
        reason: None,
        created_at: n as i64,
        updated_at: n as i64,
        ended_at: None,
        node: node.cloned(),
        shells_kept: false,
    }
}

fn event(session: &SessionRecord, state: SessionState) -> NewEvent {
    NewEvent {
        time: 0,
        kind: EventKind::SessionState,
        actor: Actor::System,
        agent: None,
        session: Some((session.id.clone(), state)),
        detail: state.to_string(),
    }
}

fn change<'a>(
    id: &'a SessionId,
    from: SessionState,
    to: SessionState,
    reason: Option<&'static str>,
) -> SessionChange<'a> {
    SessionChange {
        id,
        from,
        to,
        reason,
        port: None,
        node: None,
        holder: None,
        time: 1,
    }
}

async fn events_of(store: &impl Store, id: &SessionId) -> Vec<SessionState> {
    store
        .events_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.event.session.filter(|(s, _)| s == id).map(|(_, st)| st))
        .collect()
}

/// Many tasks ask at once for a session of the same user on the same agent: one is stored.
pub async fn racing_starts_store_one_open_session<S: Store>(store: Arc<S>) {
    agent(&*store, "a1").await;
    let tries = (0..RACERS).map(|n| {
        let store = store.clone();
        async move {
            let s = session(n, "a1", None);
            store
                .insert_session(&s, &event(&s, SessionState::Requested))
                .await
                .unwrap()
        }
    });
    let outcomes = join_all(tries).await;
    let inserted = outcomes
        .iter()
        .filter(|o| matches!(o, SessionInsert::Inserted { .. }))
        .count();
    assert_eq!(inserted, 1, "{outcomes:?}");
    let open: Vec<_> = store
        .list_sessions(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.state.is_open())
        .collect();
    assert_eq!(open.len(), 1);
    // Only the stored one has its event.
    assert_eq!(store.events_after(0, 100).await.unwrap().len(), 1);

    // Once it has ended, the next one is stored.
    let first = &open[0];
    let fail = change(
        &first.id,
        SessionState::Requested,
        SessionState::Failed,
        Some("x"),
    );
    assert!(
        store
            .transition_session(&fail, &event(first, SessionState::Failed))
            .await
            .unwrap()
            .is_some()
    );
    let next = session(RACERS, "a1", None);
    assert!(matches!(
        store
            .insert_session(&next, &event(&next, SessionState::Requested))
            .await
            .unwrap(),
        SessionInsert::Inserted { .. }
    ));
    // Another agent of the same user is another session.
    agent(&*store, "a2").await;
    let other = session(RACERS + 1, "a2", None);
    assert!(matches!(
        store
            .insert_session(&other, &event(&other, SessionState::Requested))
            .await
            .unwrap(),
        SessionInsert::Inserted { .. }
    ));
}

/// A transition applies only from the state it was decided on; of racing ones, one wins,
/// and history and events hold exactly the transitions that applied, in order.
pub async fn transitions_are_compare_and_set<S: Store>(store: Arc<S>) {
    agent(&*store, "a1").await;
    let s = session(1, "a1", None);
    store
        .insert_session(&s, &event(&s, SessionState::Requested))
        .await
        .unwrap();
    let stale = change(&s.id, SessionState::Starting, SessionState::Running, None);
    assert_eq!(
        store
            .transition_session(&stale, &event(&s, SessionState::Running))
            .await
            .unwrap(),
        None,
        "the session is not starting"
    );
    let racers = (0..RACERS).map(|n| {
        let store = store.clone();
        let s = s.clone();
        async move {
            // Half accept, half fail it: both from `requested`.
            let (to, reason) = if n % 2 == 0 {
                (SessionState::Starting, None)
            } else {
                (SessionState::Failed, Some("refused"))
            };
            let c = change(&s.id, SessionState::Requested, to, reason);
            store
                .transition_session(&c, &event(&s, to))
                .await
                .unwrap()
                .map(|_| to)
        }
    });
    let won: Vec<SessionState> = join_all(racers).await.into_iter().flatten().collect();
    assert_eq!(won.len(), 1, "{won:?}");
    let stored = store.session(&s.id).await.unwrap().unwrap();
    assert_eq!(stored.state, won[0]);
    let history: Vec<SessionState> = store
        .session_history(&s.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t: TransitionRecord| t.state)
        .collect();
    assert_eq!(history, [SessionState::Requested, won[0]]);
    assert_eq!(events_of(&*store, &s.id).await, history);
}

/// Recovery after a crash finds the node's own unfinished sessions (and those stored before
/// nodes were recorded), never another node's.
pub async fn unfinished_sessions_are_scoped_to_their_node<S: Store>(store: Arc<S>) {
    let (mine, theirs) = (NodeId::random(), NodeId::random());
    for (n, agent_id, node) in [
        (1, "a1", Some(&mine)),
        (2, "a2", Some(&theirs)),
        (3, "a3", None),
        (4, "a4", Some(&mine)),
    ] {
        agent(&*store, agent_id).await;
        let s = session(n, agent_id, node);
        store
            .insert_session(&s, &event(&s, SessionState::Requested))
            .await
            .unwrap();
    }
    // A session taken over by `theirs` (its tunnel bound there) is no longer mine.
    let moved = session(4, "a4", None).id;
    let take = SessionChange {
        node: Some(&theirs),
        holder: Some(&mine),
        port: Some(20000),
        ..change(
            &moved,
            SessionState::Requested,
            SessionState::Starting,
            None,
        )
    };
    let s4 = session(4, "a4", None);
    store
        .transition_session(&take, &event(&s4, SessionState::Starting))
        .await
        .unwrap()
        .unwrap();
    let found: Vec<SessionId> = store
        .unfinished_sessions(&mine)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(found, [session(1, "", None).id, session(3, "", None).id]);
    let taken = store.session(&moved).await.unwrap().unwrap();
    assert_eq!((taken.node, taken.port), (Some(theirs), Some(20000)));
}

/// A survivor decides on a lost node's session as it read it; if another node took the
/// session over meanwhile — even back in the same state (detached, then resumed there) — the
/// change is refused, as one decided on a stale state is.
pub async fn a_change_decided_on_a_node_the_session_left_is_refused<S: Store>(store: Arc<S>) {
    let (lost, other) = (NodeId::random(), NodeId::random());
    agent(&*store, "a1").await;
    let s = session(1, "a1", Some(&lost));
    store
        .insert_session(&s, &event(&s, SessionState::Requested))
        .await
        .unwrap();
    let running = SessionChange {
        holder: Some(&lost),
        ..change(&s.id, SessionState::Requested, SessionState::Running, None)
    };
    assert!(
        store
            .transition_session(&running, &event(&s, SessionState::Running))
            .await
            .unwrap()
            .is_some()
    );
    // Another node resumes it: its tunnel binds there, and it runs again.
    let taken = SessionChange {
        node: Some(&other),
        port: Some(20001),
        holder: Some(&lost),
        ..change(&s.id, SessionState::Running, SessionState::Running, None)
    };
    assert!(
        store
            .transition_session(&taken, &event(&s, SessionState::Running))
            .await
            .unwrap()
            .is_some()
    );
    // The survivor's decision, read when the session still named the lost node.
    let stale = SessionChange {
        holder: Some(&lost),
        ..change(
            &s.id,
            SessionState::Running,
            SessionState::Detached,
            Some("node lost"),
        )
    };
    assert_eq!(
        store
            .transition_session(&stale, &event(&s, SessionState::Detached))
            .await
            .unwrap(),
        None
    );
    let stored = store.session(&s.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.node.as_ref()),
        (SessionState::Running, Some(&other))
    );
    // Decided on what is stored now, the same change applies.
    let fresh = SessionChange {
        holder: Some(&other),
        ..stale
    };
    assert!(
        store
            .transition_session(&fresh, &event(&s, SessionState::Detached))
            .await
            .unwrap()
            .is_some()
    );
}

/// A running session can be stored as detached (migration 0008) with why, and, detached, is
/// still the user's one open session on that agent; back to running, the reason goes (an
/// ending keeps its stopping's).
pub async fn a_detached_session_stays_the_open_one<S: Store>(store: Arc<S>) {
    agent(&*store, "a1").await;
    let s = session(1, "a1", None);
    store
        .insert_session(&s, &event(&s, SessionState::Requested))
        .await
        .unwrap();
    for (from, to) in [
        (SessionState::Requested, SessionState::Starting),
        (SessionState::Starting, SessionState::Running),
        (SessionState::Running, SessionState::Detached),
    ] {
        let why = (to == SessionState::Detached).then_some("agent link lost");
        let c = change(&s.id, from, to, why);
        assert!(
            store
                .transition_session(&c, &event(&s, to))
                .await
                .unwrap()
                .is_some(),
            "{from} to {to}"
        );
    }
    let stored = store.session(&s.id).await.unwrap().unwrap();
    assert_eq!(stored.state, SessionState::Detached);
    assert_eq!(stored.reason.as_deref(), Some("agent link lost"));
    let second = session(2, "a1", None);
    assert!(
        matches!(
            store
                .insert_session(&second, &event(&second, SessionState::Requested))
                .await
                .unwrap(),
            SessionInsert::AlreadyOpen
        ),
        "a detached session is open"
    );
    for (from, to, why) in [
        (SessionState::Detached, SessionState::Running, None),
        (
            SessionState::Running,
            SessionState::Stopping,
            Some("stopped by a user"),
        ),
        (SessionState::Stopping, SessionState::Stopped, None),
    ] {
        let c = change(&s.id, from, to, why);
        let moved = store.transition_session(&c, &event(&s, to)).await.unwrap();
        assert!(moved.is_some(), "{from} to {to}");
        let stored = store.session(&s.id).await.unwrap().unwrap();
        let expected = match to {
            SessionState::Running => None,
            _ => Some("stopped by a user"),
        };
        assert_eq!(stored.reason.as_deref(), expected, "{to}");
    }
}

/// The agent's `Kept` list is recorded on its sessions (migration 0009): the listed ones are
/// marked, those it no longer lists unmarked, and another agent's session is never touched
/// whatever an agent lists.
pub async fn shells_kept_marks_the_listed_sessions_of_the_agent_only<S: Store>(store: Arc<S>) {
    agent(&*store, "a1").await;
    agent(&*store, "a2").await;
    let mine: Vec<SessionRecord> = (1..=3)
        .map(|n| SessionRecord {
            user_id: format!("u{n}").into(),
            ..session(n, "a1", None)
        })
        .collect();
    let theirs = session(4, "a2", None);
    for s in mine.iter().chain([&theirs]) {
        store
            .insert_session(s, &event(s, SessionState::Requested))
            .await
            .unwrap();
    }
    let kept = |ids: Vec<SessionId>| {
        let store = store.clone();
        async move {
            let mut marked = Vec::new();
            for id in ids {
                if store.session(&id).await.unwrap().unwrap().shells_kept {
                    marked.push(id);
                }
            }
            marked
        }
    };
    let all: Vec<SessionId> = mine.iter().chain([&theirs]).map(|s| s.id.clone()).collect();
    assert!(
        kept(all.clone()).await.is_empty(),
        "nothing is kept at first"
    );

    store
        .set_shells_kept(
            &"a1".into(),
            &[mine[0].id.clone(), mine[1].id.clone(), theirs.id.clone()],
        )
        .await
        .unwrap();
    assert_eq!(
        kept(all.clone()).await,
        [mine[0].id.clone(), mine[1].id.clone()]
    );
    store
        .set_shells_kept(&"a1".into(), &[mine[1].id.clone(), mine[2].id.clone()])
        .await
        .unwrap();
    assert_eq!(
        kept(all.clone()).await,
        [mine[1].id.clone(), mine[2].id.clone()]
    );
    store.set_shells_kept(&"a1".into(), &[]).await.unwrap();
    assert!(kept(all).await.is_empty());
}
