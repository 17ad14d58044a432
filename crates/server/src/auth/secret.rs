//! Random identifiers and secrets, and how secrets are stored (SHA-256, never in clear).

use sha2::{Digest, Sha256};

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS random source failing is not recoverable for a security product.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

/// A random 128-bit identifier in hex.
pub fn new_id() -> String {
    hex::encode(random_bytes::<16>())
}

/// A random 256-bit secret with a recognisable prefix, e.g. `pst_…` for login tokens.
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(random_bytes::<32>()))
}

/// A password for generated accounts: 20 characters from an unambiguous alphabet.
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    random_bytes::<20>()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// What is stored for a secret: its SHA-256 in hex. Secrets are 256-bit random, so a fast
/// hash suffices (unlike passwords).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_hashes_hide_them() {
        let a = new_secret("pst");
        let b = new_secret("pst");
        assert_ne!(a, b);
        assert!(a.starts_with("pst_") && a.len() == 68);
        assert_ne!(hash_secret(&a), a);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_eq!(new_password().len(), 20);
        assert_eq!(new_id().len(), 32);
    }
}
