//! The signed enrollment an agent presents, and how it is checked.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use serde::{Deserialize, Serialize};

use crate::did::AgentDid;
use crate::facts::AgentFacts;

const DOMAIN: &str = "postern-enroll-v1";

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub did: AgentDid,
    /// The SSH key the agent authenticated its link with, in OpenSSH format.
    pub ssh_public_key: String,
    /// The name the agent asks for; the server picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub facts: AgentFacts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Hex Ed25519 signature by the identity key over [`Enrollment::signed_bytes`].
    pub signature: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnrollmentError {
    #[error("the enrollment signature is not valid hex of 64 bytes")]
    MalformedSignature,
    #[error("the enrollment signature does not verify against the agent's did:key")]
    BadSignature,
    #[error(transparent)]
    Did(#[from] crate::did::DidError),
}

/// What the identity key signs: the server's host-key fingerprint (binding the enrollment to
/// this server), the link's SSH key (binding the identity to the key), the server's nonce
/// (freshness) and the DID itself.
pub fn signed_bytes(
    did: &AgentDid,
    ssh_public_key: &str,
    server_host_key_fingerprint: &str,
    nonce: &str,
) -> Vec<u8> {
    format!("{DOMAIN}\n{did}\n{ssh_public_key}\n{server_host_key_fingerprint}\n{nonce}\n")
        .into_bytes()
}

impl Enrollment {
    /// Signs a new enrollment with the identity key.
    pub fn sign(
        identity: &SigningKey,
        ssh_public_key: String,
        name: Option<String>,
        facts: AgentFacts,
        token: Option<String>,
        server_host_key_fingerprint: &str,
        nonce: &str,
    ) -> Self {
        let did = AgentDid::from_public_key(identity.verifying_key().as_bytes());
        let msg = signed_bytes(&did, &ssh_public_key, server_host_key_fingerprint, nonce);
        let signature = hex_encode(&identity.sign(&msg).to_bytes());
        Enrollment {
            did,
            ssh_public_key,
            name,
            facts,
            token,
            signature,
        }
    }

    pub fn verify(
        &self,
        server_host_key_fingerprint: &str,
        nonce: &str,
    ) -> Result<(), EnrollmentError> {
        let key = self.did.verifying_key()?;
        let raw = hex_decode(&self.signature).ok_or(EnrollmentError::MalformedSignature)?;
        let sig = Signature::from_bytes(&raw);
        let msg = signed_bytes(
            &self.did,
            &self.ssh_public_key,
            server_host_key_fingerprint,
            nonce,
        );
        key.verify(&msg, &sig)
            .map_err(|_| EnrollmentError::BadSignature)
    }
}

// The token is a secret: never print it.
impl fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrollment")
            .field("did", &self.did)
            .field("name", &self.name)
            .field("facts", &self.facts)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<[u8; 64]> {
    if s.len() != 128 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 64];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollment(key: &SigningKey) -> Enrollment {
        Enrollment::sign(
            key,
            "ssh-ed25519 AAAA".into(),
            Some("dev".into()),
            AgentFacts::default(),
            Some("secret-token".into()),
            "SHA256:server",
            "nonce-1",
        )
    }

    #[test]
    fn a_signed_enrollment_verifies_only_for_its_server_and_nonce() {
        let key = SigningKey::from_bytes(&[1u8; 32]);
        let e = enrollment(&key);
        assert_eq!(e.verify("SHA256:server", "nonce-1"), Ok(()));
        assert_eq!(
            e.verify("SHA256:other", "nonce-1"),
            Err(EnrollmentError::BadSignature)
        );
        assert_eq!(
            e.verify("SHA256:server", "nonce-2"),
            Err(EnrollmentError::BadSignature)
        );
    }

    #[test]
    fn tampering_is_detected() {
        let key = SigningKey::from_bytes(&[1u8; 32]);
        let mut e = enrollment(&key);
        e.ssh_public_key = "ssh-ed25519 BBBB".into();
        assert_eq!(
            e.verify("SHA256:server", "nonce-1"),
            Err(EnrollmentError::BadSignature)
        );

        let mut e = enrollment(&key);
        e.did = AgentDid::from_public_key(
            SigningKey::from_bytes(&[2u8; 32])
                .verifying_key()
                .as_bytes(),
        );
        assert_eq!(
            e.verify("SHA256:server", "nonce-1"),
            Err(EnrollmentError::BadSignature)
        );

        let mut e = enrollment(&key);
        e.signature = "zz".into();
        assert_eq!(
            e.verify("SHA256:server", "nonce-1"),
            Err(EnrollmentError::MalformedSignature)
        );
    }

    #[test]
    fn debug_output_hides_the_token() {
        let key = SigningKey::from_bytes(&[1u8; 32]);
        let printed = format!("{:?}", enrollment(&key));
        assert!(!printed.contains("secret-token"));
    }
}
