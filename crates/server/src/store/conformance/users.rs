//! Users: names unique, and never fewer than one administrator, however many demote at once.

use std::sync::Arc;

use futures::future::join_all;
use postern_protocol::api::Role;

use super::{RACERS, user};
use crate::store::{Store, StoreError, UserId};

async fn admins(store: &impl Store) -> usize {
    store
        .list_users()
        .await
        .unwrap()
        .iter()
        .filter(|u| u.role == Role::Admin)
        .count()
}

pub async fn duplicate_names_are_a_conflict<S: Store>(store: Arc<S>) {
    let ann = user(&*store, "u1", Role::Admin).await;
    let mut again = ann.clone();
    again.id = "u2".into();
    assert!(matches!(
        store.insert_user(&again).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.count_users().await.unwrap(), 1);
}

pub async fn the_last_administrator_stays<S: Store>(store: Arc<S>) {
    user(&*store, "a", Role::Admin).await;
    user(&*store, "b", Role::Admin).await;
    user(&*store, "v", Role::Viewer).await;
    assert!(
        store
            .set_user_role(&"a".into(), Role::Operator)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_user_role(&"b".into(), Role::Viewer)
            .await
            .unwrap()
    );
    assert!(!store.delete_user(&"b".into()).await.unwrap());
    assert!(store.set_user_role(&"b".into(), Role::Admin).await.unwrap());
    assert!(store.delete_user(&"v".into()).await.unwrap());
    assert_eq!(admins(&*store).await, 1);
}

/// Administrators demote (or delete) each other all at once: at least one stays, and every
/// refusal is one that was needed.
pub async fn racing_demotions_leave_an_administrator<S: Store>(store: Arc<S>) {
    for round in 0..4 {
        let ids: Vec<UserId> = (0..RACERS)
            .map(|n| UserId::from(format!("r{round}-{n}")))
            .collect();
        for id in &ids {
            user(&*store, id.as_str(), Role::Admin).await;
        }
        // Whoever was admin before this round (the survivor of the last) goes first.
        for u in store.list_users().await.unwrap() {
            if !ids.contains(&u.id) && u.role == Role::Admin {
                assert!(store.set_user_role(&u.id, Role::Viewer).await.unwrap());
            }
        }
        let races = ids.iter().enumerate().map(|(n, id)| {
            let store = store.clone();
            async move {
                if n % 3 == 0 {
                    store.delete_user(id).await.unwrap()
                } else {
                    store.set_user_role(id, Role::Operator).await.unwrap()
                }
            }
        });
        let done = join_all(races).await.into_iter().filter(|d| *d).count();
        assert_eq!(done, RACERS - 1, "one demotion refused, round {round}");
        assert_eq!(admins(&*store).await, 1, "round {round}");
    }
}

pub async fn a_new_password_ends_every_login<S: Store>(store: Arc<S>) {
    user(&*store, "a", Role::Admin).await;
    store
        .insert_login("h1", &"a".into(), 0, i64::MAX)
        .await
        .unwrap();
    store
        .insert_login("h2", &"a".into(), 0, i64::MAX)
        .await
        .unwrap();
    store
        .set_user_password(&"a".into(), "new-hash")
        .await
        .unwrap();
    assert!(store.login("h1").await.unwrap().is_none());
    assert!(store.login("h2").await.unwrap().is_none());
    assert_eq!(
        store
            .user_by_name("user-a")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "new-hash"
    );
}
