//! The store conformance suite on SQLite, each case on a fresh store in a temporary directory.

use std::sync::Arc;

use super::SqliteStore;
use super::conformance::conformance;

async fn open() -> Option<(tempfile::TempDir, Arc<SqliteStore>)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    Some((dir, Arc::new(store)))
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
