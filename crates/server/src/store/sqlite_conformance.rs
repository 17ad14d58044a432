//! The store conformance suite on SQLite, each case on a fresh store in a temporary directory.

use std::sync::Arc;

use super::SqliteStore;
use super::conformance::conformance;

async fn open() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    (dir, Arc::new(store))
}

conformance! { open();
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
    tokens_events {
        tokens_say_why_they_are_refused,
        racing_token_uses_never_exceed_the_limit,
        racing_events_page_each_once_in_id_order,
    }
}
