//! Password hashing with argon2id, off the async threads (hashing takes tens of milliseconds).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

pub async fn hash(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Checks `password` against a stored hash. With no hash (unknown user) a dummy hash is
/// checked instead, so that the response time does not reveal which user names exist.
pub async fn verify(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let dummy = dummy_hash();
        let (hash, real) = match &stored {
            Some(h) => (h.as_str(), true),
            None => (dummy.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && real
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let salt = SaltString::encode_b64(&[0u8; 16]).map(|s| s.to_string());
            salt.ok()
                .and_then(|s| SaltString::from_b64(&s).ok())
                .and_then(|s| {
                    Argon2::default()
                        .hash_password(b"postern-dummy-password", &s)
                        .ok()
                        .map(|h| h.to_string())
                })
                .unwrap_or_default()
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify_only_the_right_password() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse".into(), Some(h.clone())).await);
        assert!(!verify("wrong horse".into(), Some(h)).await);
        assert!(!verify("postern-dummy-password".into(), None).await);
    }
}
