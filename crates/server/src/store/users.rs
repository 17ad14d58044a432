//! Users and their logins (API tokens).

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use postern_protocol::api::Role;

use super::{StoreError, StoreResult};
use crate::auth::secret;

/// A user's id (not their name, which may be reused after a deletion).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    /// A fresh id for a new user.
    pub fn random() -> Self {
        Self(secret::new_id())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Ids as stored (tests name users freely; the server makes random ones).
impl From<String> for UserId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for UserId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug)]
pub struct UserRecord {
    pub id: UserId,
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: i64,
    /// The newest event id the user has marked as read in the app's notifications.
    pub notifications_read_up_to: i64,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<()>;
    async fn user_by_name(&self, name: &str) -> StoreResult<Option<UserRecord>>;
    async fn count_users(&self) -> StoreResult<i64>;
    /// Every user, by name.
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>>;
    /// Changes the role; false (and nothing changed) when it would leave no administrator.
    async fn set_user_role(&self, id: &UserId, role: Role) -> StoreResult<bool>;
    /// Replaces the password hash and ends every login of the user.
    async fn set_user_password(&self, id: &UserId, password_hash: &str) -> StoreResult<()>;
    /// Removes the user with their logins (their sessions keep their record); false (and
    /// nothing removed) when it is the last administrator.
    async fn delete_user(&self, id: &UserId) -> StoreResult<bool>;
    async fn set_notifications_read(&self, id: &UserId, up_to: i64) -> StoreResult<()>;

    async fn insert_login(
        &self,
        token_hash: &str,
        user_id: &UserId,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()>;
    /// The user holding this token and when it expires.
    async fn login(&self, token_hash: &str) -> StoreResult<Option<(UserRecord, i64)>>;
    async fn delete_login(&self, token_hash: &str) -> StoreResult<()>;
}

/// A user row as any database returns it.
#[derive(Clone, Debug)]
pub struct UserRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub password_hash: String,
    pub created_at: i64,
    pub notifications_read_up_to: i64,
}

/// The columns of `UserRow`, in its order.
pub const USER_COLUMNS: &str =
    "id, name, role, password_hash, created_at, notifications_read_up_to";

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;

    fn try_from(row: UserRow) -> StoreResult<Self> {
        Ok(UserRecord {
            role: Role::from_str(&row.role)
                .map_err(|e| StoreError::Corrupt(format!("users.role: {e}")))?,
            id: UserId(row.id),
            name: row.name,
            password_hash: row.password_hash,
            created_at: row.created_at,
            notifications_read_up_to: row.notifications_read_up_to,
        })
    }
}
