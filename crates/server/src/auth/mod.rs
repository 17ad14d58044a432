//! Users, passwords, login tokens and the login slow-down.

pub mod login;
pub mod password;
pub mod secret;
pub mod shared_throttle;
pub mod throttle;

use std::sync::Arc;

use postern_protocol::api::Role;

use crate::clock::now_ms;
use crate::sessions::{EndReason, Sessions};
use crate::store::{Actor, Store, StoreError, UserId, UserRecord};

/// Why a user's sessions end without their asking: they lost the right to have them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLost {
    /// The user was deleted.
    Deleted,
    /// The user's new role may not start sessions.
    Demoted,
}

impl AccessLost {
    /// The reason the sessions record.
    pub fn reason(self) -> EndReason {
        match self {
            Self::Deleted => EndReason::UserDeleted,
            Self::Demoted => EndReason::UserDemoted,
        }
    }
}

/// The least role that may hold a session.
const SESSION_ROLE: Role = Role::Operator;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user names are 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName,
    #[error("passwords must be at least 8 characters")]
    WeakPassword,
    #[error("no user {0:?}")]
    NotFound(String),
    #[error("{0} is the last administrator; make another user an administrator first")]
    LastAdmin(String),
    #[error("you cannot delete your own user")]
    SelfDelete,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// The API document states these too (`CreateUserRequest`, `PasswordRequest`); a test in
/// `api::document` keeps the two in step.
pub const MAX_USER_NAME_LEN: usize = 64;
pub const MIN_PASSWORD_CHARS: usize = 8;

pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

async fn hash_password(password: &str) -> Result<String, UserError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserError::WeakPassword);
    }
    password::hash(password.to_owned())
        .await
        .map_err(UserError::Hash)
}

async fn existing(store: &Arc<dyn Store>, name: &str) -> Result<UserRecord, UserError> {
    store
        .user_by_name(name)
        .await?
        .ok_or_else(|| UserError::NotFound(name.to_owned()))
}

/// Creates a user with an argon2id hash of `password`.
pub async fn create_user(
    store: &Arc<dyn Store>,
    name: &str,
    role: Role,
    password: &str,
) -> Result<UserRecord, UserError> {
    if !valid_user_name(name) {
        return Err(UserError::BadName);
    }
    let password_hash = hash_password(password).await?;
    let user = UserRecord {
        id: UserId::random(),
        name: name.to_owned(),
        role,
        password_hash,
        created_at: now_ms(),
        notifications_read_up_to: 0,
    };
    store.insert_user(&user).await?;
    Ok(user)
}

/// Gives `name` a new role; the last administrator keeps theirs. A role that may not hold
/// sessions ends the user's sessions at once.
pub async fn set_role(
    store: &Arc<dyn Store>,
    sessions: &Sessions,
    actor: &UserRecord,
    name: &str,
    role: Role,
) -> Result<UserRecord, UserError> {
    let mut user = existing(store, name).await?;
    if !store.set_user_role(&user.id, role).await? {
        return Err(UserError::LastAdmin(user.name));
    }
    user.role = role;
    if role < SESSION_ROLE {
        sessions
            .end_for_user(&user.id, AccessLost::Demoted.reason(), &Actor::user(actor))
            .await;
    }
    Ok(user)
}

/// Sets a new password; every login of the user ends.
pub async fn reset_password(
    store: &Arc<dyn Store>,
    name: &str,
    password: &str,
) -> Result<UserRecord, UserError> {
    let user = existing(store, name).await?;
    let hash = hash_password(password).await?;
    store.set_user_password(&user.id, &hash).await?;
    Ok(user)
}

/// Removes a user and their logins, and ends their sessions at once; never oneself, never
/// the last administrator.
pub async fn delete_user(
    store: &Arc<dyn Store>,
    sessions: &Sessions,
    actor: &UserRecord,
    name: &str,
) -> Result<UserRecord, UserError> {
    let user = existing(store, name).await?;
    if user.id == actor.id {
        return Err(UserError::SelfDelete);
    }
    if !store.delete_user(&user.id).await? {
        return Err(UserError::LastAdmin(user.name));
    }
    sessions
        .end_for_user(&user.id, AccessLost::Deleted.reason(), &Actor::user(actor))
        .await;
    Ok(user)
}
