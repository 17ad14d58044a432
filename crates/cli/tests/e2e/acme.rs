//! ACME for real against Debian's `pebble` test CA (started here, with its own config and
//! free ports): the server gets a certificate over TLS-ALPN-01 on its own HTTPS port, serves
//! it, keeps it across a restart, and renews one that is due before it expires.

use std::path::Path;
use std::process::Stdio;

use rustls::pki_types::ServerName;

use crate::harness::{eventually, free_port};
use crate::tls_support::{ServerProcess, TestCa, presented, reqwest_trusting, trusting};

/// pebble with its HTTPS certificate from `ca`, validating TLS-ALPN-01 on `tls_port`.
struct Pebble {
    _child: tokio::process::Child,
    directory: String,
    management: String,
}

impl Pebble {
    async fn start(dir: &Path, ca: &TestCa, tls_port: u16) -> Self {
        let leaf = ca.issue();
        std::fs::write(dir.join("pebble.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.join("pebble.key"), &leaf.key_pem).unwrap();
        let (listen, management) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("pebble.pem"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let child = tokio::process::Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            // No artificial delays, no nonces refused at random: the test checks issuance,
            // not the client's patience.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "pebble is needed for the ACME test: apt-get install pebble (scripts/test does)",
            );
        let http = reqwest_trusting(&ca.pem);
        let directory = format!("https://127.0.0.1:{listen}/dir");
        eventually("pebble to answer", || async {
            http.get(&directory)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        })
        .await;
        Self {
            _child: child,
            directory,
            management: format!("https://127.0.0.1:{management}"),
        }
    }

    /// pebble's root CA, made at its start.
    async fn root(&self, ca: &TestCa) -> String {
        reqwest_trusting(&ca.pem)
            .get(format!("{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Whether a new handshake for `localhost` gets a certificate pebble's root vouches for.
async fn issued_by(root: &str, addr: std::net::SocketAddr) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    tokio_rustls::TlsConnector::from(trusting(root))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_certificate_from_an_acme_ca_is_served_kept_and_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let port = free_port();
    let pebble = Pebble::start(dir.path(), &ca, port).await;
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    let http = format!("127.0.0.1:{port}");
    let ca_file = dir.path().join("ca.pem");
    let args = [
        "--http",
        &http,
        "--acme-domain",
        "localhost",
        "--acme-contact",
        "admin@example.com",
        "--acme-directory",
        &pebble.directory,
        "--acme-ca-cert",
        ca_file.to_str().unwrap(),
    ];
    let data = dir.path().join("server");
    let server = ServerProcess::start(&data, &args).await;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let root = pebble.root(&ca).await;
    eventually("the certificate from pebble in new handshakes", || async {
        issued_by(&root, server.http_addr).await.then_some(())
    })
    .await;
    let issued = presented(server.http_addr).await.unwrap();
    assert_ne!(Some(issued.clone()), server.tls_fingerprint);
    server.stop().await;

    // Kept in the data dir: the next start serves it at once, with no new order.
    let cert = data.join("acme/localhost.pem");
    let key = data.join("acme/localhost.key.pem");
    assert!(cert.is_file() && key.is_file());
    let server = ServerProcess::start(&data, &args).await;
    assert_eq!(server.tls_fingerprint, Some(issued.clone()));
    server.stop().await;

    // A certificate with less than a third of its life left is renewed before it expires.
    let due = ca.issue_valid(1990, 2030);
    due.install(&cert, &key);
    let server = ServerProcess::start(&data, &args).await;
    assert_eq!(server.tls_fingerprint, Some(due.fingerprint.clone()));
    eventually("the renewed certificate from pebble", || async {
        let now = presented(server.http_addr).await?;
        (now != due.fingerprint && now != issued && issued_by(&root, server.http_addr).await)
            .then_some(())
    })
    .await;
    server.stop().await;
}
