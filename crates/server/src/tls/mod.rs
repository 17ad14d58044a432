//! HTTPS for the API and the app (docs/ARCHITECTURE.md, "HTTPS"): which certificate the
//! listener serves — a self-signed one kept in the data dir, a PEM pair from files reloaded in
//! place, or one from an ACME CA renewed before it expires — and the rustls acceptor that
//! serves it. Everything here uses rustls with the ring provider, as russh does.

mod acme;
mod acme_http;
mod files;
mod resolver;
mod self_signed;
mod validity;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
pub use resolver::{ACME_TLS_ALPN, CertResolver};
pub use self_signed::{CERT_FILE as SELF_SIGNED_CERT, KEY_FILE as SELF_SIGNED_KEY};
pub use validity::Validity;

/// The default ACME directory: Let's Encrypt's production CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")]
    Permissions { path: String, mode: u32 },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("the certificate {cert} and the key {key} do not belong together: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("cannot make the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot set up the HTTP client for the ACME CA: {0}")]
    Client(String),
}

/// ring, the provider russh already brings: one crypto library in the binary.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `SHA256:…` (unpadded base64, as OpenSSH writes key fingerprints) of a certificate's DER.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// The HTTPS side of the listener, with the certificate it serves now.
pub struct Https {
    pub acceptor: TlsAcceptor,
    pub resolver: Arc<CertResolver>,
    /// Asks for the certificate files to be read again; `None` without `--tls-cert` (the
    /// self-signed certificate is the server's own, ACME renews on its schedule).
    pub reload_files: Option<Arc<tokio::sync::Notify>>,
}

impl Https {
    /// The fingerprint of the certificate new handshakes get.
    pub fn fingerprint(&self) -> String {
        leaf_fingerprint(&self.resolver.current())
    }
}

pub(crate) fn leaf_fingerprint(key: &CertifiedKey) -> String {
    key.cert.first().map(fingerprint).unwrap_or_default()
}

/// Sets up the certificate the configuration asks for and the tasks that keep it current
/// (file reloads, ACME renewal), which end with `shutdown`.
pub async fn start(
    config: &ServerConfig,
    shutdown: &CancellationToken,
) -> Result<(Https, Vec<JoinHandle<()>>), TlsError> {
    let provider = provider();
    let mut tasks = Vec::new();
    let resolver;
    let mut reload_files = None;
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let pair = files::Pair::new(cert.clone(), key.clone());
        resolver = Arc::new(CertResolver::new(Arc::new(pair.load(&provider)?)));
        let asked = Arc::new(tokio::sync::Notify::new());
        reload_files = Some(asked.clone());
        tasks.push(tokio::spawn(files::watch(
            pair,
            provider.clone(),
            resolver.clone(),
            asked,
            shutdown.clone(),
        )));
    } else if let Some(domain) = &config.acme_domain {
        let acme = acme::Acme::new(config, domain, provider.clone())?;
        // A certificate kept from an earlier run serves at once; until the first one arrives,
        // the self-signed certificate does (the CA validates over this very listener).
        let initial = match acme.stored() {
            Some(key) => key,
            None => Arc::new(self_signed::load_or_create(&config.data_dir, &provider)?),
        };
        resolver = Arc::new(CertResolver::new(initial));
        tasks.push(tokio::spawn(acme.run(resolver.clone(), shutdown.clone())));
    } else {
        let key = self_signed::load_or_create(&config.data_dir, &provider)?;
        resolver = Arc::new(CertResolver::new(Arc::new(key)));
    }
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    // HTTP/1.1 only (the server speaks no HTTP/2); the ACME protocol only when validating.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    if config.acme_domain.is_some() {
        tls.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    Ok((
        Https {
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            resolver,
            reload_files,
        },
        tasks,
    ))
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a private key file, refusing one whose mode has any of the `forbidden` bits (the
/// server's own keys: group and others; an operator's: others, as a key shared with an
/// `ssl-cert` group is common).
fn read_private(path: &Path, forbidden: u32) -> Result<Vec<u8>, TlsError> {
    let meta = fs::metadata(path).map_err(io_error(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & forbidden != 0 {
        return Err(TlsError::Permissions {
            path: path.display().to_string(),
            mode,
        });
    }
    fs::read(path).map_err(io_error(path))
}

/// Writes a file through a temporary name and a rename, so that a crash leaves the old file
/// or the new one, never half of one; `private` files get mode 0600.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(contents).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

/// The TLS settings' own rules, for `ServerConfig::validate`: each message names the setting,
/// its flag and what to do.
pub fn check(config: &ServerConfig) -> Result<(), String> {
    if config.tls_cert.is_some() != config.tls_key.is_some() {
        return Err("tls_cert (--tls-cert, POSTERN_TLS_CERT) and tls_key (--tls-key, POSTERN_TLS_KEY) go together: set both or neither".into());
    }
    let acme = config.acme_domain.is_some();
    if acme && config.tls_cert.is_some() {
        return Err(
            "a certificate from files (--tls-cert) or from ACME (--acme-domain), not both".into(),
        );
    }
    if config.insecure_http && (config.https || config.tls_cert.is_some() || acme) {
        return Err("insecure_http (--insecure-http) turns HTTPS off: it cannot go with --https, --tls-cert or --acme-domain".into());
    }
    if !acme {
        if config.acme_contact.is_some() || config.acme_ca_cert.is_some() {
            return Err("acme_contact and acme_ca_cert (--acme-contact, --acme-ca-cert) need acme_domain (--acme-domain)".into());
        }
        return Ok(());
    }
    let domain = config.acme_domain.as_deref().unwrap_or_default();
    // `localhost` for tests against a local CA (pebble); any real name has a dot.
    let name_ok = domain == "localhost" || (domain.len() <= 253 && domain.contains('.'));
    let chars_ok = domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !name_ok || !chars_ok || domain.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "acme_domain (--acme-domain) must be a DNS name such as postern.example.com; got {domain:?}"
        ));
    }
    match config.acme_contact.as_deref() {
        Some(contact)
            if contact.contains('@')
                && !contact.contains(|c: char| c.is_whitespace() || c == ',') => {}
        Some(contact) => {
            return Err(format!(
                "acme_contact (--acme-contact) must be one e-mail address; got {contact:?}"
            ));
        }
        None => {
            return Err("acme_domain (--acme-domain) needs acme_contact (--acme-contact EMAIL): the CA writes there about expiry and policy".into());
        }
    }
    if !config.acme_directory.starts_with("https://") {
        return Err(format!(
            "acme_directory (--acme-directory) must be an https:// URL; got {:?}",
            config.acme_directory
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(edit: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
        let mut config = ServerConfig::new("/d");
        edit(&mut config);
        config
    }

    #[test]
    fn https_is_on_off_loopback_or_with_a_certificate_and_off_only_when_asked() {
        assert!(!config(|_| {}).serves_https());
        assert!(config(|c| c.http = "0.0.0.0:443".parse().unwrap()).serves_https());
        assert!(config(|c| c.http = "[::]:443".parse().unwrap()).serves_https());
        assert!(config(|c| c.https = true).serves_https());
        assert!(
            config(|c| {
                c.tls_cert = Some("c".into());
                c.tls_key = Some("k".into());
            })
            .serves_https()
        );
        assert!(
            !config(|c| {
                c.http = "0.0.0.0:80".parse().unwrap();
                c.insecure_http = true;
            })
            .serves_https()
        );
    }

    #[test]
    fn contradicting_or_unusable_tls_settings_are_refused() {
        let refused = |edit: fn(&mut ServerConfig), needle: &str| {
            let err = check(&config(edit)).unwrap_err();
            assert!(err.contains(needle), "{err}");
        };
        refused(|c| c.tls_cert = Some("c".into()), "go together");
        refused(
            |c| {
                c.tls_cert = Some("c".into());
                c.tls_key = Some("k".into());
                c.insecure_http = true;
            },
            "insecure_http",
        );
        refused(
            |c| {
                c.tls_cert = Some("c".into());
                c.tls_key = Some("k".into());
                c.acme_domain = Some("a.example".into());
                c.acme_contact = Some("a@example.com".into());
            },
            "not both",
        );
        refused(|c| c.acme_domain = Some("a.example".into()), "acme_contact");
        refused(
            |c| c.acme_contact = Some("a@b.c".into()),
            "need acme_domain",
        );
        for bad in ["1.2.3.4", "a/b.example", "", "nodot", "*.example.com"] {
            let err = check(&config(|c| {
                c.acme_domain = Some(bad.into());
                c.acme_contact = Some("a@example.com".into());
            }))
            .unwrap_err();
            assert!(err.contains("DNS name"), "{bad}: {err}");
        }
        refused(
            |c| {
                c.acme_domain = Some("a.example".into());
                c.acme_contact = Some("not-an-address".into());
            },
            "one e-mail",
        );
        refused(
            |c| {
                c.acme_domain = Some("a.example".into());
                c.acme_contact = Some("a@example.com".into());
                c.acme_directory = "http://ca.example/dir".into();
            },
            "https://",
        );
        let fine = config(|c| {
            c.acme_domain = Some("postern.example.com".into());
            c.acme_contact = Some("ops@example.com".into());
        });
        assert_eq!(check(&fine), Ok(()));
        // A file's `insecure_http` holds off a non-loopback address.
        let resolved: ServerConfig =
            toml::from_str("data_dir = \"/a\"\ninsecure_http = true\nhttp = \"0.0.0.0:80\"")
                .unwrap();
        resolved.validate().unwrap();
        assert!(!resolved.serves_https());
    }
}
