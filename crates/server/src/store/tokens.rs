//! Enrollment tokens: only their hash is stored, and each use is taken by one conditional
//! write, so concurrent enrollments never take more than `max_uses`.

use std::fmt;

use async_trait::async_trait;

use postern_protocol::AgentId;

use super::{AgentRecord, StoreError, StoreResult};
use crate::auth::secret;

/// An enrollment token's id: 12 hex digits, shown in lists and events and named to revoke
/// it (by the whole id or a unique prefix). Server-only: the API shows it as a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenId(String);

impl TokenId {
    /// A fresh id for a new token.
    pub fn random() -> Self {
        Self(secret::new_id()[..12].to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Ids as stored (tests name tokens freely; the server makes random ones).
impl From<String> for TokenId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for TokenId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub id: TokenId,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: u32,
    pub uses: u32,
    pub revoked: bool,
}

/// The outcome of presenting an enrollment token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenUse {
    /// Valid: one use was taken, and what it pays for is stored.
    Consumed,
    Expired,
    UsedUp,
    Revoked,
    Unknown,
    /// The agent to approve was no longer waiting (decided meanwhile): nothing was taken.
    NotNeeded,
}

/// What one use of an enrollment token pays for. The use and this write are one
/// transaction: an enrollment that fails after the token was checked (a name taken
/// meanwhile, the database out of reach) costs the token nothing.
#[derive(Clone, Copy, Debug)]
pub enum TokenPays<'a> {
    /// A new agent, stored approved.
    NewAgent(&'a AgentRecord),
    /// A waiting agent's approval, if it is still waiting.
    Approval { agent: &'a AgentId, by: &'a str },
}

#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn insert_token(&self, token: &TokenRecord, token_hash: &str) -> StoreResult<()>;
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    /// Revokes by id or unique id prefix (text as given, not a `TokenId`); returns the
    /// revoked token.
    async fn revoke_token(&self, id_prefix: &str, now: i64) -> StoreResult<Option<TokenRecord>>;
    /// Takes one use of the token if it is valid at `now`, and stores what it pays for, in
    /// one transaction (see [`TokenPays`]). A refused use stores nothing; a failed write
    /// (e.g. `StoreError::Conflict` on a new agent's name) takes no use.
    async fn use_token(
        &self,
        token_hash: &str,
        now: i64,
        pays: TokenPays<'_>,
    ) -> StoreResult<TokenUse>;
}

/// A token row as any database returns it.
#[derive(Clone, Debug)]
pub struct TokenRow {
    pub id: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: i64,
    pub uses: i64,
    pub revoked_at: Option<i64>,
}

/// The columns of `TokenRow`, in its order.
/// The condition a token's row meets while a use may be taken (`$1` its hash, `$2` now).
pub const USABLE: &str =
    "token_hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND uses < max_uses";

pub const TOKEN_COLUMNS: &str =
    "id, created_by, created_at, expires_at, max_uses, uses, revoked_at";

impl TryFrom<TokenRow> for TokenRecord {
    type Error = StoreError;

    fn try_from(row: TokenRow) -> StoreResult<Self> {
        let count = |what: &str, n: i64| {
            u32::try_from(n)
                .map_err(|_| StoreError::Corrupt(format!("enrollment_tokens.{what} {n}")))
        };
        Ok(TokenRecord {
            max_uses: count("max_uses", row.max_uses)?,
            uses: count("uses", row.uses)?,
            revoked: row.revoked_at.is_some(),
            id: TokenId(row.id),
            created_by: row.created_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
        })
    }
}
