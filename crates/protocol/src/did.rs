//! Agent identifiers: `did:key` for an Ed25519 public key
//! (multicodec `ed25519-pub` = 0xed 0x01, base58btc, multibase prefix `z`).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "did:key:z";
const MULTICODEC_ED25519_PUB: [u8; 2] = [0xed, 0x01];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DidError {
    #[error("not a did:key identifier (expected it to start with \"did:key:z\")")]
    NotDidKey,
    #[error("did:key is not valid base58btc")]
    Encoding,
    #[error("did:key does not hold an Ed25519 public key")]
    NotEd25519,
    #[error("did:key holds an invalid Ed25519 public key")]
    InvalidKey,
}

/// The identity of one agent: a `did:key` wrapping its Ed25519 identity public key.
/// Only valid identifiers can be constructed, so holders never re-check.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentDid(String);

impl AgentDid {
    pub fn from_public_key(key: &[u8; 32]) -> Self {
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&MULTICODEC_ED25519_PUB);
        bytes.extend_from_slice(key);
        Self(format!("{PREFIX}{}", bs58::encode(bytes).into_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Ed25519 key this identifier names.
    pub fn verifying_key(&self) -> Result<VerifyingKey, DidError> {
        let bytes = decode(&self.0)?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| DidError::InvalidKey)
    }

    /// A short form for humans: the method prefix dropped, first and last characters kept.
    pub fn short(&self) -> String {
        let body = &self.0[PREFIX.len()..];
        if body.len() <= 12 {
            return body.to_owned();
        }
        format!("{}…{}", &body[..6], &body[body.len() - 4..])
    }
}

fn decode(did: &str) -> Result<[u8; 32], DidError> {
    let body = did.strip_prefix(PREFIX).ok_or(DidError::NotDidKey)?;
    let bytes = bs58::decode(body)
        .into_vec()
        .map_err(|_| DidError::Encoding)?;
    match bytes.split_at_checked(2) {
        Some((codec, key)) if codec == MULTICODEC_ED25519_PUB && key.len() == 32 => {
            let mut out = [0u8; 32];
            out.copy_from_slice(key);
            Ok(out)
        }
        _ => Err(DidError::NotEd25519),
    }
}

impl FromStr for AgentDid {
    type Err = DidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = decode(s)?;
        VerifyingKey::from_bytes(&key).map_err(|_| DidError::InvalidKey)?;
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for AgentDid {
    type Error = DidError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AgentDid> for String {
    fn from(d: AgentDid) -> String {
        d.0
    }
}

impl fmt::Display for AgentDid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentDid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentDid({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_the_did_key_spec_vector() {
        // Test vector from the did:key method specification (Ed25519).
        let did: AgentDid = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
            .parse()
            .unwrap();
        let key = did.verifying_key().unwrap();
        assert_eq!(AgentDid::from_public_key(key.as_bytes()), did);
        assert!(did.as_str().starts_with("did:key:z6Mk"));
    }

    #[test]
    fn rejects_malformed_identifiers() {
        assert_eq!("did:web:x".parse::<AgentDid>(), Err(DidError::NotDidKey));
        assert_eq!("did:key:z0OIl".parse::<AgentDid>(), Err(DidError::Encoding));
        assert_eq!(
            "did:key:z3yr".parse::<AgentDid>(),
            Err(DidError::NotEd25519)
        );
        assert!(serde_json::from_str::<AgentDid>("\"did:key:zzz\"").is_err());
    }

    #[test]
    fn short_form_is_recognisable() {
        let did = AgentDid::from_public_key(&[7u8; 32]);
        let short = did.short();
        assert!(short.chars().count() < 14);
        assert!(did.as_str().contains(&short[..6]));
    }
}
