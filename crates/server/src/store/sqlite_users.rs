//! UserStore on SQLite.

use std::str::FromStr;

use async_trait::async_trait;
use postern_protocol::api::Role;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::sqlite::{conflict, corrupt};
use super::users::{UserRecord, UserStore};
use super::{SqliteStore, StoreResult};

const COLUMNS: &str = "id, name, role, password_hash, created_at, notifications_read_up_to";
/// Holds for a user row that may stop being an administrator (or go) without leaving the
/// server with none.
const KEEPS_AN_ADMIN: &str =
    "(role <> 'admin' OR (SELECT COUNT(*) FROM users WHERE role = 'admin') > 1)";

fn user_from_row(row: &SqliteRow) -> StoreResult<UserRecord> {
    let role: String = row.try_get("role")?;
    Ok(UserRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::from_str(&role).map_err(|e| corrupt("users.role", e))?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
        notifications_read_up_to: row.try_get("notifications_read_up_to")?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, name, role, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.id)
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
        sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE name = $1"))
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
        sqlx::query(&format!("SELECT {COLUMNS} FROM users ORDER BY name"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn set_user_role(&self, id: &str, role: Role) -> StoreResult<bool> {
        // One statement, so that two administrators demoting each other at once cannot
        // leave none: SQLite runs writes one at a time.
        let done = sqlx::query(&format!(
            "UPDATE users SET role = $1 WHERE id = $2 AND ({KEEPS_AN_ADMIN} OR $1 = 'admin')"
        ))
        .bind(role.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_user_password(&self, id: &str, password_hash: &str) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM logins WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        // Logins go with the user (ON DELETE CASCADE).
        let done = sqlx::query(&format!(
            "DELETE FROM users WHERE id = $1 AND {KEEPS_AN_ADMIN}"
        ))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_notifications_read(&self, id: &str, up_to: i64) -> StoreResult<()> {
        // Only forward: a stale tab cannot unread what another marked.
        sqlx::query(
            "UPDATE users SET notifications_read_up_to = $1 WHERE id = $2 AND notifications_read_up_to < $1",
        )
        .bind(up_to)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_login(
        &self,
        token_hash: &str,
        user_id: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        // Expired logins are cleared here rather than by a timer: logins are rare.
        sqlx::query("DELETE FROM logins WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO logins (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn login(&self, token_hash: &str) -> StoreResult<Option<(UserRecord, i64)>> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role, u.password_hash, u.created_at, u.notifications_read_up_to, \
             l.expires_at FROM logins l JOIN users u ON u.id = l.user_id WHERE l.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some((user_from_row(&row)?, row.try_get("expires_at")?))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        (dir, store)
    }

    fn user(id: &str, name: &str, role: Role) -> UserRecord {
        UserRecord {
            id: id.into(),
            name: name.into(),
            role,
            password_hash: "x".into(),
            created_at: 0,
            notifications_read_up_to: 0,
        }
    }

    #[tokio::test]
    async fn duplicate_user_names_are_a_conflict_not_a_crash() {
        let (_dir, s) = store().await;
        s.insert_user(&user("u1", "ann", Role::Admin))
            .await
            .unwrap();
        assert!(matches!(
            s.insert_user(&user("u2", "ann", Role::Viewer)).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.count_users().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn the_last_administrator_can_be_neither_demoted_nor_deleted() {
        let (_dir, s) = store().await;
        s.insert_user(&user("a", "ann", Role::Admin)).await.unwrap();
        s.insert_user(&user("b", "bob", Role::Admin)).await.unwrap();
        s.insert_user(&user("v", "vic", Role::Viewer))
            .await
            .unwrap();
        assert!(s.set_user_role("a", Role::Operator).await.unwrap());
        assert!(
            !s.set_user_role("b", Role::Viewer).await.unwrap(),
            "bob is the last admin"
        );
        assert!(!s.delete_user("b").await.unwrap());
        assert!(
            s.set_user_role("b", Role::Admin).await.unwrap(),
            "promoting is always fine"
        );
        assert!(s.delete_user("v").await.unwrap());
        let names: Vec<String> = s
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["ann", "bob"]);
    }

    #[tokio::test]
    async fn a_new_password_ends_every_login_of_the_user() {
        let (_dir, s) = store().await;
        s.insert_user(&user("a", "ann", Role::Admin)).await.unwrap();
        s.insert_login("h1", "a", 0, i64::MAX).await.unwrap();
        s.insert_login("h2", "a", 0, i64::MAX).await.unwrap();
        s.set_user_password("a", "new-hash").await.unwrap();
        assert!(s.login("h1").await.unwrap().is_none());
        assert!(s.login("h2").await.unwrap().is_none());
        assert_eq!(
            s.user_by_name("ann").await.unwrap().unwrap().password_hash,
            "new-hash"
        );
    }
}
