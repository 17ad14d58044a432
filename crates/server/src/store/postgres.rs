//! The PostgreSQL store, for several nodes on one database. The store traits are the shared
//! ones (`sql_*.rs`); this file holds what is PostgreSQL's own: the pool and its settings,
//! and the locks that keep the invariants under concurrent transactions (read committed):
//! the administrators' rows for a demotion or deletion, and one advisory lock that hands out
//! event ids in commit order.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};

use tokio::sync::broadcast;

use super::agents::{AgentFilter, IdSet};
use super::cluster::{Topic, Wake, Wakeups};
use super::postgres_wakeups::PgWakes;
use super::sql_agents::{Dialect, push_filter};
use super::{StoreError, StoreResult};

/// The connection pool's settings (`database_max_connections`, `database_acquire_timeout`;
/// their defaults and why are in docs/ARCHITECTURE.md, "Storage").
#[derive(Clone, Copy, Debug)]
pub struct PgPoolSettings {
    pub max_connections: u32,
    /// How long a query waits for a free connection (or for a new one to connect) before it
    /// fails as "storage unavailable".
    pub acquire_timeout: Duration,
}

impl Default for PgPoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

pub struct PgStore {
    pub(super) pool: PgPool,
    /// One connection of its own for the node's heartbeat: queued behind the pool's other
    /// work (thousands of agents linking at once), a live node's heartbeat went stale and
    /// other nodes took it over.
    beats: PgPool,
    wakes: PgWakes,
}

/// The advisory lock every event-storing transaction takes (an arbitrary constant: "pstrnevt").
const EVENT_ORDER_LOCK: i64 = 0x7073_7472_6e65_7674;

impl PgStore {
    /// Connects to the PostgreSQL database `url` names (`postgres://user:password@host:port/db`)
    /// and applies migrations (several nodes starting at once apply them once: sqlx holds an
    /// advisory lock while it migrates).
    pub async fn open(url: &str, settings: PgPoolSettings) -> StoreResult<Self> {
        // The URL is not repeated in errors: it may hold a password.
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(format!("the PostgreSQL URL is not valid: {e}")))?;
        let target = format!(
            "{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username()),
        );
        // One connection first, alone: the pool retries a refused connection until its
        // acquire timeout and then reports only "timed out", where this says why (refused,
        // wrong password, no such database).
        let probe = PgConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::Open(format!("PostgreSQL at {target}: {e}")))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Open(format!("PostgreSQL at {target}: {e}")))?;
        let beats = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let wakes = PgWakes::start(&pool).await?;
        Ok(Self { pool, beats, wakes })
    }

    /// Where the node's heartbeat is written (see `beats`).
    pub(super) fn beat_pool(&self) -> &PgPool {
        &self.beats
    }

    /// A read-committed transaction: each statement sees what committed before it started,
    /// and a write to a row another transaction holds waits for it, then re-checks its
    /// condition on the row as that one left it.
    pub(super) async fn write_tx(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Takes every administrator's row until commit, in id order (so that two takers never
    /// wait for each other's rows), so the count that `KEEPS_AN_ADMIN` reads next cannot go
    /// stale: of two demotions of the last two administrators, the second waits for the first
    /// and then counts one left.
    pub(super) async fn lock_admins(
        tx: &mut sqlx::Transaction<'static, Postgres>,
    ) -> StoreResult<()> {
        sqlx::query("SELECT id FROM users WHERE role = 'admin' ORDER BY id FOR UPDATE")
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Takes a use of a valid token and stores the new agent it pays for, in one statement:
    /// the token's row lock (which every enrollment with it waits for: one token may enroll a
    /// whole fleet) is held inside the database only, never across a round trip to a node
    /// that may be starved of CPU. False, with nothing written, when the token is not valid.
    pub(super) async fn take_use_for_new_agent(
        &self,
        token_hash: &str,
        now: i64,
        agent: &super::AgentRecord,
    ) -> StoreResult<bool> {
        use super::rows::{AGENT_COLUMNS, conflict, corrupt};
        use super::tokens::USABLE;
        let facts = serde_json::to_string(&agent.facts).map_err(|e| corrupt("facts", e))?;
        let done = sqlx::query(&format!(
            "WITH used AS (UPDATE enrollment_tokens SET uses = uses + 1 WHERE {USABLE} \
             RETURNING 1) \
             INSERT INTO agents ({AGENT_COLUMNS}) \
             SELECT $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE EXISTS (SELECT 1 FROM used)"
        ))
        .bind(token_hash)
        .bind(now)
        .bind(agent.id.as_str())
        .bind(&agent.did)
        .bind(&agent.name)
        .bind(&agent.ssh_public_key)
        .bind(agent.status.as_str())
        .bind(facts)
        .bind(agent.enrolled_at)
        .bind(agent.last_seen)
        .bind(&agent.remote_addr)
        .execute(&self.pool)
        .await
        .map_err(conflict(&format!("agent {:?}", agent.name)))?;
        Ok(done.rows_affected() == 1)
    }

    /// An identity column hands out ids when rows are inserted, not when they commit: without
    /// this, an event given id 5 could commit after one given 6, and a reader that had
    /// already read past 6 would never see it. Held until commit, the lock makes the
    /// event-storing transactions run one at a time from here on, so ids follow commit order.
    pub(super) async fn lock_event_order(
        tx: &mut sqlx::Transaction<'static, Postgres>,
    ) -> StoreResult<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(EVENT_ORDER_LOCK)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The WHERE clause of `filter`, shared by a page and its count. A set of ids is bound
    /// as one array: one parameter whatever the fleet's size.
    pub(super) fn push_agent_where<'a>(
        qb: &mut QueryBuilder<'a, Postgres>,
        filter: &'a AgentFilter,
    ) -> StoreResult<()> {
        push_filter(qb, filter, &POSTGRES);
        if let Some(ids) = &filter.ids {
            let (op, ids) = match ids {
                IdSet::In(ids) => (" AND id = ANY(", ids),
                IdSet::NotIn(ids) => (" AND NOT id = ANY(", ids),
            };
            let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
            qb.push(op).push_bind(ids).push(")");
        }
        Ok(())
    }
}

/// The facts are JSON text; `->>` reads a field as text. ILIKE folds ASCII case only on the
/// "C" collation of these columns, as SQLite's LIKE does.
const POSTGRES: Dialect = Dialect {
    like: "ILIKE",
    hostname: "(facts::json ->> 'hostname')",
    os: "(facts::json ->> 'os')",
};

super::sql_users::user_store!(PgStore);
super::sql_tokens::token_store!(PgStore, Postgres);
super::sql_throttle::throttle_store!(PgStore);
super::sql_events::event_store!(PgStore, Postgres);
super::sql_sessions::session_store!(PgStore);
super::sql_agents::agent_store!(PgStore, Postgres);
super::sql_cluster::cluster_store!(PgStore);
super::sql_links::link_store!(PgStore);

impl super::WriteCount for PgStore {
    fn rows_written(&self) -> std::collections::BTreeMap<String, u64> {
        std::collections::BTreeMap::new()
    }
}

impl Wakeups for PgStore {
    fn wake(&self, topic: Topic) {
        self.wakes.wake(topic);
    }

    fn wakeups(&self) -> broadcast::Receiver<Wake> {
        self.wakes.subscribe()
    }
}

/// Fresh databases for tests, on the PostgreSQL server `POSTERN_TEST_POSTGRES` names.
#[doc(hidden)]
pub mod testing {
    use sqlx::Connection;
    use sqlx::postgres::PgConnection;

    /// The variable scripts/test sets to its throwaway server's URL.
    pub const VARIABLE: &str = "POSTERN_TEST_POSTGRES";

    /// The test server's URL; `None` (with a notice) when none is given outside CI. Under CI
    /// (`CI` set) a missing server fails the test.
    pub fn server() -> Option<String> {
        let Ok(server) = std::env::var(VARIABLE) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{VARIABLE} is unset under CI: scripts/test starts PostgreSQL and sets it"
            );
            eprintln!("skipped: {VARIABLE} is unset (scripts/test sets it)");
            return None;
        };
        Some(server)
    }

    /// The URL of a new empty database on the test server; `None` (with a notice) when no
    /// server is given outside CI. Under CI (`CI` set) a missing server fails the test.
    pub async fn fresh_database() -> Option<String> {
        let server = server()?;
        let name = format!("t_{}", crate::auth::secret::new_id());
        let mut admin = PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("{VARIABLE}: cannot connect: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database: {e}"));
        let _ = admin.close().await;
        Some(url_of(&server, &name))
    }

    /// `server` with its database replaced by `name` (its query, if any, kept).
    fn url_of(server: &str, name: &str) -> String {
        let (base, query) = match server.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (server, String::new()),
        };
        // The path starts at the first '/' after "scheme://authority".
        let authority_end = base
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| base[start..].find('/').map(|i| start + i))
            .unwrap_or(base.len());
        format!("{}/{name}{query}", &base[..authority_end])
    }
}
