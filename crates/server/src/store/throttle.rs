//! Login throttling's records: failures and blocks per user name and per source address,
//! shared by every node of the database. The rules live in `auth::throttle`; the store only
//! reads and swaps records, each swap a compare-and-set on the record's version, so nodes
//! racing on one record never lose a count.

use async_trait::async_trait;

use super::StoreResult;

/// What one user name or source address has done lately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginAttempts {
    /// Attempts counted against it (a failure, or an attempt still being checked).
    pub failures: u32,
    /// When the last one was counted (unix ms).
    pub last_failure: i64,
    /// No attempt before this time (unix ms).
    pub blocked_until: Option<i64>,
}

/// A record as stored, with the version a swap must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredAttempts {
    pub attempts: LoginAttempts,
    pub version: i64,
}

#[async_trait]
pub trait LoginThrottleStore: Send + Sync {
    /// The record of `key`, if any.
    async fn login_attempts(&self, key: &str) -> StoreResult<Option<StoredAttempts>>;
    /// Replaces the record of `key` with `new` (`None`: removes it) if it is still the one
    /// read: `seen` is its version, `None` when there was none. False when another writer
    /// changed it first (read it again and retry).
    async fn swap_login_attempts(
        &self,
        key: &str,
        seen: Option<i64>,
        new: Option<LoginAttempts>,
    ) -> StoreResult<bool>;
    /// Removes records with no failure since `before` and no block after it; returns how many.
    async fn forget_login_attempts(&self, before: i64) -> StoreResult<u64>;
}

/// A throttle row as any database returns it.
#[derive(Clone, Copy, Debug)]
pub struct ThrottleRow {
    pub failures: i64,
    pub last_failure: i64,
    pub blocked_until: Option<i64>,
    pub version: i64,
}

impl From<ThrottleRow> for StoredAttempts {
    fn from(row: ThrottleRow) -> Self {
        Self {
            attempts: LoginAttempts {
                // Counts only grow by one per attempt from zero; clamp what cannot be.
                failures: u32::try_from(row.failures.max(0)).unwrap_or(u32::MAX),
                last_failure: row.last_failure,
                blocked_until: row.blocked_until,
            },
            version: row.version,
        }
    }
}
