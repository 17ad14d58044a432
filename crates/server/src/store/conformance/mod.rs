//! The store conformance suite: what every store must do, whatever its database, written
//! against the store traits only. `every_case!` lists the cases once; `conformance!` runs each
//! on a fresh store of one implementation (`sqlite_conformance.rs`, `postgres_conformance.rs`).
//! Races run on a multi-threaded runtime: the invariants (one open session per user and agent,
//! the last administrator, token uses, event order, login throttle counts) must hold because
//! the database enforces them, not because one process happens to write one at a time.

pub mod agents;
pub mod cluster;
pub mod links;
pub mod sessions;
pub mod throttle;
pub mod tokens_events;
pub mod users;

use postern_protocol::api::Role;
use postern_protocol::{AgentFacts, AgentStatus};

use super::{AgentRecord, Store, UserRecord};

/// How many tasks race in each race test.
pub const RACERS: usize = 16;

/// Runs the named cases of each module on a fresh store made by `$open` (an async expression
/// giving `Some((guard, Arc<store>))`, the guard living as long as the case; `None` when the
/// database is not there to test, having said so).
macro_rules! conformance {
    ($open:expr; $($module:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $module {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $case() {
                        let Some((_guard, store)) = $open.await else {
                            return;
                        };
                        crate::store::conformance::$module::$case(store).await;
                    }
                )*
            }
        )*
    };
}
pub(crate) use conformance;

/// Every case, on the stores `$open` makes: each backend runs the same list.
macro_rules! every_case {
    ($open:expr) => {
        crate::store::conformance::conformance! { $open;
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
            a_detached_session_stays_the_open_one,
            unfinished_sessions_are_scoped_to_their_node,
            a_change_decided_on_a_node_the_session_left_is_refused,
            shells_kept_marks_the_listed_sessions_of_the_agent_only,
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
            a_late_write_of_an_older_link_leaves_the_newer_links_row,
            a_restarted_node_clears_only_its_own_links,
            last_seen_is_stored_in_batches,
            racing_survivors_take_a_dead_node_over_once,
        }
        tokens_events {
            tokens_say_why_they_are_refused,
            a_token_use_is_taken_only_with_what_it_pays_for,
            a_revocation_prefix_names_one_token_literally,
            racing_token_uses_never_exceed_the_limit,
            racing_events_page_each_once_in_id_order,
            a_reader_following_racing_writers_misses_no_event,
        }
        throttle {
            throttle_swaps_compare_the_version,
            racing_throttle_counts_are_never_lost,
        }
            }
    };
}
pub(crate) use every_case;

pub async fn agent(store: &impl Store, id: &str) -> AgentRecord {
    let agent = AgentRecord {
        id: id.into(),
        did: format!("did:key:z{id}"),
        name: id.into(),
        ssh_public_key: format!("ssh-ed25519 {id}"),
        status: AgentStatus::Approved,
        facts: AgentFacts::default(),
        enrolled_at: 0,
        last_seen: None,
        remote_addr: None,
    };
    store.insert_agent(&agent).await.unwrap();
    agent
}

pub async fn user(store: &impl Store, id: &str, role: Role) -> UserRecord {
    let user = UserRecord {
        id: id.into(),
        name: format!("user-{id}"),
        role,
        password_hash: "x".into(),
        created_at: 0,
        notifications_read_up_to: 0,
    };
    store.insert_user(&user).await.unwrap();
    user
}
