//! How the CLI trusts an HTTPS server: the system's CA roots, or what `postern login` pinned —
//! the server's certificate by fingerprint (a self-signed server) or a CA given as a file.
//! A pinned certificate that changes is refused, as OpenSSH refuses a changed host key. Every
//! request and WebSocket of every command goes through the one [`TlsClient`] built here.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

pub use postern_server::tls::fingerprint;

/// What a login trusts beyond the system's roots; kept with the login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Exactly the certificate with this fingerprint (`SHA256:…`).
    Fingerprint(String),
    /// Certificates this CA (PEM) issued for the server's name.
    CaCert(String),
}

impl Trust {
    /// A fingerprint as typed: `SHA256:` and 43 characters of unpadded base64.
    pub fn fingerprint(text: &str) -> Result<Self, String> {
        let digest = text.trim().strip_prefix("SHA256:").unwrap_or_default();
        let ok = digest.len() == 43
            && digest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        if ok {
            Ok(Self::Fingerprint(format!("SHA256:{digest}")))
        } else {
            Err(format!(
                "{:?} is not a certificate fingerprint like SHA256:… (as postern server prints it)",
                crate::output::clip(text)
            ))
        }
    }
}

/// Where the trust a client checks came from: it decides what a refusal says (a changed
/// certificate is alarming; a mistyped `--fingerprint` is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Kept from an earlier login.
    Pinned,
    /// Given on this command line (`--fingerprint`, `--ca-cert`) or just accepted at a prompt.
    Given,
}

/// Why the last handshake's certificate was refused, for a message that says what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No CA the CLI trusts vouches for it (a self-signed server, or a private CA).
    Untrusted { fingerprint: String, reason: String },
    /// It is not the certificate pinned at login.
    Changed { pinned: String, presented: String },
    /// It is not the certificate whose fingerprint was given on the command line.
    Mismatch { given: String, presented: String },
}

/// The rustls configuration for one server, and what its verifier refused last.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<rustls::ClientConfig>,
    refused: Arc<Mutex<Option<Refusal>>>,
}

impl TlsClient {
    pub fn new(trust: Option<&Trust>, origin: Origin) -> anyhow::Result<Self> {
        let provider = postern_server::tls::provider();
        let webpki = match trust {
            Some(Trust::Fingerprint(_)) => None,
            Some(Trust::CaCert(pem)) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(cert?)?;
                }
                Some(roots)
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(found.certs);
                Some(roots)
            }
        }
        .filter(|roots| !roots.is_empty())
        .map(|roots| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()
        })
        .transpose()?;
        let refused = Arc::new(Mutex::new(None));
        let verifier = Verifier {
            pinned: match trust {
                Some(Trust::Fingerprint(f)) => Some(f.clone()),
                _ => None,
            },
            origin,
            webpki,
            provider: provider.clone(),
            refused: refused.clone(),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            refused,
        })
    }

    /// What the verifier refused, if it refused anything.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Debug)]
struct Verifier {
    pinned: Option<String>,
    origin: Origin,
    /// `None` with a pin, or when the system has no roots at all.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    refused: Arc<Mutex<Option<Refusal>>>,
}

impl Verifier {
    fn refuse(&self, refusal: Refusal) -> rustls::Error {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(refusal);
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint(end_entity);
        if let Some(pinned) = &self.pinned {
            // Like an SSH host key: the pin is the identity; names and dates are not checked
            // (a self-signed certificate names the host as it saw itself).
            return if *pinned == presented {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(self.refuse(match self.origin {
                    Origin::Pinned => Refusal::Changed {
                        pinned: pinned.clone(),
                        presented,
                    },
                    Origin::Given => Refusal::Mismatch {
                        given: pinned.clone(),
                        presented,
                    },
                }))
            };
        }
        let Some(webpki) = &self.webpki else {
            return Err(self.refuse(Refusal::Untrusted {
                fingerprint: presented,
                reason: "this system has no CA certificates".into(),
            }));
        };
        webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map_err(|error| {
                self.refuse(Refusal::Untrusted {
                    fingerprint: presented,
                    reason: error.to_string(),
                })
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The message for a refused certificate: what happened, the fingerprints, what to do.
pub fn explain(server: &str, refusal: &Refusal) -> String {
    match refusal {
        Refusal::Changed { pinned, presented } => format!(
            "THE CERTIFICATE OF {server} HAS CHANGED since you logged in.\n\
             Someone could be intercepting the connection (a man-in-the-middle attack), or the \
             server's certificate was replaced.\n  \
             pinned:    {pinned}\n  \
             presented: {presented}\n\
             Nothing was sent. If the server's administrator confirms the new fingerprint (postern \
             server prints it at start), log in again with: postern login --server {server} \
             --fingerprint {presented}"
        ),
        Refusal::Mismatch { given, presented } => format!(
            "the certificate of {server} does not match the fingerprint given.\n  \
             given:     {given}\n  \
             server's:  {presented}\n\
             Nothing was sent. Compare both with the one postern server printed at start; if the \
             server's is that one, log in with: postern login --server {server} --fingerprint \
             {presented}"
        ),
        Refusal::Untrusted {
            fingerprint,
            reason,
        } => format!(
            "the certificate of {server} is not trusted ({reason}); its fingerprint is \
             {fingerprint}. If that is the server's (postern server prints it at start), log in \
             with --fingerprint {fingerprint}, or with --ca-cert FILE for the CA that issued it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_taken_only_in_the_form_the_server_prints() {
        let good = format!("SHA256:{}", "a".repeat(43));
        assert_eq!(
            Trust::fingerprint(&good),
            Ok(Trust::Fingerprint(good.clone()))
        );
        assert_eq!(
            Trust::fingerprint(&format!(" {good}\n")),
            Ok(Trust::Fingerprint(good))
        );
        for bad in [
            "",
            "SHA256:",
            "abc",
            "MD5:aa",
            &format!("SHA256:{}", "a".repeat(42)),
        ] {
            assert!(Trust::fingerprint(bad).is_err(), "{bad}");
        }
    }
}
