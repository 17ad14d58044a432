//! Finding agents: pages, the search, filters, the tally and references resolved by prefix,
//! each database with its own SQL for the search (JSON, case) and the same answers.

use std::sync::Arc;

use postern_protocol::api::EventKind;
use postern_protocol::{AgentFacts, AgentId, AgentStatus, SessionId, SessionState};

use crate::store::{
    Actor, AgentFilter, AgentPage, AgentRecord, AgentTally, IdSet, PrefixMatch, SessionInsert,
    SessionRecord, Store,
};

pub fn agent(name: &str, status: AgentStatus, os: &str) -> AgentRecord {
    AgentRecord {
        id: format!("id-{name}").into(),
        did: format!("did:key:z6Mk{name}"),
        name: name.into(),
        ssh_public_key: format!("ssh-ed25519 {name}"),
        status,
        facts: AgentFacts {
            hostname: format!("host-{name}"),
            os: os.into(),
            ..AgentFacts::default()
        },
        enrolled_at: 0,
        last_seen: None,
        remote_addr: None,
    }
}

/// 25 agents, every fifth pending; ten on Debian, the rest on Alpine.
pub async fn fleet(store: &impl Store) {
    for i in 0..25 {
        let status = if i % 5 == 0 {
            AgentStatus::Pending
        } else {
            AgentStatus::Approved
        };
        let os = if i < 10 { "Debian 12" } else { "Alpine" };
        store
            .insert_agent(&agent(&format!("edge-{i:02}"), status, os))
            .await
            .unwrap();
    }
}

fn names(page: &AgentPage) -> Vec<&str> {
    page.agents.iter().map(|a| a.name.as_str()).collect()
}

pub async fn pages_follow_the_cursor_to_the_end<S: Store>(store: Arc<S>) {
    fleet(&*store).await;
    let store = &*store;
    let mut filter = AgentFilter {
        limit: Some(10),
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.find_agents(&filter).await.unwrap();
        assert_eq!(page.total, 25);
        seen.extend(names(&page).into_iter().map(str::to_owned));
        match page.next {
            Some(next) => filter.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let all = store.find_agents(&AgentFilter::default()).await.unwrap();
    assert_eq!((all.agents.len(), all.next), (25, None));
}

pub async fn search_covers_name_hostname_os_and_did_prefix<S: Store>(store: Arc<S>) {
    fleet(&*store).await;
    let store = &*store;
    let search = |s: &str| {
        let filter = AgentFilter {
            search: Some(s.into()),
            ..Default::default()
        };
        let store = &store;
        async move { store.find_agents(&filter).await.unwrap() }
    };
    assert_eq!(names(&search("EDGE-03").await), ["edge-03"]);
    assert_eq!(names(&search("host-edge-04").await), ["edge-04"]);
    assert_eq!(search("alpine").await.total, 15);
    assert_eq!(names(&search("z6Mkedge-07").await), ["edge-07"]);
    assert_eq!(names(&search("did:key:z6Mkedge-08").await), ["edge-08"]);
    // The DID matches by prefix only: its middle is noise.
    assert_eq!(search("kedge-0").await.total, 0);
    // LIKE's wildcards are plain characters in a search.
    assert_eq!(search("edge_0").await.total, 0);
    assert_eq!(search("%").await.total, 0);
    assert_eq!(search("  ").await.total, 25, "blank is no search");
    // A character JSON escapes in the stored facts is still found.
    let mut odd = agent("odd", AgentStatus::Approved, "Alpine");
    odd.facts.hostname = r#"lab"7\b"#.into();
    store.insert_agent(&odd).await.unwrap();
    assert_eq!(names(&search(r#"b"7\"#).await), ["odd"]);
}

pub async fn status_and_id_sets_filter_in_the_same_query_as_the_page<S: Store>(store: Arc<S>) {
    fleet(&*store).await;
    let store = &*store;
    let online: Vec<AgentId> = ["01", "11", "21", "15"]
        .iter()
        .map(|i| AgentId::from(format!("id-edge-{i}")))
        .collect();
    let find = |filter: AgentFilter| {
        let store = &store;
        async move { store.find_agents(&filter).await.unwrap() }
    };
    let page = find(AgentFilter {
        status: Some(AgentStatus::Pending),
        ..Default::default()
    })
    .await;
    assert_eq!(page.total, 5);
    // A page of connected pending agents is full and its total exact, though most
    // agents are neither.
    let page = find(AgentFilter {
        ids: Some(IdSet::In(online.clone())),
        limit: Some(2),
        ..Default::default()
    })
    .await;
    assert_eq!(names(&page), ["edge-01", "edge-11"]);
    assert_eq!((page.total, page.next.as_deref()), (4, Some("edge-11")));
    let page = find(AgentFilter {
        ids: Some(IdSet::In(online.clone())),
        status: Some(AgentStatus::Pending),
        ..Default::default()
    })
    .await;
    assert_eq!(names(&page), ["edge-15"]);
    let page = find(AgentFilter {
        ids: Some(IdSet::NotIn(online)),
        limit: Some(0),
        ..Default::default()
    })
    .await;
    assert_eq!(
        (page.total, page.agents.len()),
        (21, 1),
        "a limit of 0 still returns one"
    );
    let none = find(AgentFilter {
        ids: Some(IdSet::In(Vec::new())),
        ..Default::default()
    })
    .await;
    assert_eq!(none.total, 0);
}

pub async fn the_tally_counts_statuses_and_agents_with_open_sessions<S: Store>(store: Arc<S>) {
    fleet(&*store).await;
    let store = &*store;
    store
        .set_agent_status(&"id-edge-01".into(), AgentStatus::Revoked, "admin", 1)
        .await
        .unwrap();
    // Two open sessions on one agent count it once; an ended one does not count.
    for (i, agent, state) in [
        (1, "id-edge-02", SessionState::Running),
        (2, "id-edge-02", SessionState::Requested),
        (3, "id-edge-03", SessionState::Stopped),
    ] {
        // One open session per user and agent: a user each.
        let session = SessionRecord {
            id: SessionId::parse(&format!("{i:032x}")).unwrap(),
            agent_id: agent.into(),
            user_id: format!("u{i}").into(),
            user_name: "ann".into(),
            state,
            port: None,
            reason: None,
            created_at: 0,
            updated_at: 0,
            ended_at: None,
            node: None,
            shells_kept: false,
        };
        let event = crate::events::new_event(
            EventKind::SessionState,
            &Actor::System,
            None,
            Some((session.id.clone(), state)),
            "",
        );
        let inserted = store.insert_session(&session, &event).await.unwrap();
        assert!(matches!(inserted, SessionInsert::Inserted { .. }));
    }
    let tally = store.agent_tally().await.unwrap();
    assert_eq!(
        tally,
        AgentTally {
            pending: 5,
            approved: 19,
            rejected: 0,
            revoked: 1,
            with_sessions: 1,
        }
    );
}

pub async fn prefixes_resolve_by_range_of_each_index<S: Store>(store: Arc<S>) {
    fleet(&*store).await;
    let store = &*store;
    // A prefix's range ends where the prefix stops matching, in each index.
    let found = |prefix: &str| {
        let store = &store;
        let prefix = prefix.to_owned();
        async move {
            match store.agents_by_prefix(&prefix).await.unwrap() {
                PrefixMatch::None => vec![],
                PrefixMatch::One(one) => vec![one.name],
                PrefixMatch::Many(names) => names,
            }
        }
    };
    assert_eq!(found("edge-1").await.len(), 10);
    assert_eq!(found("edge-19").await, ["edge-19"]);
    assert_eq!(found("edge-1~").await, Vec::<String>::new());
    assert_eq!(found("z6Mkedge-2").await.len(), 5);
    assert_eq!(found("did:key:z6Mkedge-24").await, ["edge-24"]);
    assert_eq!(found("Edge").await, Vec::<String>::new(), "case-sensitive");
    assert_eq!(found("edge_").await, Vec::<String>::new(), "no wildcards");
}
