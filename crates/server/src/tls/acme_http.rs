//! instant-acme's requests, sent with reqwest (the one HTTP client in the binary) over rustls
//! with ring, verified against the system's roots — or, with `--acme-ca-cert`, against that
//! CA alone (a private or test CA such as pebble's).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use axum::http::{Request, Response};
use bytes::Bytes;
use instant_acme::{BodyWrapper, BytesBody, BytesResponse, Error, HttpClient};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{TlsError, io_error};

/// Each exchange with the CA is one small JSON document: a CA that takes longer is down.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read (a certificate chain is a few KiB).
const MAX_BODY: usize = 1 << 20;

pub struct ReqwestHttp(reqwest::Client);

impl ReqwestHttp {
    pub fn new(ca_cert: Option<&Path>) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        match ca_cert {
            Some(path) => {
                let pem = std::fs::read(path).map_err(io_error(path))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| TlsError::Pem {
                        path: path.display().to_string(),
                        reason: format!("not a PEM certificate ({e})"),
                    })?;
                    roots.add(cert)?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for error in &found.errors {
                    tracing::warn!(%error, "cannot read some of the system's CA certificates");
                }
                roots.add_parsable_certificates(found.certs);
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| TlsError::Client(e.to_string()))?;
        Ok(Self(client))
    }
}

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        request: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(reqwest::Body::wrap(body))
                .send()
                .await
                .map_err(other)?;
            let mut head = Response::builder().status(response.status());
            if let Some(headers) = head.headers_mut() {
                *headers = response.headers().clone();
            }
            let (parts, ()) = head.body(())?.into_parts();
            let body = response.bytes().await.map_err(other)?;
            if body.len() > MAX_BODY {
                return Err(Error::Str("the ACME server sent an answer over 1 MiB"));
            }
            Ok(BytesResponse {
                parts,
                body: Box::new(Collected(Some(body))),
            })
        })
    }
}

fn other(error: reqwest::Error) -> Error {
    Error::Other(Box::new(error))
}

struct Collected(Option<Bytes>);

#[async_trait::async_trait]
impl BytesBody for Collected {
    async fn into_bytes(
        &mut self,
    ) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.0.take().unwrap_or_default())
    }
}
