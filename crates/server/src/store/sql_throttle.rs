//! `LoginThrottleStore` written once for both databases (`throttle_store!` expands it for a
//! store type). Every change names the version it read: a plain `UPDATE … WHERE version = $n`
//! (or an insert that does nothing on conflict, or a conditional delete) succeeds for one
//! writer only, on SQLite (one writer at a time) and on PostgreSQL (a second writer of the
//! row waits for the first, then finds the version changed) alike.

macro_rules! throttle_store {
    ($store:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;
            use $crate::store::StoreResult;
            use $crate::store::throttle::{
                LoginAttempts, LoginThrottleStore, StoredAttempts, ThrottleRow,
            };

            #[async_trait]
            impl LoginThrottleStore for $store {
                async fn login_attempts(&self, key: &str) -> StoreResult<Option<StoredAttempts>> {
                    let row = sqlx::query(
                        "SELECT failures, last_failure, blocked_until, version FROM login_throttle WHERE key = $1",
                    )
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(|row| {
                        Ok(StoredAttempts::from(ThrottleRow {
                            failures: row.try_get("failures")?,
                            last_failure: row.try_get("last_failure")?,
                            blocked_until: row.try_get("blocked_until")?,
                            version: row.try_get("version")?,
                        }))
                    })
                    .transpose()
                }

                async fn swap_login_attempts(
                    &self,
                    key: &str,
                    seen: Option<i64>,
                    new: Option<LoginAttempts>,
                ) -> StoreResult<bool> {
                    let done = match (seen, new) {
                        (None, None) => return Ok(true),
                        (None, Some(new)) => sqlx::query(
                            "INSERT INTO login_throttle (key, failures, last_failure, blocked_until, version) \
                             VALUES ($1, $2, $3, $4, 1) ON CONFLICT (key) DO NOTHING",
                        )
                        .bind(key)
                        .bind(i64::from(new.failures))
                        .bind(new.last_failure)
                        .bind(new.blocked_until)
                        .execute(&self.pool)
                        .await?,
                        (Some(version), Some(new)) => {
                            sqlx::query(
                                "UPDATE login_throttle \
                             SET failures = $1, last_failure = $2, blocked_until = $3, version = version + 1 \
                             WHERE key = $4 AND version = $5",
                            )
                            .bind(i64::from(new.failures))
                            .bind(new.last_failure)
                            .bind(new.blocked_until)
                            .bind(key)
                            .bind(version)
                            .execute(&self.pool)
                            .await?
                        }
                        (Some(version), None) => {
                            sqlx::query("DELETE FROM login_throttle WHERE key = $1 AND version = $2")
                                .bind(key)
                                .bind(version)
                                .execute(&self.pool)
                                .await?
                        }
                    };
                    Ok(done.rows_affected() == 1)
                }

                async fn forget_login_attempts(&self, before: i64) -> StoreResult<u64> {
                    let done = sqlx::query(
                        "DELETE FROM login_throttle \
                         WHERE last_failure < $1 AND (blocked_until IS NULL OR blocked_until < $1)",
                    )
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected())
                }
            }
        };
    };
}
pub(crate) use throttle_store;
