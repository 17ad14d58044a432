//! Users and their logins (API tokens).

use async_trait::async_trait;
use postern_protocol::api::Role;

use super::StoreResult;

#[derive(Clone, Debug)]
pub struct UserRecord {
    pub id: String,
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
    async fn set_user_role(&self, id: &str, role: Role) -> StoreResult<bool>;
    /// Replaces the password hash and ends every login of the user.
    async fn set_user_password(&self, id: &str, password_hash: &str) -> StoreResult<()>;
    /// Removes the user with their logins (their sessions keep their record); false (and
    /// nothing removed) when it is the last administrator.
    async fn delete_user(&self, id: &str) -> StoreResult<bool>;
    async fn set_notifications_read(&self, id: &str, up_to: i64) -> StoreResult<()>;

    async fn insert_login(
        &self,
        token_hash: &str,
        user_id: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()>;
    /// The user holding this token and when it expires.
    async fn login(&self, token_hash: &str) -> StoreResult<Option<(UserRecord, i64)>>;
    async fn delete_login(&self, token_hash: &str) -> StoreResult<()>;
}
