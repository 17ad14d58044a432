//! Which certificate a TLS handshake gets: the current one, swapped in place when a file is
//! reloaded or ACME renews (connections already open keep the session they have), or an ACME
//! TLS-ALPN-01 challenge certificate while the CA validates a name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of ACME's TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
    /// Challenge certificates by domain, present only while an order is being validated.
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    pub fn new(current: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(current),
            challenges: Mutex::new(HashMap::new()),
        }
    }

    /// New handshakes get `key` from now on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_challenge(&self, domain: &str, key: Option<Arc<CertifiedKey>>) {
        let mut challenges = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        match key {
            Some(key) => challenges.insert(domain.to_ascii_lowercase(), key),
            None => challenges.remove(&domain.to_ascii_lowercase()),
        };
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // Only the validation server asks for this protocol; without a pending challenge
            // for the name, the handshake fails (RFC 8737 §3).
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
        }
        Some(self.current())
    }
}
