//! Who may log in: only OpenSSH user certificates signed by the server's user CA, valid now,
//! naming the requested login, bound to this agent's DID and to the session whose forwarded
//! channel the connection arrived on. russh proves that the client holds the certificate's
//! key; everything else is checked here (russh checks none of it).

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::{Certificate, HashAlg, PublicKey};

use postern_protocol::session::{CERT_AGENT_EXTENSION, CERT_SESSION_EXTENSION};

/// Why a certificate was refused, for the agent's log (the client only learns "denied").
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("not signed by the server's user CA, or not valid at this time")]
    InvalidOrExpired,
    #[error("a host certificate, not a user certificate")]
    NotUser,
    #[error("the certificate does not name login {0:?}")]
    WrongPrincipal(String),
    #[error("the certificate is for another agent ({0:?})")]
    OtherAgent(String),
    #[error("the certificate is not bound to any agent")]
    Unbound,
    #[error("the certificate is for another session ({0:?})")]
    OtherSession(String),
    #[error("the certificate is not bound to any session")]
    NoSession,
    #[error("unsupported critical option {0:?}")]
    CriticalOption(String),
}

/// Where a certificate is presented: on which agent, for which session's channel.
pub struct Presented<'a> {
    pub did: &'a str,
    pub session: &'a str,
}

/// Checks `cert` for a login as `user` at `now` (unix seconds) where it was `presented`.
pub fn check_certificate(
    cert: &Certificate,
    user: &str,
    ca: &PublicKey,
    presented: &Presented<'_>,
    now: u64,
) -> Result<(), Refusal> {
    let did = presented.did;
    let ca_fingerprint = ca.fingerprint(HashAlg::Sha256);
    // Verifies the CA's signature, that the signer is our CA, and the validity window.
    cert.validate_at(now, [&ca_fingerprint])
        .map_err(|_| Refusal::InvalidOrExpired)?;
    if cert.cert_type() != CertType::User {
        return Err(Refusal::NotUser);
    }
    // An empty principal list means "any login" to OpenSSH; our CA never issues one.
    if !cert.valid_principals().iter().any(|p| p == user) {
        return Err(Refusal::WrongPrincipal(user.to_owned()));
    }
    match cert.extensions().get(CERT_AGENT_EXTENSION) {
        Some(bound) if bound == did => {}
        Some(other) => return Err(Refusal::OtherAgent(other.clone())),
        None => return Err(Refusal::Unbound),
    }
    // Another user's certificate for this agent must not open a shell through this tunnel.
    match cert.extensions().get(CERT_SESSION_EXTENSION) {
        Some(bound) if bound == presented.session => {}
        Some(other) => return Err(Refusal::OtherSession(other.clone())),
        None => return Err(Refusal::NoSession),
    }
    // PROTOCOL.certkeys: a server that does not understand a critical option must refuse.
    if let Some(option) = cert.critical_options().keys().next() {
        return Err(Refusal::CriticalOption(option.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::PrivateKey;
    use russh::keys::ssh_key::certificate::Builder;
    use russh::keys::ssh_key::private::Ed25519Keypair;

    const DID: &str = "did:key:z6MkAgentUnderTest";
    const NOW: u64 = 1_800_000_000;
    const SESSION: &str = "0123456789abcdef0123456789abcdef";

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    struct Spec<'a> {
        ca: &'a PrivateKey,
        kind: CertType,
        principal: &'a str,
        agent: Option<&'a str>,
        session: Option<&'a str>,
        from: u64,
        until: u64,
        critical: Option<&'a str>,
    }

    fn spec(ca: &PrivateKey) -> Spec<'_> {
        Spec {
            ca,
            kind: CertType::User,
            principal: "pi",
            agent: Some(DID),
            session: Some(SESSION),
            from: NOW - 30,
            until: NOW + 300,
            critical: None,
        }
    }

    fn sign(s: Spec<'_>) -> Certificate {
        let user = key(9);
        let mut b = Builder::new(
            vec![7; 16],
            user.public_key().key_data().clone(),
            s.from,
            s.until,
        )
        .unwrap();
        b.cert_type(s.kind).unwrap();
        b.valid_principal(s.principal).unwrap();
        if let Some(agent) = s.agent {
            b.extension(CERT_AGENT_EXTENSION, agent).unwrap();
        }
        if let Some(session) = s.session {
            b.extension(CERT_SESSION_EXTENSION, session).unwrap();
        }
        if let Some(option) = s.critical {
            b.critical_option(option, "x").unwrap();
        }
        b.sign(s.ca).unwrap()
    }

    fn check(cert: &Certificate, ca: &PrivateKey) -> Result<(), Refusal> {
        let presented = Presented {
            did: DID,
            session: SESSION,
        };
        check_certificate(cert, "pi", ca.public_key(), &presented, NOW)
    }

    #[test]
    fn a_fresh_certificate_from_our_ca_for_this_agent_and_login_is_accepted() {
        let ca = key(1);
        assert_eq!(check(&sign(spec(&ca)), &ca), Ok(()));
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_refused() {
        let ca = key(1);
        let expired = sign(Spec {
            from: NOW - 600,
            until: NOW - 1,
            ..spec(&ca)
        });
        assert_eq!(check(&expired, &ca), Err(Refusal::InvalidOrExpired));
        let future = sign(Spec {
            from: NOW + 60,
            until: NOW + 300,
            ..spec(&ca)
        });
        assert_eq!(check(&future, &ca), Err(Refusal::InvalidOrExpired));
    }

    #[test]
    fn another_cas_certificate_is_refused() {
        let (ours, theirs) = (key(1), key(2));
        assert_eq!(
            check(&sign(spec(&theirs)), &ours),
            Err(Refusal::InvalidOrExpired)
        );
    }

    #[test]
    fn a_certificate_for_another_agent_or_no_agent_is_refused() {
        let ca = key(1);
        let other = sign(Spec {
            agent: Some("did:key:z6MkSomeoneElse"),
            ..spec(&ca)
        });
        assert_eq!(
            check(&other, &ca),
            Err(Refusal::OtherAgent("did:key:z6MkSomeoneElse".into()))
        );
        let unbound = sign(Spec {
            agent: None,
            ..spec(&ca)
        });
        assert_eq!(check(&unbound, &ca), Err(Refusal::Unbound));
    }

    #[test]
    fn a_certificate_for_another_session_or_no_session_is_refused() {
        let ca = key(1);
        let other = "fedcba9876543210fedcba9876543210";
        let theirs = sign(Spec {
            session: Some(other),
            ..spec(&ca)
        });
        assert_eq!(
            check(&theirs, &ca),
            Err(Refusal::OtherSession(other.into()))
        );
        let unbound = sign(Spec {
            session: None,
            ..spec(&ca)
        });
        assert_eq!(check(&unbound, &ca), Err(Refusal::NoSession));
    }

    #[test]
    fn the_login_must_be_a_principal() {
        let ca = key(1);
        let root = sign(Spec {
            principal: "root",
            ..spec(&ca)
        });
        assert_eq!(check(&root, &ca), Err(Refusal::WrongPrincipal("pi".into())));
    }

    #[test]
    fn host_certificates_and_unknown_critical_options_are_refused() {
        let ca = key(1);
        let host = sign(Spec {
            kind: CertType::Host,
            ..spec(&ca)
        });
        assert_eq!(check(&host, &ca), Err(Refusal::NotUser));
        let forced = sign(Spec {
            critical: Some("force-command"),
            ..spec(&ca)
        });
        assert_eq!(
            check(&forced, &ca),
            Err(Refusal::CriticalOption("force-command".into()))
        );
    }
}
