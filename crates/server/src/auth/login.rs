//! Password login, the use case: the throttle takes the attempt, a verifier slot checks the
//! password, and a right one gets a login token.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_protocol::api::EventKind;

use std::sync::atomic::{AtomicI64, Ordering};

use super::password::Verifiers;
use super::secret;
use super::shared_throttle::SharedThrottle;
use super::throttle::LoginThrottle;
use crate::clock::now_ms;
use crate::events::EventBus;
use crate::metrics::{LoginResult, Metrics};
use crate::store::{Actor, Store, StoreError, UserRecord};

/// How long a client refused for lack of a verifier slot is told to wait: a check takes
/// tens of milliseconds, so a slot is free again well within it.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

/// How often a node clears the shared throttle's quiet records (on a login attempt, never
/// while idle): they are forgotten after an hour anyway, so a tenth of that keeps the table
/// near what the last hour's guessing left.
const FORGET_EVERY_MS: i64 = 6 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("too many failed logins; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    #[error("the server is busy checking other logins; try again in {} s", BUSY_RETRY.as_secs())]
    Busy,
    #[error("wrong user name or password")]
    BadCredentials,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A successful login.
pub struct LoggedIn {
    pub user: UserRecord,
    /// The bearer token, shown once; only its hash is stored.
    pub token: String,
    pub expires_at: i64,
}

pub struct Logins {
    store: Arc<dyn Store>,
    events: Arc<EventBus>,
    /// This node's: refuses a burst here without asking the database.
    throttle: LoginThrottle,
    /// Every node's: a guesser spreading attempts over nodes is held back the same.
    shared: SharedThrottle,
    /// When this node last cleared the shared throttle's quiet records (unix ms).
    forgotten_at: AtomicI64,
    verifiers: Verifiers,
    ttl: Duration,
    metrics: Metrics,
}

impl Logins {
    pub fn new(
        store: Arc<dyn Store>,
        events: Arc<EventBus>,
        ttl: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            shared: SharedThrottle::new(store.clone()),
            forgotten_at: AtomicI64::new(0),
            store,
            events,
            throttle: LoginThrottle::default(),
            verifiers: Verifiers::new(),
            ttl,
            metrics,
        }
    }

    /// How long a login token stays valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Logs `name` in with `password`, from `source`.
    pub async fn login(
        &self,
        name: &str,
        password: String,
        source: Option<IpAddr>,
    ) -> Result<LoggedIn, LoginError> {
        let attempt = self.attempt(name, password, source).await;
        self.metrics.login(match &attempt {
            Ok(_) => LoginResult::Success,
            Err(LoginError::BadCredentials) => LoginResult::Failure,
            Err(LoginError::Throttled(_)) => LoginResult::Throttled,
            Err(LoginError::Busy) => LoginResult::Busy,
            Err(LoginError::Store(_)) => LoginResult::Error,
        });
        attempt
    }

    async fn attempt(
        &self,
        name: &str,
        password: String,
        source: Option<IpAddr>,
    ) -> Result<LoggedIn, LoginError> {
        let name: String = name.chars().take(64).collect();
        self.throttle
            .begin(&name, source)
            .map_err(LoginError::Throttled)?;
        let now = now_ms();
        match self.shared.begin(&name, source, now).await {
            Ok(Ok(())) => {}
            Ok(Err(wait)) => {
                self.throttle.cancel(&name, source);
                return Err(LoginError::Throttled(wait));
            }
            Err(e) => {
                self.throttle.cancel(&name, source);
                return Err(e.into());
            }
        }
        self.forget_quiet(now).await;
        let user = match self.store.user_by_name(&name).await {
            Ok(user) => user,
            Err(e) => {
                self.cancel(&name, source).await;
                return Err(e.into());
            }
        };
        let checked = self
            .verifiers
            .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
            .await;
        let ok = match checked {
            Ok(ok) => ok,
            Err(_busy) => {
                self.cancel(&name, source).await;
                return Err(LoginError::Busy);
            }
        };
        let Some(user) = user.filter(|_| ok) else {
            // The failure was counted when the attempt began.
            self.events
                .publish(
                    EventKind::UserLoginFailed,
                    &Actor::System,
                    None,
                    format!("failed login as {name:?}"),
                )
                .await;
            return Err(LoginError::BadCredentials);
        };
        self.throttle.succeeded(&name, source);
        self.shared.succeeded(&name, source).await;
        let token = secret::new_secret("pst");
        let now = now_ms();
        let expires_at =
            now.saturating_add(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX));
        self.store
            .insert_login(&secret::hash_secret(&token), &user.id, now, expires_at)
            .await?;
        self.events
            .publish(EventKind::UserLogin, &Actor::user(&user), None, "logged in")
            .await;
        Ok(LoggedIn {
            user,
            token,
            expires_at,
        })
    }

    /// The attempt was not made: neither throttle counts it.
    async fn cancel(&self, name: &str, source: Option<IpAddr>) {
        self.throttle.cancel(name, source);
        self.shared.cancel(name, source).await;
    }

    /// Clears the shared throttle's quiet records, at most every `FORGET_EVERY_MS` per node.
    async fn forget_quiet(&self, now: i64) {
        let last = self.forgotten_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < FORGET_EVERY_MS
            || self
                .forgotten_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Err(e) = self.shared.forget_quiet(now).await {
            tracing::warn!(error = %e, "could not clear the login throttle's quiet records");
        }
    }
}
