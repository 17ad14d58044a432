//! Rows of either database read into records by one function each: `Columns` is what a
//! mapping needs of a row (text and integers by column name), and both SQLite's and
//! PostgreSQL's rows have it, so a record is checked and built in one place for both.

use std::str::FromStr;

use postern_protocol::AgentStatus;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::events::{EventRecord, EventRow};
use super::sessions::{SessionRecord, SessionRow};
use super::tokens::{TokenRecord, TokenRow};
use super::users::{UserRecord, UserRow};
use super::{AgentRecord, StoreError, StoreResult};

/// A row's columns in the plain types the schema uses on both databases (ids and names are
/// text, times and counts 64-bit integers).
pub trait Columns {
    fn text(&self, column: &str) -> StoreResult<String>;
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    fn int(&self, column: &str) -> StoreResult<i64>;
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;
}

impl<R> Columns for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> StoreResult<String> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        Ok(self.try_get(column)?)
    }
}

/// A unique violation as a conflict on `what`; any other error as it is.
pub fn conflict(what: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_owned())
        }
        _ => e.into(),
    }
}

/// Whether the error is a unique violation (the one-open-session index, say).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

pub fn corrupt(field: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{field}: {e}"))
}

/// The columns `agent_from_row` reads.
pub const AGENT_COLUMNS: &str =
    "id, did, name, ssh_public_key, status, facts, enrolled_at, last_seen, remote_addr";

pub fn agent_from_row(row: &impl Columns) -> StoreResult<AgentRecord> {
    Ok(AgentRecord {
        id: row.text("id")?.into(),
        did: row.text("did")?,
        name: row.text("name")?,
        ssh_public_key: row.text("ssh_public_key")?,
        status: AgentStatus::from_str(&row.text("status")?)
            .map_err(|e| corrupt("agents.status", e))?,
        facts: serde_json::from_str(&row.text("facts")?).map_err(|e| corrupt("agents.facts", e))?,
        enrolled_at: row.int("enrolled_at")?,
        last_seen: row.opt_int("last_seen")?,
        remote_addr: row.opt_text("remote_addr")?,
    })
}

/// Reads `USER_COLUMNS`.
pub fn user_from_row(row: &impl Columns) -> StoreResult<UserRecord> {
    UserRecord::try_from(UserRow {
        id: row.text("id")?,
        name: row.text("name")?,
        role: row.text("role")?,
        password_hash: row.text("password_hash")?,
        created_at: row.int("created_at")?,
        notifications_read_up_to: row.int("notifications_read_up_to")?,
    })
}

/// Reads `SESSION_COLUMNS`.
pub fn session_from_row(row: &impl Columns) -> StoreResult<SessionRecord> {
    SessionRecord::try_from(SessionRow {
        id: row.text("id")?,
        agent_id: row.text("agent_id")?,
        user_id: row.text("user_id")?,
        user_name: row.text("user_name")?,
        state: row.text("state")?,
        port: row.opt_int("port")?,
        reason: row.opt_text("reason")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        ended_at: row.opt_int("ended_at")?,
        node_id: row.opt_text("node_id")?,
        shells_kept: row.int("shells_kept")?,
    })
}

/// Reads `TOKEN_COLUMNS`.
pub fn token_from_row(row: &impl Columns) -> StoreResult<TokenRecord> {
    TokenRecord::try_from(TokenRow {
        id: row.text("id")?,
        created_by: row.text("created_by")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        max_uses: row.int("max_uses")?,
        uses: row.int("uses")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

/// Reads `EVENT_COLUMNS`.
pub fn event_from_row(row: &impl Columns) -> StoreResult<EventRecord> {
    EventRecord::try_from(EventRow {
        id: row.int("id")?,
        time: row.int("time")?,
        kind: row.text("kind")?,
        actor: row.text("actor")?,
        agent_id: row.opt_text("agent_id")?,
        agent_name: row.opt_text("agent_name")?,
        agent_did: row.opt_text("agent_did")?,
        session_id: row.opt_text("session_id")?,
        session_state: row.opt_text("session_state")?,
        detail: row.text("detail")?,
    })
}
