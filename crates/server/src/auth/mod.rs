//! Users, passwords, login tokens and the login slow-down.

pub mod password;
pub mod secret;
pub mod throttle;

use std::sync::Arc;

use postern_protocol::api::Role;

use crate::clock::now_ms;
use crate::store::{Store, StoreError, UserRecord};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user names are 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName,
    #[error("passwords must be at least 8 characters")]
    WeakPassword,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
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
    if password.chars().count() < 8 {
        return Err(UserError::WeakPassword);
    }
    let password_hash = password::hash(password.to_owned())
        .await
        .map_err(UserError::Hash)?;
    let user = UserRecord {
        id: secret::new_id(),
        name: name.to_owned(),
        role,
        password_hash,
        created_at: now_ms(),
    };
    store.insert_user(&user).await?;
    Ok(user)
}
