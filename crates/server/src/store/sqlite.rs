//! The embedded SQLite store (WAL mode, one file in the data dir). The store traits are the
//! shared ones (`sql_*.rs`); this file holds what is SQLite's own: opening, how a writing
//! transaction starts, and the locks that SQLite does not need.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use tokio::sync::broadcast;

use super::cluster::{WAKE_BUFFER, Wake};
use super::{StoreResult, WriteCount};

pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// This process's wake-ups (see `Wakeups`).
    pub(super) wakes: broadcast::Sender<Wake>,
    /// Rows this store's connections wrote, by table (see `WriteCount`).
    written: Arc<RowsWritten>,
}

/// Rows inserted, updated or deleted, by table: SQLite's update hook on every connection
/// counts them (a counter bump per row), so that "idle agents write nothing" is measured,
/// not assumed.
#[derive(Default)]
struct RowsWritten(Mutex<BTreeMap<String, u64>>);

impl RowsWritten {
    fn add(&self, table: &str) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(table) {
            Some(n) => *n += 1,
            None => {
                counts.insert(table.to_owned(), 1);
            }
        }
    }
}

impl WriteCount for SqliteStore {
    fn rows_written(&self) -> BTreeMap<String, u64> {
        self.written
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl SqliteStore {
    /// Where the node's heartbeat is written: the one pool (SQLite writes one at a time).
    pub(super) fn beat_pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Opens (creating if needed) `postern.db` in `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> StoreResult<Self> {
        Self::open_file(&data_dir.join(super::STORE_FILE)).await
    }

    /// Opens (creating if needed) the SQLite file at `path` and applies migrations.
    pub async fn open_file(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // The CLI's `admin add-user` may write while a server runs.
            .busy_timeout(Duration::from_secs(5));
        let written = Arc::new(RowsWritten::default());
        let counter = written.clone();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .after_connect(move |connection, _| {
                let counter = counter.clone();
                Box::pin(async move {
                    connection
                        .lock_handle()
                        .await?
                        .set_update_hook(move |change| counter.add(change.table));
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            wakes: broadcast::channel(WAKE_BUFFER).0,
            written,
        })
    }

    /// A transaction that takes the write lock at its start. Every read-then-write goes
    /// through one: a deferred transaction that read first cannot upgrade once another
    /// writer has committed (SQLITE_BUSY_SNAPSHOT, which `busy_timeout` cannot wait out),
    /// while `BEGIN IMMEDIATE` waits its turn under the busy timeout.
    pub(super) async fn write_tx(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Nothing to take: `BEGIN IMMEDIATE` already runs writers one at a time, so the count of
    /// administrators a transaction reads stays true until it commits.
    pub(super) async fn lock_admins(
        _: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    ) -> StoreResult<()> {
        Ok(())
    }

    /// Takes a use of a valid token and stores the new agent it pays for, in one transaction
    /// (writers run one at a time). False, with nothing written, when the token is not valid.
    pub(super) async fn take_use_for_new_agent(
        &self,
        token_hash: &str,
        now: i64,
        agent: &super::AgentRecord,
    ) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        Self::insert_agent_in(&mut tx, agent).await?;
        if !Self::take_use_in(&mut tx, token_hash, now).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Nothing to take: writers run one at a time, so ids are handed out in commit order.
    pub(super) async fn lock_event_order(
        _: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    ) -> StoreResult<()> {
        Ok(())
    }
}

super::sql_users::user_store!(SqliteStore);
super::sql_tokens::token_store!(SqliteStore, sqlx::Sqlite);
super::sql_throttle::throttle_store!(SqliteStore);
super::sql_events::event_store!(SqliteStore, sqlx::Sqlite);
super::sql_sessions::session_store!(SqliteStore);
super::sql_agents::agent_store!(SqliteStore, sqlx::Sqlite);
super::sql_links::link_store!(SqliteStore);
