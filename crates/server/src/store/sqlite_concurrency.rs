//! Every write path of the SQLite store raced against other writers on the same pool: none
//! may fail with "database is locked" (a read-then-write in a deferred transaction would,
//! with SQLITE_BUSY_SNAPSHOT, whenever another writer commits between its read and write).

use std::sync::Arc;

use futures::future::join_all;
use postern_protocol::api::Role;
use postern_protocol::{AgentFacts, AgentStatus, SessionId, SessionState};

use postern_protocol::api::EventKind;

use super::{
    Actor, AgentRecord, NewEvent, SessionChange, SessionRecord, SessionStore, SqliteStore, Store,
    StoreResult, TokenRecord, TokenStore, UserRecord, UserStore,
};

const ROUNDS: usize = 60;

async fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    (dir, Arc::new(store))
}

fn token(id: String) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        created_by: "admin".into(),
        created_at: 0,
        expires_at: i64::MAX,
        max_uses: 1,
        uses: 0,
        revoked: false,
    }
}

fn session(i: usize) -> SessionRecord {
    SessionRecord {
        id: SessionId::parse(&format!("{i:032x}")).unwrap(),
        agent_id: "agent".into(),
        user_id: format!("u{i}").into(),
        user_name: "ann".into(),
        state: SessionState::Requested,
        port: None,
        reason: None,
        created_at: 0,
        updated_at: 0,
        ended_at: None,
        node: None,
        shells_kept: false,
    }
}

fn event(id: &SessionId, state: SessionState) -> NewEvent {
    NewEvent {
        time: 0,
        kind: EventKind::SessionState,
        actor: Actor::System,
        agent: None,
        session: Some((id.clone(), state)),
        detail: state.to_string(),
    }
}

/// Runs every future at once and fails on the first error, naming it.
async fn all_ok(what: &str, futures: Vec<futures::future::BoxFuture<'_, StoreResult<()>>>) {
    for result in join_all(futures).await {
        if let Err(e) = result {
            panic!("{what}: {e}");
        }
    }
}

#[tokio::test]
async fn revokes_racing_creates_never_fail() {
    let (_dir, s) = store().await;
    for i in 0..ROUNDS {
        s.insert_token(&token(format!("old{i:04}")), &format!("old-hash{i}"))
            .await
            .unwrap();
    }
    let mut work: Vec<futures::future::BoxFuture<'_, StoreResult<()>>> = Vec::new();
    for i in 0..ROUNDS {
        let s1 = s.clone();
        work.push(Box::pin(async move {
            let revoked = s1.revoke_token(&format!("old{i:04}"), 1).await?;
            assert!(revoked.is_some_and(|t| t.revoked));
            Ok(())
        }));
        let s2 = s.clone();
        work.push(Box::pin(async move {
            s2.insert_token(&token(format!("new{i:04}")), &format!("new-hash{i}"))
                .await
        }));
        let s3 = s.clone();
        work.push(Box::pin(async move {
            let new = crate::store::conformance::agents::agent(
                &format!("new{i:04}"),
                postern_protocol::AgentStatus::Approved,
                "linux",
            );
            let pays = crate::store::TokenPays::NewAgent(&new);
            s3.use_token(&format!("new-hash{i}"), 1, pays)
                .await
                .map(|_| ())
        }));
    }
    all_ok("token writes", work).await;
    let tokens = s.list_tokens().await.unwrap();
    assert_eq!(tokens.len(), 2 * ROUNDS);
    assert!(
        tokens
            .iter()
            .filter(|t| t.id.as_str().starts_with("old"))
            .all(|t| t.revoked)
    );
}

#[tokio::test]
async fn session_writes_racing_each_other_never_fail() {
    let (_dir, s) = store().await;
    s.insert_agent(&AgentRecord {
        id: "agent".into(),
        did: "did:key:z".into(),
        name: "a".into(),
        ssh_public_key: "k".into(),
        status: AgentStatus::Approved,
        facts: AgentFacts::default(),
        enrolled_at: 0,
        last_seen: None,
        remote_addr: None,
    })
    .await
    .unwrap();
    for i in 0..ROUNDS {
        let new = session(i);
        s.insert_session(&new, &event(&new.id, new.state))
            .await
            .unwrap();
    }
    let mut work: Vec<futures::future::BoxFuture<'_, StoreResult<()>>> = Vec::new();
    for i in 0..ROUNDS {
        let s1 = s.clone();
        work.push(Box::pin(async move {
            let id = session(i).id;
            for (from, to, reason) in [
                (SessionState::Requested, SessionState::Starting, None),
                (SessionState::Starting, SessionState::Failed, Some("x")),
            ] {
                let change = SessionChange {
                    id: &id,
                    from,
                    to,
                    reason,
                    port: None,
                    node: None,
                    holder: None,
                    time: 1,
                };
                s1.transition_session(&change, &event(&id, to)).await?;
            }
            Ok(())
        }));
        let s2 = s.clone();
        work.push(Box::pin(async move {
            let s = session(ROUNDS + i);
            s2.insert_session(&s, &event(&s.id, s.state))
                .await
                .map(|_| ())
        }));
    }
    all_ok("session writes", work).await;
    let history = s.session_history(&session(0).id).await.unwrap();
    assert_eq!(history.len(), 3);
}

#[tokio::test]
async fn user_writes_racing_logins_never_fail() {
    let (_dir, s) = store().await;
    for i in 0..ROUNDS {
        s.insert_user(&UserRecord {
            id: format!("u{i}").into(),
            name: format!("user{i}"),
            role: Role::Operator,
            password_hash: "h".into(),
            created_at: 0,
            notifications_read_up_to: 0,
        })
        .await
        .unwrap();
    }
    let mut work: Vec<futures::future::BoxFuture<'_, StoreResult<()>>> = Vec::new();
    for i in 0..ROUNDS {
        let s1 = s.clone();
        work.push(Box::pin(async move {
            s1.set_user_password(&format!("u{i}").into(), "new").await
        }));
        let s2 = s.clone();
        work.push(Box::pin(async move {
            s2.insert_login(
                &format!("login{i}"),
                &format!("u{}", (i + 1) % ROUNDS).into(),
                0,
                10,
            )
            .await
        }));
        let s3 = s.clone();
        work.push(Box::pin(async move {
            s3.set_user_role(&format!("u{i}").into(), Role::Viewer)
                .await
                .map(|_| ())
        }));
    }
    all_ok("user writes", work).await;
}
