//! The store conformance suite: what every store must do, whatever its database, written
//! against the store traits only. `conformance!` runs each case on a fresh store of one
//! implementation (`sqlite_conformance.rs`, `postgres_conformance.rs`).
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
