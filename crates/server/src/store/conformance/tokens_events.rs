//! Enrollment tokens (uses never past the limit) and events (ids in store order, paged).

use std::sync::Arc;

use futures::future::join_all;
use postern_protocol::api::EventKind;

use super::RACERS;
use postern_protocol::AgentStatus;

use super::agents::agent;
use crate::store::{Actor, NewEvent, Store, StoreError, TokenPays, TokenRecord, TokenUse};

fn token(id: &str, expires_at: i64, max_uses: u32) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        created_by: "admin".into(),
        created_at: 0,
        expires_at,
        max_uses,
        uses: 0,
        revoked: false,
    }
}

fn event(n: i64) -> NewEvent {
    NewEvent {
        time: n,
        kind: EventKind::UserLogin,
        actor: Actor::User("ann".into()),
        agent: None,
        session: None,
        detail: format!("e{n}"),
    }
}

/// Presents the token for a new agent of a fresh name; what the store said.
async fn enroll(s: &impl Store, token_hash: &str, now: i64) -> TokenUse {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let new = agent(&format!("new{n}"), AgentStatus::Approved, "linux");
    s.use_token(token_hash, now, TokenPays::NewAgent(&new))
        .await
        .unwrap()
}

/// A use is taken with what it pays for, in one transaction: a new agent stored approved, a
/// waiting agent approved. When that write fails (a name taken meanwhile) or is not needed
/// (the agent was decided meanwhile), no use is taken: a failed enrollment costs nothing.
pub async fn a_token_use_is_taken_only_with_what_it_pays_for<S: Store>(store: Arc<S>) {
    let s = &*store;
    s.insert_token(&token("t1", 1_000, 3), "h1").await.unwrap();
    let uses = || async { s.list_tokens().await.unwrap()[0].uses };
    s.insert_agent(&agent("taken", AgentStatus::Approved, "linux"))
        .await
        .unwrap();
    let clash = agent("taken", AgentStatus::Approved, "linux");
    let clash = crate::store::AgentRecord {
        id: "id-other".into(),
        did: "did:key:z6Mkother".into(),
        ssh_public_key: "ssh-ed25519 other".into(),
        ..clash
    };
    assert!(matches!(
        s.use_token("h1", 10, TokenPays::NewAgent(&clash)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(uses().await, 0, "a failed enrollment takes no use");

    let fresh = agent("fresh", AgentStatus::Approved, "linux");
    let used = s.use_token("h1", 10, TokenPays::NewAgent(&fresh)).await;
    assert_eq!(used.unwrap(), TokenUse::Consumed);
    let stored = s.agent_by_id(&fresh.id).await.unwrap().unwrap();
    assert_eq!((stored.status, uses().await), (AgentStatus::Approved, 1));

    let waiting = agent("waiting", AgentStatus::Pending, "linux");
    s.insert_agent(&waiting).await.unwrap();
    let approval = TokenPays::Approval {
        agent: &waiting.id,
        by: "enrollment-token",
    };
    assert_eq!(
        s.use_token("h1", 10, approval).await.unwrap(),
        TokenUse::Consumed
    );
    let stored = s.agent_by_id(&waiting.id).await.unwrap().unwrap();
    assert_eq!((stored.status, uses().await), (AgentStatus::Approved, 2));
    // Approved already: nothing to pay for, nothing taken.
    assert_eq!(
        s.use_token("h1", 10, approval).await.unwrap(),
        TokenUse::NotNeeded
    );
    assert_eq!(uses().await, 2);
}

pub async fn tokens_say_why_they_are_refused<S: Store>(store: Arc<S>) {
    let s = &*store;
    s.insert_token(&token("t1", 1_000, 2), "h1").await.unwrap();
    assert_eq!(enroll(s, "h1", 10).await, TokenUse::Consumed);
    assert_eq!(enroll(s, "h1", 10).await, TokenUse::Consumed);
    assert_eq!(enroll(s, "h1", 10).await, TokenUse::UsedUp);
    s.insert_token(&token("t2", 1_000, 5), "h2").await.unwrap();
    assert_eq!(enroll(s, "h2", 1_000).await, TokenUse::Expired);
    s.revoke_token("t2", 20).await.unwrap();
    assert_eq!(enroll(s, "h2", 10).await, TokenUse::Revoked);
    assert_eq!(enroll(s, "nope", 10).await, TokenUse::Unknown);
    // A refused use stores nothing of the agent it would have paid for.
    assert_eq!(s.count_agents(AgentStatus::Approved).await.unwrap(), 2);
}

/// A token is revoked by its id or a prefix of it that names one token; the prefix is taken
/// literally (LIKE's `%` and `_` are characters in it), and an empty one names none.
pub async fn a_revocation_prefix_names_one_token_literally<S: Store>(store: Arc<S>) {
    let s = &*store;
    s.insert_token(&token("abc1", 1_000, 2), "h1")
        .await
        .unwrap();
    for wild in ["", "%", "_", "a%", "ab_", "\\"] {
        assert!(
            s.revoke_token(wild, 20).await.unwrap().is_none(),
            "{wild:?} names no token"
        );
    }
    assert_eq!(enroll(s, "h1", 10).await, TokenUse::Consumed);
    s.insert_token(&token("abc2", 1_000, 2), "h2")
        .await
        .unwrap();
    assert!(
        s.revoke_token("abc", 20).await.unwrap().is_none(),
        "two tokens"
    );
    let revoked = s.revoke_token("abc2", 20).await.unwrap().unwrap();
    assert_eq!(revoked.id.to_string(), "abc2");
    assert_eq!(enroll(s, "h1", 10).await, TokenUse::Consumed);
    assert_eq!(enroll(s, "h2", 10).await, TokenUse::Revoked);
}

/// Many enrollments present one token at once: exactly its uses are taken.
pub async fn racing_token_uses_never_exceed_the_limit<S: Store>(store: Arc<S>) {
    let limit = 3;
    store
        .insert_token(&token("t", i64::MAX, limit), "h")
        .await
        .unwrap();
    let uses = (0..RACERS).map(|_| {
        let store = store.clone();
        async move { enroll(&*store, "h", 1).await }
    });
    let outcomes = join_all(uses).await;
    let consumed = outcomes
        .iter()
        .filter(|u| **u == TokenUse::Consumed)
        .count();
    assert_eq!(consumed, limit as usize, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|u| matches!(u, TokenUse::Consumed | TokenUse::UsedUp))
    );
    assert_eq!(store.list_tokens().await.unwrap()[0].uses, limit);
}

/// Events stored at once get distinct ids, and paging after any id finds each once.
pub async fn racing_events_page_each_once_in_id_order<S: Store>(store: Arc<S>) {
    let writes = (0..RACERS as i64).map(|n| {
        let store = store.clone();
        async move { store.insert_events(&[event(n)]).await.unwrap()[0] }
    });
    let mut ids = join_all(writes).await;
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), RACERS);
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events_after(after, 5).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        paged.extend(page.iter().map(|e| e.id));
    }
    assert_eq!(paged, ids);
    let latest: Vec<i64> = store
        .latest_events(2)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(latest, ids[RACERS - 2..]);
    let stored = store.latest_events(1).await.unwrap();
    assert_eq!(stored[0].event.actor, Actor::User("ann".into()));
}

/// A reader that follows the log (`events_after(last)`, as the live stream does) while many
/// writers store events sees every one of them: no event commits with an id below one a
/// reader has already passed.
pub async fn a_reader_following_racing_writers_misses_no_event<S: Store>(store: Arc<S>) {
    const PER_WRITER: i64 = 40;
    let writers: Vec<_> = (0..RACERS as i64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                // In batches of one to four, as a node's event writer stores them.
                let (mut ids, mut next) = (Vec::new(), 0);
                while next < PER_WRITER {
                    let end = (next + 1 + w % 4).min(PER_WRITER);
                    let batch: Vec<_> = (next..end).map(|n| event(w * PER_WRITER + n)).collect();
                    ids.extend(store.insert_events(&batch).await.unwrap());
                    next = end;
                }
                ids
            })
        })
        .collect();
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut seen, mut last) = (Vec::new(), 0);
            loop {
                // Every write has committed before the read that follows; so once that read
                // is empty, the reader has caught up for good.
                let done = writers_done(&*store, RACERS * PER_WRITER as usize).await;
                let page = store.events_after(last, 100).await.unwrap();
                if let Some(newest) = page.last() {
                    last = newest.id;
                }
                seen.extend(page.iter().map(|e| e.id));
                if done && page.is_empty() {
                    break;
                }
            }
            seen
        })
    };
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    let seen = reader.await.unwrap();
    written.sort_unstable();
    let missed: Vec<i64> = written
        .iter()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    assert!(
        missed.is_empty(),
        "committed after the reader passed them: {missed:?}"
    );
    assert_eq!(seen, written);
}

/// Whether all `total` events are stored.
async fn writers_done(store: &impl Store, total: usize) -> bool {
    store.latest_events(u32::MAX).await.unwrap().len() >= total
}
