//! The self-signed certificate a server serves when no other is configured: made on the first
//! start for the host's name and addresses, then kept in the data dir (key mode 0600) so that
//! its fingerprint — what the CLI pins — never changes. Delete both files to make a new one.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

use super::files::Pair;
use super::{TlsError, io_error, write_file};

pub const CERT_FILE: &str = "https_cert.pem";
pub const KEY_FILE: &str = "https_key.pem";

/// Loads the kept certificate, or makes and keeps one if there is none.
pub fn load_or_create(
    data_dir: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert = data_dir.join(CERT_FILE);
    let key = data_dir.join(KEY_FILE);
    match (cert.exists(), key.exists()) {
        (true, true) => {}
        (false, false) => create(&cert, &key)?,
        // Half a pair is never silently replaced: the other half may be what a CLI pinned.
        (true, false) | (false, true) => {
            let missing = if cert.exists() { &key } else { &cert };
            return Err(io_error(missing)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "half of the self-signed certificate is missing; restore it, or delete the other half to make a new certificate (CLIs that pinned the old one will refuse the new one)",
            )));
        }
    }
    Pair::own(cert, key).load(provider)
}

fn create(cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let host = hostname();
    let mut params = CertificateParams::new(vec![host.clone(), "localhost".to_owned()])?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Postern server {host}"));
    params
        .subject_alt_names
        .extend(addresses().into_iter().map(SanType::IpAddress));
    // ECDSA P-256: every client speaks it, and signing a handshake is cheap.
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_file(key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(cert_path, cert.pem().as_bytes(), false)?;
    tracing::info!(cert = %cert_path.display(), "made a self-signed TLS certificate");
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Every address of the host's interfaces (loopback included), so that a browser or client
/// reaching the server by address finds it named.
fn addresses() -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    if let Ok(interfaces) = nix::ifaddrs::getifaddrs() {
        for interface in interfaces {
            let Some(address) = interface.address else {
                continue;
            };
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = address.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            // Link-local addresses need a zone to be reached; no client names a server by one.
            let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
            if !link_local && !found.contains(&ip) {
                found.push(ip);
            }
        }
    }
    found
}
