//! What the HTTPS tests share: a test CA that issues certificates, TLS clients that trust a
//! given certificate or CA, a look at the certificate a new handshake gets, and `postern
//! server` run as a real process (for SIGHUP, restarts and the printed fingerprint).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{postern, read_until, tunnel_ports};

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    postern_server::tls::provider()
}

/// A CA of the test's own, issuing certificates for 127.0.0.1 and localhost.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// An issued certificate: its chain and key as PEM, and its fingerprint.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: String,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Postern test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn issue(&self) -> Leaf {
        self.issue_with(|_| {})
    }

    /// A certificate valid from the start of one year to the start of another.
    pub fn issue_valid(&self, from: i32, to: i32) -> Leaf {
        self.issue_with(|params| {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        })
    }

    fn issue_with(&self, tweak: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        tweak(&mut params);
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
            fingerprint: postern_server::tls::fingerprint(cert.der()),
        }
    }
}

impl Leaf {
    /// Writes the pair as a renewal tool does: new files renamed over the old ones.
    pub fn install(&self, cert: &Path, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        for (path, text) in [(key, &self.key_pem), (cert, &self.cert_pem)] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }
}

/// A rustls client trusting exactly the certificates (or CAs) in `pem`.
pub fn trusting(pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A reqwest client trusting exactly the certificates (or CAs) in `pem`.
pub fn reqwest_trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls((*trusting(pem)).clone())
        .build()
        .unwrap()
}

/// The fingerprint of the certificate a new handshake with `addr` gets (any certificate is
/// accepted: this only looks).
pub async fn presented(addr: SocketAddr) -> Option<String> {
    let seen = Arc::new(Mutex::new(None));
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Look(seen.clone())))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    seen.lock().unwrap().take()
}

#[derive(Debug)]
struct Look(Arc<Mutex<Option<String>>>);

impl ServerCertVerifier for Look {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(postern_server::tls::fingerprint(end_entity));
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `postern server` as a child process, with what it printed at start.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub url: String,
    pub http_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    pub admin_password: Option<String>,
    pub tls_fingerprint: Option<String>,
    /// The server's log (stderr), line by line.
    pub log: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    pub data_dir: PathBuf,
}

impl ServerProcess {
    /// Starts a server on `data_dir` with `args` (and loopback ports 0 unless given).
    pub async fn start(data_dir: &Path, args: &[&str]) -> Self {
        let ports = tunnel_ports().to_string();
        let mut cmd = postern();
        cmd.arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--tunnel-ports", &ports])
            .args(args);
        if !args.contains(&"--http") {
            cmd.args(["--http", "127.0.0.1:0"]);
        }
        if !args.contains(&"--agent-listen") {
            cmd.args(["--agent-listen", "127.0.0.1:0"]);
        }
        let mut child = cmd.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let log = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = read_until(&mut out, "host key:").await;
        // With HTTPS, the certificate's line follows the host key's.
        if seen.iter().any(|l| l.contains("https://")) {
            seen.extend(read_until(&mut out, "certificate:").await);
        }
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        let field = |key: &str| {
            seen.iter()
                .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
        };
        let url = field("HTTP API:")
            .unwrap()
            .trim_end_matches("/api/v1")
            .to_owned();
        let addr: SocketAddr = url.split("://").nth(1).unwrap().parse().unwrap();
        Self {
            child,
            http_addr: SocketAddr::from(([127, 0, 0, 1], addr.port())),
            agent_addr: field("agent gateway:").unwrap().parse().unwrap(),
            admin_password: field("password:"),
            tls_fingerprint: field("certificate:"),
            url,
            log,
            data_dir: data_dir.to_owned(),
        }
    }

    /// The URL clients use (loopback, whatever address the server bound).
    pub fn client_url(&self) -> String {
        let scheme = self.url.split("://").next().unwrap();
        format!("{scheme}://{}", self.http_addr)
    }

    /// Reads the log until a line contains `needle`.
    pub async fn wait_log(&mut self, needle: &str) -> Vec<String> {
        read_until(&mut self.log, needle).await
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The harness's client for a server it started: plain, or over HTTPS trusting exactly the
/// server's self-signed certificate (from its data dir).
pub fn harness_client(
    server: &postern_server::Server,
    config: &postern_server::ServerConfig,
) -> (&'static str, reqwest::Client) {
    if server.tls_fingerprint.is_none() {
        return ("http", reqwest::Client::new());
    }
    let pem = std::fs::read_to_string(config.data_dir.join(postern_server::tls::SELF_SIGNED_CERT))
        .unwrap();
    ("https", reqwest_trusting(&pem))
}
