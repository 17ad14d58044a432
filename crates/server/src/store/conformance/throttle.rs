//! The login throttle's records: every swap is a compare-and-set, so nodes racing on one
//! record never lose a count.

use std::sync::Arc;

use futures::future::join_all;

use super::RACERS;
use crate::store::{LoginAttempts, Store};

fn attempts(failures: u32, at: i64) -> LoginAttempts {
    LoginAttempts {
        failures,
        last_failure: at,
        blocked_until: (failures > 2).then_some(at + 1_000),
    }
}

pub async fn throttle_swaps_compare_the_version<S: Store>(store: Arc<S>) {
    let s = &*store;
    assert_eq!(s.login_attempts("user:ann").await.unwrap(), None);
    assert!(
        s.swap_login_attempts("user:ann", None, Some(attempts(1, 5)))
            .await
            .unwrap()
    );
    // A second "first" write lost the race: the record exists.
    assert!(
        !s.swap_login_attempts("user:ann", None, Some(attempts(1, 6)))
            .await
            .unwrap()
    );
    let first = s.login_attempts("user:ann").await.unwrap().unwrap();
    assert_eq!(first.attempts, attempts(1, 5));
    assert!(
        s.swap_login_attempts("user:ann", Some(first.version), Some(attempts(3, 7)))
            .await
            .unwrap()
    );
    // The version read before is stale now, for changes and removals alike.
    assert!(
        !s.swap_login_attempts("user:ann", Some(first.version), Some(attempts(9, 8)))
            .await
            .unwrap()
    );
    assert!(
        !s.swap_login_attempts("user:ann", Some(first.version), None)
            .await
            .unwrap()
    );
    let now = s.login_attempts("user:ann").await.unwrap().unwrap();
    assert_eq!(now.attempts, attempts(3, 7));
    assert!(
        s.swap_login_attempts("user:ann", Some(now.version), None)
            .await
            .unwrap()
    );
    assert_eq!(s.login_attempts("user:ann").await.unwrap(), None);

    // Quiet records go; a record still blocked stays until its block ends.
    s.swap_login_attempts("user:old", None, Some(attempts(1, 10)))
        .await
        .unwrap();
    s.swap_login_attempts("user:blocked", None, Some(attempts(3, 10)))
        .await
        .unwrap();
    s.swap_login_attempts("user:new", None, Some(attempts(1, 500)))
        .await
        .unwrap();
    assert_eq!(s.forget_login_attempts(100).await.unwrap(), 1);
    assert_eq!(s.forget_login_attempts(2_000).await.unwrap(), 2);
    assert!(s.login_attempts("user:old").await.unwrap().is_none());
}

pub async fn racing_throttle_counts_are_never_lost<S: Store>(store: Arc<S>) {
    let racers = (0..RACERS).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                let seen = store.login_attempts("source:192.0.2.1").await.unwrap();
                let failures = seen.map_or(0, |s| s.attempts.failures) + 1;
                let swapped = store
                    .swap_login_attempts(
                        "source:192.0.2.1",
                        seen.map(|s| s.version),
                        Some(attempts(failures, 1)),
                    )
                    .await
                    .unwrap();
                if swapped {
                    return;
                }
            }
        })
    });
    for racer in join_all(racers).await {
        racer.unwrap();
    }
    let stored = store
        .login_attempts("source:192.0.2.1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.attempts.failures, RACERS as u32);
}
