//! Password hashing with argon2id, off the async threads (hashing takes tens of milliseconds).
//!
//! Checking a password needs argon2's working memory (19 MiB at the default parameters). A
//! login burst must not multiply it: checks run only in one of a few [`Verifiers`] slots,
//! each with its memory allocated once and reused, and a check that finds every slot busy is
//! refused at once rather than queued.

use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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

/// Every slot is checking another password; try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A fixed number of password checks that may run at once, each with argon2 memory of its
/// own that lives as long as the server: memory stays flat however many logins arrive.
pub struct Verifiers {
    /// Idle slots. A slot's memory is allocated on its first use.
    idle: Arc<Mutex<Vec<Vec<Block>>>>,
}

/// A taken slot; dropping it (wherever the check ends, even if its caller went away or it
/// panicked) hands its memory back.
struct Slot {
    memory: Vec<Block>,
    idle: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let memory = std::mem::take(&mut self.memory);
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(memory);
    }
}

impl Verifiers {
    /// One slot per core (at least 2, at most 4): more parallel checks than cores finish no
    /// sooner, and each slot keeps 19 MiB.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_slots(cores.clamp(2, 4))
    }

    pub fn with_slots(slots: usize) -> Self {
        Self {
            idle: Arc::new(Mutex::new((0..slots).map(|_| Vec::new()).collect())),
        }
    }

    fn take(&self) -> Option<Slot> {
        let memory = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        Some(Slot {
            memory,
            idle: self.idle.clone(),
        })
    }

    /// Checks `password` against a stored hash. With no hash (unknown user) a dummy hash is
    /// checked instead, so that the response time does not reveal which user names exist.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, Busy> {
        let mut slot = self.take().ok_or(Busy)?;
        let checked = tokio::task::spawn_blocking(move || {
            let dummy = dummy_hash();
            let (hash, real) = match &stored {
                Some(h) => (h.as_str(), true),
                None => (dummy, false),
            };
            verify_with(password.as_bytes(), hash, &mut slot.memory) && real
        })
        .await;
        Ok(checked.unwrap_or(false))
    }
}

impl Default for Verifiers {
    fn default() -> Self {
        Self::new()
    }
}

/// argon2's own `verify_password`, but in `memory` (grown to the hash's parameters once).
fn verify_with(password: &[u8], stored: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        &mut out,
        &mut memory[..blocks],
    );
    // `Output`'s equality is constant-time.
    hashed.is_ok() && Output::new(&out).is_ok_and(|out| out == expected)
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify_only_the_right_password() {
        let v = Verifiers::with_slots(1);
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("correct horse"));
        assert_eq!(
            v.verify("correct horse".into(), Some(h.clone())).await,
            Ok(true)
        );
        assert_eq!(v.verify("wrong horse".into(), Some(h)).await, Ok(false));
        assert_eq!(
            v.verify("postern-dummy-password".into(), None).await,
            Ok(false)
        );
        assert_eq!(
            v.verify("x".into(), Some("not a hash".into())).await,
            Ok(false)
        );
    }

    #[tokio::test]
    async fn a_check_beyond_the_slots_is_refused_at_once() {
        let v = Verifiers::with_slots(1);
        let slot = v.take().unwrap();
        assert_eq!(v.verify("x".into(), None).await, Err(Busy));
        drop(slot);
        assert_eq!(v.verify("x".into(), None).await, Ok(false));
    }
}
