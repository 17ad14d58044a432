//! A certificate from PEM files (`--tls-cert`, full chain, and `--tls-key`), reloaded in place
//! when either file changes (polled) or when asked (`Server::reload`, which `postern server`
//! calls on SIGHUP). A pair that does not load — half-written, mismatched, unreadable — is
//! logged and the certificate in use is kept.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{CertResolver, TlsError, io_error, leaf_fingerprint, read_private};

/// How often the files are checked for a change: a stat of two files, cheap at any rate;
/// 5 s puts a renewed certificate in service well before anyone notices, and SIGHUP (what a
/// renewal hook usually sends) loads it at once.
pub const POLL: Duration = Duration::from_secs(5);

/// The two files, as configured.
#[derive(Clone, Debug)]
pub struct Pair {
    cert: PathBuf,
    key: PathBuf,
    /// Mode bits the key file must not have (see `read_private`).
    forbidden: u32,
}

/// What identifies a version of the files without reading them (a rename, as certbot and
/// most tools write, changes the inode; an edit in place changes the time or the size).
type Stamp = Option<[(u64, u64, SystemTime); 2]>;

impl Pair {
    /// An operator's files.
    pub fn new(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert,
            key,
            forbidden: 0o007,
        }
    }

    /// The server's own files in its data dir.
    pub fn own(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert,
            key,
            forbidden: 0o077,
        }
    }

    pub fn paths(&self) -> (&std::path::Path, &std::path::Path) {
        (&self.cert, &self.key)
    }

    fn stamp(&self) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        let one = |path: &PathBuf| {
            let meta = fs::metadata(path).ok()?;
            Some((meta.ino(), meta.len(), meta.modified().ok()?))
        };
        Some([one(&self.cert)?, one(&self.key)?])
    }

    /// Reads and checks the pair: a chain with at least one certificate, and the key that
    /// matches its first.
    pub fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let shown = |p: &PathBuf| p.display().to_string();
        let pem = |p: &PathBuf, reason: String| TlsError::Pem {
            path: shown(p),
            reason,
        };
        let text = fs::read(&self.cert).map_err(io_error(&self.cert))?;
        let chain = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(&self.cert, format!("not a PEM certificate chain ({e})")))?;
        if chain.is_empty() {
            return Err(pem(&self.cert, "no CERTIFICATE in the file".into()));
        }
        let text = read_private(&self.key, self.forbidden)?;
        let key = PrivateKeyDer::from_pem_slice(&text)
            .map_err(|e| pem(&self.key, format!("not a PEM private key ({e})")))?;
        CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
            cert: shown(&self.cert),
            key: shown(&self.key),
            reason: e.to_string(),
        })
    }
}

/// Reloads the pair when the files change or when `asked` is notified, until `stop`. A request
/// made while a load runs is kept (`Notify` stores one permit) and served next.
pub async fn watch(
    pair: Pair,
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    asked: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut seen = pair.stamp();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let asked = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => false,
            _ = asked.notified() => true,
        };
        let now = pair.stamp();
        if !asked && now == seen {
            continue;
        }
        // A failed load is reported once per version of the files, not at every poll.
        seen = now;
        match pair.load(&provider) {
            Ok(key) => {
                let fingerprint = leaf_fingerprint(&key);
                if fingerprint != leaf_fingerprint(&resolver.current()) {
                    resolver.set(Arc::new(key));
                    tracing::info!(%fingerprint, "loaded the new TLS certificate");
                }
            }
            Err(error) => tracing::error!(
                error = %postern_protocol::text::error_chain(&error),
                "the TLS certificate files do not load; still serving the previous certificate"
            ),
        }
    }
}
