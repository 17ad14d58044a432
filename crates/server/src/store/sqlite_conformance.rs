//! The store conformance suite on SQLite, each case on a fresh store in a temporary directory.

use std::sync::Arc;

use super::SqliteStore;
use super::conformance::every_case;

async fn open() -> Option<(tempfile::TempDir, Arc<SqliteStore>)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    Some((dir, Arc::new(store)))
}

every_case!(open());
