//! The store conformance suite on PostgreSQL, each case on a fresh database of the server
//! `POSTERN_TEST_POSTGRES` names (scripts/test starts a throwaway cluster and sets it). Without
//! the variable the cases are skipped with a notice, unless `CI` is set: there they fail.

use std::sync::Arc;

use super::PgStore;
use super::conformance::conformance;
use super::postgres::testing::fresh_database;

async fn open() -> Option<((), Arc<PgStore>)> {
    let url = fresh_database().await?;
    let store = PgStore::open(&url, Default::default()).await.unwrap();
    Some(((), Arc::new(store)))
}

conformance! { open();
    agents {
        pages_follow_the_cursor_to_the_end,
        search_covers_name_hostname_os_and_did_prefix,
        status_and_id_sets_filter_in_the_same_query_as_the_page,
        the_tally_counts_statuses_and_agents_with_open_sessions,
        prefixes_resolve_by_range_of_each_index,
    }
    sessions {
        racing_starts_store_one_open_session,
        transitions_are_compare_and_set,
        unfinished_sessions_are_scoped_to_their_node,
    }
    users {
        duplicate_names_are_a_conflict,
        the_last_administrator_stays,
        racing_demotions_leave_an_administrator,
        a_new_password_ends_every_login,
    }
    cluster {
        racing_nodes_get_one_cluster_key,
        nodes_register_and_heartbeat,
        wakeups_reach_this_node,
    }
    links {
        a_link_is_its_latest_nodes_and_only_that_node_changes_it,
        a_restarted_node_clears_only_its_own_links,
        last_seen_is_stored_in_batches,
        racing_survivors_take_a_dead_node_over_once,
    }
    tokens_events {
        tokens_say_why_they_are_refused,
        racing_token_uses_never_exceed_the_limit,
        racing_events_page_each_once_in_id_order,
        a_reader_following_racing_writers_misses_no_event,
    }
    throttle {
        throttle_swaps_compare_the_version,
        racing_throttle_counts_are_never_lost,
    }
}

/// PostgreSQL cannot hold a NUL character in text (SQLite can): a lookup or a write with one
/// is the request's fault, said so, never a storage failure or a 500.
#[tokio::test]
async fn text_with_nul_is_refused_as_the_requests_fault() {
    use crate::store::{AgentFilter, AgentSearch, StoreError, UserStore};
    let Some((_, store)) = open().await else {
        return;
    };
    let refused = |r: Result<(), StoreError>| match r {
        Err(e @ StoreError::Unstorable) => assert!(e.storage_failure().is_none()),
        other => panic!("{other:?}"),
    };
    refused(store.user_by_name("a\0b").await.map(|_| ()));
    let search = AgentFilter {
        search: Some("x\0".into()),
        ..Default::default()
    };
    refused(store.find_agents(&search).await.map(|_| ()));
    let mut user =
        super::conformance::user(&*store, "u1", postern_protocol::api::Role::Viewer).await;
    user.id = "u2".into();
    user.name = "nul\0name".into();
    refused(store.insert_user(&user).await);
}

mod wakeups {
    use std::time::Duration;

    use super::*;
    use crate::store::{Topic, Wake, Wakeups};

    /// How long a test waits for a wake-up that must come (never reached when it works).
    const PATIENCE: Duration = Duration::from_secs(30);

    async fn next(wakes: &mut tokio::sync::broadcast::Receiver<Wake>) -> Wake {
        tokio::time::timeout(PATIENCE, wakes.recv())
            .await
            .expect("a wake-up")
            .unwrap()
    }

    /// Two stores on one database are two nodes: a wake-up on one reaches the other; when the
    /// listening connection is cut, the store listens again and says `Resync`, and wake-ups
    /// reach it again after that.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakeups_reach_other_nodes_and_resync_after_a_lost_connection() {
        let Some(url) = fresh_database().await else {
            return;
        };
        let a = PgStore::open(&url, Default::default()).await.unwrap();
        let b = PgStore::open(&url, Default::default()).await.unwrap();
        let mut on_b = b.wakeups();
        a.wake(Topic::Sessions);
        assert_eq!(next(&mut on_b).await, Wake::Changed(Topic::Sessions));

        let cut: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(&a.pool)
        .await
        .unwrap();
        assert_eq!(cut, 2, "each store listens on one connection");
        assert_eq!(next(&mut on_b).await, Wake::Resync);
        a.wake(Topic::Links);
        assert_eq!(next(&mut on_b).await, Wake::Changed(Topic::Links));
    }
}
