//! `UserStore` written once for both databases (`user_store!` expands it for a store type):
//! the same SQL text and row mapping. What differs is how a transaction starts and how the
//! administrators are locked, the store's own `write_tx` and `lock_admins`.

/// Holds for a user row that may stop being an administrator (or go) without leaving the
/// server with none. The count is only right if no other transaction can demote or delete an
/// administrator meanwhile: every use runs after the store's `lock_admins`.
pub const KEEPS_AN_ADMIN: &str =
    "(role <> 'admin' OR (SELECT COUNT(*) FROM users WHERE role = 'admin') > 1)";

macro_rules! user_store {
    ($store:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use postern_protocol::api::Role;
            use $crate::store::rows::{Columns, conflict, user_from_row};
            use $crate::store::sql_users::KEEPS_AN_ADMIN;
            use $crate::store::users::{USER_COLUMNS, UserId, UserRecord, UserStore};
            use $crate::store::StoreResult;

            #[async_trait]
            impl UserStore for $store {
                async fn insert_user(&self, user: &UserRecord) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO users (id, name, role, password_hash, created_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(user.id.as_str())
                    .bind(&user.name)
                    .bind(user.role.as_str())
                    .bind(&user.password_hash)
                    .bind(user.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err(conflict(&format!("user {:?}", user.name)))?;
                    Ok(())
                }

                async fn user_by_name(&self, name: &str) -> StoreResult<Option<UserRecord>> {
                    sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?
                        .as_ref()
                        .map(user_from_row)
                        .transpose()
                }

                async fn count_users(&self) -> StoreResult<i64> {
                    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
                        .fetch_one(&self.pool)
                        .await?)
                }

                async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
                    sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(user_from_row)
                        .collect()
                }

                async fn set_user_role(&self, id: &UserId, role: Role) -> StoreResult<bool> {
                    let mut tx = self.write_tx().await?;
                    Self::lock_admins(&mut tx).await?;
                    let done = sqlx::query(&format!(
                        "UPDATE users SET role = $1 WHERE id = $2 AND ({KEEPS_AN_ADMIN} OR $1 = 'admin')"
                    ))
                    .bind(role.as_str())
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn set_user_password(&self, id: &UserId, password_hash: &str) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                        .bind(password_hash)
                        .bind(id.as_str())
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM logins WHERE user_id = $1")
                        .bind(id.as_str())
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
                    let mut tx = self.write_tx().await?;
                    Self::lock_admins(&mut tx).await?;
                    // Logins go with the user (ON DELETE CASCADE).
                    let done = sqlx::query(&format!(
                        "DELETE FROM users WHERE id = $1 AND {KEEPS_AN_ADMIN}"
                    ))
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn set_notifications_read(&self, id: &UserId, up_to: i64) -> StoreResult<()> {
                    // Only forward: a stale tab cannot unread what another marked.
                    sqlx::query(
                        "UPDATE users SET notifications_read_up_to = $1 \
                         WHERE id = $2 AND notifications_read_up_to < $1",
                    )
                    .bind(up_to)
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn insert_login(
                    &self,
                    token_hash: &str,
                    user_id: &UserId,
                    now: i64,
                    expires_at: i64,
                ) -> StoreResult<()> {
                    // Expired logins are cleared here rather than by a timer: logins are rare.
                    sqlx::query("DELETE FROM logins WHERE expires_at <= $1")
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                    sqlx::query(
                        "INSERT INTO logins (token_hash, user_id, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(token_hash)
                    .bind(user_id.as_str())
                    .bind(now)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn login(&self, token_hash: &str) -> StoreResult<Option<(UserRecord, i64)>> {
                    let row = sqlx::query(
                        "SELECT u.id, u.name, u.role, u.password_hash, u.created_at, \
                         u.notifications_read_up_to, l.expires_at \
                         FROM logins l JOIN users u ON u.id = l.user_id WHERE l.token_hash = $1",
                    )
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(row) => Ok(Some((user_from_row(&row)?, row.int("expires_at")?))),
                        None => Ok(None),
                    }
                }

                async fn delete_login(&self, token_hash: &str) -> StoreResult<()> {
                    sqlx::query("DELETE FROM logins WHERE token_hash = $1")
                        .bind(token_hash)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }
            }
        };
    };
}
pub(crate) use user_store;
