//! Enrollment tokens: secrets that approve agents on enrollment, limited in time and uses.

use std::sync::Arc;
use std::time::Duration;

use postern_protocol::EnrollmentToken;
use postern_protocol::api::{CreatedToken, EventKind, TokenView};

use crate::auth::secret;
use crate::clock::now_ms;
use crate::events::EventBus;
use crate::store::{Actor, Store, StoreError, TokenId, TokenRecord};

pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The API document states both limits (`CreateTokenRequest`); a test in `api::document`
/// keeps them in step.
pub const MAX_USES: u32 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token must live between 1 second and 365 days")]
    BadTtl,
    #[error("a token must allow between 1 and 100000 uses")]
    BadUses,
    #[error("no single enrollment token matches {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn view(t: TokenRecord) -> TokenView {
    TokenView {
        id: t.id.to_string(),
        created_by: t.created_by,
        created_at: t.created_at,
        expires_at: t.expires_at,
        max_uses: t.max_uses,
        uses: t.uses,
        revoked: t.revoked,
    }
}

pub struct EnrollmentTokens {
    store: Arc<dyn Store>,
    events: Arc<EventBus>,
    /// Carried in every token, so that an agent trusts no other server from its first contact.
    host_key_fingerprint: String,
}

impl EnrollmentTokens {
    pub fn new(store: Arc<dyn Store>, events: Arc<EventBus>, host_key_fingerprint: String) -> Self {
        Self {
            store,
            events,
            host_key_fingerprint,
        }
    }

    pub async fn create(
        &self,
        actor: &Actor,
        ttl: Duration,
        uses: u32,
    ) -> Result<CreatedToken, TokenError> {
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            return Err(TokenError::BadTtl);
        }
        if !(1..=MAX_USES).contains(&uses) {
            return Err(TokenError::BadUses);
        }
        let secret = secret::new_secret("pet");
        let now = now_ms();
        let record = TokenRecord {
            id: TokenId::random(),
            created_by: actor.to_string(),
            created_at: now,
            expires_at: now + ttl.as_millis() as i64,
            max_uses: uses,
            uses: 0,
            revoked: false,
        };
        self.store
            .insert_token(&record, &secret::hash_secret(&secret))
            .await?;
        self.events
            .publish(
                EventKind::TokenCreated,
                actor,
                None,
                format!("enrollment token {} ({uses} uses)", record.id),
            )
            .await;
        let token = EnrollmentToken::new(secret, Some(self.host_key_fingerprint.clone()));
        Ok(CreatedToken {
            token: token.to_string(),
            view: view(record),
        })
    }

    pub async fn list(&self) -> Result<Vec<TokenView>, TokenError> {
        Ok(self
            .store
            .list_tokens()
            .await?
            .into_iter()
            .map(view)
            .collect())
    }

    /// Revokes the token whose id is `id_prefix` or starts with it (one token only).
    pub async fn revoke(&self, actor: &Actor, id_prefix: &str) -> Result<TokenView, TokenError> {
        let token = self
            .store
            .revoke_token(id_prefix, now_ms())
            .await?
            .ok_or_else(|| TokenError::NotFound(id_prefix.to_owned()))?;
        self.events
            .publish(
                EventKind::TokenRevoked,
                actor,
                None,
                format!("enrollment token {}", token.id),
            )
            .await;
        Ok(view(token))
    }
}
