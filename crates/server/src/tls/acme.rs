//! A certificate from an ACME CA (Let's Encrypt by default), validated with TLS-ALPN-01 on the
//! HTTPS listener itself, kept in `DATA_DIR/acme/` (reused on restart) and renewed with a
//! third of its lifetime left. A failed order is retried with a growing delay; the certificate
//! in use (or the self-signed one, before the first) keeps serving meanwhile.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::acme_http::ReqwestHttp;
use super::files::Pair;
use super::{CertResolver, TlsError, Validity, leaf_fingerprint, read_private, write_file};
use crate::config::ServerConfig;

/// First wait after a failed order; it doubles up to [`RETRY_MAX`]. Let's Encrypt allows 5
/// failed validations per name and hour: this spends them over half an hour, not a minute.
const RETRY_MIN: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// How long the CA may take to validate and to issue, each: it takes seconds; a CA slower
/// than this is retried later.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// The account kept between runs, with the directory it belongs to.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

#[derive(Debug, thiserror::Error)]
enum AcmeError {
    #[error(transparent)]
    Acme(#[from] instant_acme::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Refused(String),
}

pub struct Acme {
    domain: String,
    contact: String,
    directory: String,
    ca_cert: Option<PathBuf>,
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl Acme {
    pub fn new(
        config: &ServerConfig,
        domain: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let dir = config.data_dir.join("acme");
        std::fs::create_dir_all(&dir).map_err(super::io_error(&dir))?;
        Ok(Self {
            domain: domain.to_ascii_lowercase(),
            contact: format!(
                "mailto:{}",
                config.acme_contact.as_deref().unwrap_or_default()
            ),
            directory: config.acme_directory.clone(),
            ca_cert: config.acme_ca_cert.clone(),
            dir,
            provider,
        })
    }

    fn pair(&self) -> Pair {
        Pair::own(
            self.dir.join(format!("{}.pem", self.domain)),
            self.dir.join(format!("{}.key.pem", self.domain)),
        )
    }

    /// The certificate kept from an earlier run, if it is still valid.
    pub fn stored(&self) -> Option<Arc<CertifiedKey>> {
        let key = self.pair().load(&self.provider).ok()?;
        let validity = Validity::of(key.cert.first()?).ok()?;
        (validity.not_after > SystemTime::now()).then(|| Arc::new(key))
    }

    /// Keeps a certificate from the CA in service until `stop`.
    pub async fn run(self, resolver: Arc<CertResolver>, stop: CancellationToken) {
        let mut retry = RETRY_MIN;
        loop {
            let due = self.renew_at();
            let wait = due
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            if !wait.is_zero() {
                tracing::info!(domain = %self.domain, renew_in = %humantime::format_duration(wait), "ACME certificate is current");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = self.order(&resolver) => outcome,
            };
            resolver.set_challenge(&self.domain, None);
            match outcome {
                Ok(key) => {
                    retry = RETRY_MIN;
                    tracing::info!(domain = %self.domain, fingerprint = %leaf_fingerprint(&key), "obtained a certificate from the ACME CA");
                    resolver.set(Arc::new(key));
                }
                Err(error) => {
                    tracing::error!(domain = %self.domain, error = %postern_protocol::text::error_chain(&error), retry_in = %humantime::format_duration(retry), "cannot get a certificate from the ACME CA");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        () = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// When the kept certificate is due for renewal (now, if there is none).
    fn renew_at(&self) -> SystemTime {
        self.stored()
            .and_then(|key| Validity::of(key.cert.first()?).ok())
            .map_or(SystemTime::UNIX_EPOCH, |v| v.renew_at())
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let path = self.dir.join("account.json");
        let builder = || -> Result<_, AcmeError> {
            let http = ReqwestHttp::new(self.ca_cert.as_deref())?;
            Ok(Account::builder_with_http(Box::new(http)))
        };
        if let Ok(text) = read_private(&path, 0o077) {
            match serde_json::from_slice::<StoredAccount>(&text) {
                Ok(stored) if stored.directory == self.directory => {
                    return Ok(builder()?.from_credentials(stored.credentials).await?);
                }
                Ok(_) => tracing::info!("the ACME directory changed; registering a new account"),
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "unreadable ACME account; registering a new one")
                }
            }
        }
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &[&self.contact],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory.clone(),
                None,
            )
            .await?;
        let stored = StoredAccount {
            directory: self.directory.clone(),
            credentials,
        };
        let text =
            serde_json::to_vec_pretty(&stored).map_err(|e| AcmeError::Refused(e.to_string()))?;
        write_file(&path, &text, true)?;
        Ok(account)
    }

    /// One order, from the account to the certificate kept on disk.
    async fn order(&self, resolver: &CertResolver) -> Result<CertifiedKey, AcmeError> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(self.domain.clone())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Refused(format!(
                        "the CA holds the authorization for {} as {other:?}",
                        self.domain
                    )));
                }
            }
            let mut challenge = authorization
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or_else(|| {
                    AcmeError::Refused("the CA offers no tls-alpn-01 challenge".into())
                })?;
            let answer = challenge_key(
                &self.domain,
                challenge.key_authorization().digest().as_ref(),
            )?;
            resolver.set_challenge(&self.domain, Some(Arc::new(answer)));
            challenge.set_ready().await?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retries).await?;
        resolver.set_challenge(&self.domain, None);
        if status != OrderStatus::Ready {
            return Err(AcmeError::Refused(format!("the order ended {status:?}")));
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&retries).await?;
        let pair = self.pair();
        let (cert_path, key_path) = pair.paths();
        write_file(key_path, key_pem.as_bytes(), true)?;
        write_file(cert_path, chain_pem.as_bytes(), false)?;
        Ok(pair.load(&self.provider)?)
    }
}

/// The TLS-ALPN-01 answer: a self-signed certificate for the name carrying the digest of the
/// key authorization in the critical acmeIdentifier extension (RFC 8737 §3).
fn challenge_key(domain: &str, digest: &[u8]) -> Result<CertifiedKey, AcmeError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![domain.to_owned()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not `CertifiedKey::from_der`: its check parses the certificate with webpki, which
    // refuses the critical acmeIdentifier extension the validation server looks for.
    let signer = super::provider()
        .key_provider
        .load_private_key(der)
        .map_err(TlsError::from)?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}
