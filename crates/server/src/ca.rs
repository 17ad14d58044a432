//! The user certificate authority: short-lived OpenSSH user certificates that bind a user's
//! key to one login on one agent, within one session.

use std::time::Duration;

use postern_protocol::SessionId;
use postern_protocol::session::{CERT_AGENT_EXTENSION, CERT_SESSION_EXTENSION};
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::{Certificate, PrivateKey, PublicKey};

/// Longest validity the CA grants.
pub const MAX_VALIDITY: Duration = Duration::from_secs(5 * 60);
/// Tolerance for clocks slightly behind ours.
const BACKDATE: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot sign the certificate: {0}")]
    Sign(String),
}

pub struct UserCa {
    key: PrivateKey,
}

/// What a certificate is for.
pub struct CertificateFor<'a> {
    pub subject: &'a PublicKey,
    pub login: &'a str,
    pub agent_did: &'a str,
    /// The session whose tunnel alone may carry the certificate: the agent refuses it on
    /// any other session's channels (another user's on the same agent included).
    pub session: &'a SessionId,
    /// Names the user and the session, for the agent's log.
    pub key_id: String,
}

impl UserCa {
    pub fn new(key: PrivateKey) -> Self {
        Self { key }
    }

    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// Signs a user certificate valid from (almost) now for at most five minutes.
    pub fn sign(&self, what: CertificateFor<'_>, now_secs: u64) -> Result<Certificate, CaError> {
        let err = |e: russh::keys::ssh_key::Error| CaError::Sign(e.to_string());
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| CaError::Sign(e.to_string()))?;
        let mut builder = Builder::new(
            nonce.to_vec(),
            what.subject.key_data().clone(),
            now_secs.saturating_sub(BACKDATE),
            now_secs + MAX_VALIDITY.as_secs(),
        )
        .map_err(err)?;
        builder.cert_type(CertType::User).map_err(err)?;
        builder.key_id(what.key_id).map_err(err)?;
        builder.valid_principal(what.login).map_err(err)?;
        builder
            .extension(CERT_AGENT_EXTENSION, what.agent_did)
            .map_err(err)?;
        builder
            .extension(CERT_SESSION_EXTENSION, what.session.as_str())
            .map_err(err)?;
        // The usual OpenSSH permissions, so stock clients get a PTY.
        for ext in ["permit-pty", "permit-user-rc"] {
            builder.extension(ext, "").map_err(err)?;
        }
        builder.sign(&self.key).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::private::Ed25519Keypair;

    #[test]
    fn certificates_are_short_lived_and_bound_to_login_agent_and_session() {
        let ca = UserCa::new(PrivateKey::from(Ed25519Keypair::from_seed(&[1; 32])));
        let user = PrivateKey::from(Ed25519Keypair::from_seed(&[2; 32]));
        let session = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let cert = ca
            .sign(
                CertificateFor {
                    subject: user.public_key(),
                    login: "pi",
                    agent_did: "did:key:z6Mkexample",
                    session: &session,
                    key_id: "ann session 1".into(),
                },
                1_000_000,
            )
            .unwrap();
        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.valid_principals(), ["pi".to_owned()]);
        assert!(cert.valid_before() - cert.valid_after() <= MAX_VALIDITY.as_secs() + BACKDATE);
        assert_eq!(
            cert.extensions()
                .get(CERT_AGENT_EXTENSION)
                .map(String::as_str),
            Some("did:key:z6Mkexample")
        );
        assert_eq!(
            cert.extensions()
                .get(CERT_SESSION_EXTENSION)
                .map(String::as_str),
            Some(session.as_str())
        );
        // An extension, not a critical option: a device's own sshd would refuse those.
        assert!(cert.critical_options().is_empty());
        let fp = ca.public_key().fingerprint(russh::keys::HashAlg::Sha256);
        assert!(cert.validate_at(1_000_010, [&fp]).is_ok());
        assert!(cert.validate_at(1_000_000 + 301, [&fp]).is_err());
    }
}
