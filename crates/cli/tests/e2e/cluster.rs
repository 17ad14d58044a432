//! Test harness for several server nodes on one database: in-process nodes, each with its own
//! data directory, sharing a PostgreSQL database when `POSTERN_TEST_POSTGRES` names a server
//! (scripts/test starts one), else one SQLite file (no cross-process wake-ups there: other
//! nodes see changes by their poll).

use std::path::Path;

use postern_server::ServerConfig;
use tempfile::TempDir;

use crate::harness::TestServer;

/// The variable naming a PostgreSQL server for tests (`postgres://user@host:port`).
pub const POSTGRES_VAR: &str = "POSTERN_TEST_POSTGRES";

pub struct Cluster {
    /// Holds the shared SQLite file, when that is the database.
    _dir: TempDir,
    /// The URL every node was given (`--database`).
    pub database: String,
    pub nodes: Vec<TestServer>,
}

impl Cluster {
    /// `n` nodes on one new database.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, |_, _| {}).await
    }

    /// `n` nodes on one new database; `tweak` sees each node's index and configuration.
    pub async fn start_with(n: usize, tweak: impl Fn(usize, &mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = shared_database(dir.path()).await;
        let mut nodes: Vec<TestServer> = Vec::with_capacity(n);
        for i in 0..n {
            let node_dir = tempfile::tempdir().unwrap();
            let mut config = TestServer::test_config(&node_dir);
            config.database = Some(database.clone());
            tweak(i, &mut config);
            let admin = nodes.first().map(|first| first.admin_password.clone());
            nodes.push(TestServer::launch(node_dir, config, admin).await);
        }
        Self {
            _dir: dir,
            database,
            nodes,
        }
    }
}

/// A new, empty database for one cluster: a fresh PostgreSQL database on the server
/// `POSTERN_TEST_POSTGRES` names (scripts/test starts one), else a SQLite file in `dir`.
pub async fn shared_database(dir: &Path) -> String {
    if std::env::var_os(POSTGRES_VAR).is_some() {
        postern_server::store::postgres_testing::fresh_database()
            .await
            .expect("a fresh PostgreSQL database")
    } else {
        format!("sqlite://{}", dir.join("cluster.db").display())
    }
}
