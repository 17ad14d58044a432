//! The link registry: liveness from silence, presence versions, other nodes' links.

use super::*;

fn agent(id: &str) -> AgentId {
    AgentId::from(id)
}

/// A link accepted now, heartbeating at the configured interval.
fn new_link(commands: mpsc::Sender<LinkCommand>, session_use: SessionUse, cut: Cut) -> NewLink {
    NewLink {
        commands,
        heartbeat: None,
        session_use,
        cut,
        connected_at: now_ms(),
    }
}

fn registry() -> LinkRegistry {
    LinkRegistry::new(
        LivenessPolicy {
            interval: Duration::from_secs(10),
            misses: 3,
            timeout: Duration::from_secs(40),
        },
        Metrics::default(),
    )
}

#[test]
fn silence_makes_a_link_not_responding_then_lost_and_a_heartbeat_recovers_it() {
    let links = registry();
    let (commands, _inbox) = mpsc::channel(1);
    let cut = Cut::default();
    let (id, _) = links
        .register(
            &agent("a"),
            new_link(commands, SessionUse::Channels, cut.clone()),
        )
        .unwrap();
    let seen = links.last_seen(&agent("a")).unwrap();
    assert_eq!(links.sweep(seen + 30_000), Swept::default());
    assert_eq!(links.liveness(&agent("a")), Liveness::Online);
    let swept = links.sweep(seen + 30_001);
    assert_eq!(swept.quiet, vec![agent("a")]);
    assert_eq!(links.liveness(&agent("a")), Liveness::NotResponding);
    // Reported once.
    assert_eq!(links.sweep(seen + 31_000), Swept::default());
    assert!(
        links.touch(&agent("a")),
        "a heartbeat after silence is a recovery"
    );
    assert!(!links.touch(&agent("a")));
    assert_eq!(links.liveness(&agent("a")), Liveness::Online);

    let seen = links.last_seen(&agent("a")).unwrap();
    let swept = links.sweep(seen + 40_001);
    assert_eq!(swept.lost, vec![agent("a")]);
    assert!(cut.is_cut());
    assert!(!links.touch(&agent("a")), "a lost link stays lost");
    let gone = links.unregister(&agent("a"), id).unwrap();
    assert_eq!(gone.lost_after, Some(40_000));
    assert_eq!(links.liveness(&agent("a")), Liveness::Offline);
}

#[test]
fn liveness_changes_are_presence_changes() {
    let links = registry();
    let (commands, _inbox) = mpsc::channel(1);
    links
        .register(
            &agent("a"),
            new_link(commands, SessionUse::Channels, Cut::default()),
        )
        .unwrap();
    let start = links.presence_since(None).cursor;
    let seen = links.last_seen(&agent("a")).unwrap();
    let only = |cursor: &str| {
        let delta = links.presence_since(Some(cursor));
        assert!(!delta.full);
        let entries: Vec<(AgentId, bool, Liveness)> = delta
            .entries
            .into_iter()
            .map(|e| (e.id, e.online, e.liveness))
            .collect();
        (entries, delta.cursor)
    };
    assert_eq!(only(&start).0, []);

    links.sweep(seen + 30_001);
    let (entries, quiet) = only(&start);
    assert_eq!(entries, [("a".into(), true, Liveness::NotResponding)]);
    assert_eq!(only(&quiet).0, [], "reported once");

    assert!(links.touch(&agent("a")));
    let (entries, _) = only(&quiet);
    assert_eq!(entries, [("a".into(), true, Liveness::Online)]);
}

fn remote(agent_id: impl Into<AgentId>, liveness: Liveness) -> LinkRecord {
    LinkRecord {
        agent_id: agent_id.into(),
        node: crate::node::NodeId::random(),
        connected_at: 5,
        liveness,
    }
}

#[test]
fn other_nodes_links_count_everywhere_and_their_changes_are_presence_changes() {
    let links = registry();
    let start = links.presence_since(None).cursor;
    links.fold_remote(vec![
        remote("b", Liveness::Online),
        remote("c", Liveness::NotResponding),
    ]);
    assert_eq!(links.liveness(&agent("b")), Liveness::Online);
    assert_eq!(links.liveness(&agent("c")), Liveness::NotResponding);
    assert!(
        !links.is_online(&agent("b")),
        "commands reach this node's links only"
    );
    assert_eq!(links.connection_counts(), (2, 1));
    let mut ids = links.online_ids();
    ids.sort();
    assert_eq!(ids, [agent("b"), agent("c")]);
    let delta = links.presence_since(Some(&start));
    assert_eq!(delta.entries.len(), 2);

    // The same rows again: nothing changed.
    let cursor = delta.cursor;
    links.fold_remote(vec![
        remote("b", Liveness::Online),
        remote("c", Liveness::NotResponding),
    ]);
    assert!(links.presence_since(Some(&cursor)).entries.is_empty());

    // c's node let it go (or died): a tombstone; b answers again elsewhere.
    links.fold_remote(vec![remote("b", Liveness::NotResponding)]);
    let delta = links.presence_since(Some(&cursor));
    let mut got: Vec<(AgentId, bool, Liveness)> = delta
        .entries
        .into_iter()
        .map(|e| (e.id, e.online, e.liveness))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("b".into(), true, Liveness::NotResponding),
            ("c".into(), false, Liveness::Offline)
        ]
    );
    assert_eq!(links.liveness(&agent("c")), Liveness::Offline);
}

#[test]
fn an_agent_that_moved_to_another_node_stays_online_when_its_old_link_here_ends() {
    let links = registry();
    let (commands, _inbox) = mpsc::channel(1);
    let (id, _) = links
        .register(
            &agent("a"),
            new_link(commands, SessionUse::Channels, Cut::default()),
        )
        .unwrap();
    links.fold_remote(vec![remote("a", Liveness::Online)]);
    assert_eq!(links.connection_counts(), (1, 0), "counted once");
    let cursor = links.presence_since(None).cursor;
    links.unregister(&agent("a"), id).unwrap();
    assert_eq!(links.liveness(&agent("a")), Liveness::Online);
    let delta = links.presence_since(Some(&cursor));
    assert_eq!(delta.entries.len(), 1);
    assert!(
        delta.entries[0].online,
        "no tombstone for an agent online elsewhere"
    );
    // Its row gone from the other node too: now it is offline.
    links.fold_remote(Vec::new());
    assert_eq!(links.liveness(&agent("a")), Liveness::Offline);
}

#[test]
fn a_stated_heartbeat_scales_the_limits() {
    let policy = registry().policy();
    assert_eq!(policy.limits(None), (30_000, 40_000));
    assert_eq!(policy.limits(Some(Duration::from_secs(1))), (3_000, 40_000));
    // A slow heartbeat is never dropped before it could have missed its three.
    assert_eq!(
        policy.limits(Some(Duration::from_secs(60))),
        (180_000, 240_000)
    );
    assert_eq!(policy.sweep_period(), Duration::from_millis(2500));
}

#[test]
fn an_old_link_closing_does_not_unregister_the_new_one() {
    let links = registry();
    let (commands, _inbox) = mpsc::channel(1);
    let (old, _) = links
        .register(
            &agent("a"),
            new_link(commands.clone(), SessionUse::Channels, Cut::default()),
        )
        .unwrap();
    let (new, previous) = links
        .register(
            &agent("a"),
            new_link(commands, SessionUse::Logins, Cut::default()),
        )
        .unwrap();
    assert!(previous.is_some());
    assert_eq!(links.unregister(&agent("a"), old), None);
    // The link that stays is the one whose word counts.
    assert_eq!(links.session_use(&agent("a")), SessionUse::Logins);
    assert!(links.unregister(&agent("a"), new).is_some());
    assert_eq!(links.session_use(&agent("a")), SessionUse::Channels);
}

/// Links are ordered by when their connections were accepted, not by when they got through
/// enrolling: a connection the agent gave up on that finishes enrolling after the agent's
/// newer one does not replace it.
#[test]
fn a_link_accepted_before_the_registered_one_is_stale() {
    let links = registry();
    let (commands, _inbox) = mpsc::channel(1);
    let link = |connected_at, session_use| NewLink {
        commands: commands.clone(),
        heartbeat: None,
        session_use,
        cut: Cut::default(),
        connected_at,
    };
    let (newer, _) = links
        .register(&agent("a"), link(2_000, SessionUse::Logins))
        .unwrap();
    assert_eq!(
        links
            .register(&agent("a"), link(1_000, SessionUse::Channels))
            .unwrap_err(),
        NewerLink
    );
    assert_eq!(links.session_use(&agent("a")), SessionUse::Logins);
    assert!(links.unregister(&agent("a"), newer).is_some());
}
