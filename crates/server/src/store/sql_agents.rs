//! The agents' part of `Store` and `AgentSearch`, written once for both databases
//! (`agent_store!` expands them for a store type). Only the search's filter differs (JSON and
//! case-insensitive matching are each database's own): the store's `push_agent_where`.
//!
//! The page follows the `name` column's unique index (keyset: `name > cursor ORDER BY name
//! LIMIT n`), so a page costs the same at the end of the fleet as at its start. The search
//! and the status filter scan the table; at 10,000 agents that is a few milliseconds (the
//! status filter) to about ten (a search, on a loaded machine), so no other index is kept:
//! none would serve a search inside names.
//!
//! Resolving a reference (`agent_by_exact`, `agents_by_prefix`) reads the few rows it names
//! through the unique indexes on id, name and DID, never the table: a prefix is a range of
//! each index (`name >= p AND name < p || U+10FFFF`), which is exactly "starts with p" because
//! names (see `sanitize_name`) and DIDs (`did:key:` and base58) are ASCII, below U+10FFFF, and
//! both databases compare these columns by code point (SQLite's BINARY, PostgreSQL's "C").

use sqlx::QueryBuilder;

use super::agents::AgentFilter;

/// The agent a reference names exactly; at most three rows match (the columns are unique).
pub const BY_EXACT: &str = "WHERE id = $1 OR name = $1 OR did = $1 ORDER BY name LIMIT 1";
/// Three index ranges: names, DIDs, and DIDs after `did:key:` (`$1`, `$3`) up to their ends
/// (`$2`, `$4`: the same with U+10FFFF appended).
pub const BY_PREFIX: &str = "WHERE (name >= $1 AND name < $2) OR (did >= $1 AND did < $2) \
                             OR (did >= $3 AND did < $4) ORDER BY name";

/// The bounds `BY_PREFIX` binds for `prefix`.
pub fn prefix_bounds(prefix: &str) -> [String; 4] {
    let did = format!("did:key:{prefix}");
    [
        prefix.to_owned(),
        format!("{prefix}\u{10FFFF}"),
        did.clone(),
        format!("{did}\u{10FFFF}"),
    ]
}

/// `text` as a LIKE pattern that matches it literally (`\` escapes).
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What the search filter says differently on each database.
pub struct Dialect {
    /// ASCII-case-insensitive LIKE.
    pub like: &'static str,
    /// The facts' hostname and OS as text (the facts are a JSON text column).
    pub hostname: &'static str,
    pub os: &'static str,
}

/// The WHERE clause of `filter` but its id set (which each database binds its own way),
/// shared by a page and its count.
pub fn push_filter<'a, DB>(
    qb: &mut QueryBuilder<'a, DB>,
    filter: &'a AgentFilter,
    dialect: &Dialect,
) where
    DB: sqlx::Database,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    qb.push(" WHERE 1 = 1");
    if let Some(status) = filter.status {
        qb.push(" AND status = ")
            .push_bind(status.as_str().to_owned());
    }
    let Some(search) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return;
    };
    // Case-insensitive for ASCII, as names, hostnames and DIDs are.
    let like = dialect.like;
    let part = format!("%{}%", literal(search));
    qb.push(format!(" AND (name {like} "))
        .push_bind(part.clone())
        .push(" ESCAPE '\\' OR (");
    // The facts' JSON text holds the hostname and OS verbatim when the search has no
    // character JSON escapes (quote, backslash, control): a row whose text lacks the search
    // cannot match then, so the JSON (which is parsed whole) is read only on rows that may —
    // a third of the cost of a search at 10,000 agents.
    if !search
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        qb.push(format!("facts {like} "))
            .push_bind(part.clone())
            .push(" ESCAPE '\\' AND ");
    }
    qb.push(format!("({} {like} ", dialect.hostname))
        .push_bind(part.clone())
        .push(format!(" ESCAPE '\\' OR {} {like} ", dialect.os))
        .push_bind(part)
        .push(format!(" ESCAPE '\\')) OR did {like} "))
        .push_bind(format!("{}%", literal(search)))
        .push(format!(" ESCAPE '\\' OR did {like} "))
        .push_bind(format!("did:key:{}%", literal(search)))
        .push(" ESCAPE '\\')");
}

macro_rules! agent_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use postern_protocol::{AgentFacts, AgentId, AgentStatus};
            use sqlx::QueryBuilder;
            use $crate::store::agents::{
                AgentFilter, AgentPage, AgentSearch, AgentTally, MAX_PAGE, PrefixMatch,
            };
            use $crate::store::rows::{AGENT_COLUMNS, Columns, agent_from_row, conflict, corrupt};
            use $crate::store::sql_agents::{BY_EXACT, BY_PREFIX, prefix_bounds};
            use $crate::store::{AgentRecord, Store, StoreResult};

            impl $store {
                /// Stores a new agent in `tx` (an enrollment token's use is taken with it).
                pub(crate) async fn insert_agent_in(
                    tx: &mut sqlx::Transaction<'static, $db>,
                    agent: &AgentRecord,
                ) -> StoreResult<()> {
                    let facts =
                        serde_json::to_string(&agent.facts).map_err(|e| corrupt("facts", e))?;
                    sqlx::query(&format!(
                        "INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                    ))
                    .bind(agent.id.as_str())
                    .bind(&agent.did)
                    .bind(&agent.name)
                    .bind(&agent.ssh_public_key)
                    .bind(agent.status.as_str())
                    .bind(facts)
                    .bind(agent.enrolled_at)
                    .bind(agent.last_seen)
                    .bind(&agent.remote_addr)
                    .execute(&mut **tx)
                    .await
                    .map_err(conflict(&format!("agent {:?}", agent.name)))?;
                    Ok(())
                }

                /// Approves a waiting agent in `tx`; false if it is not waiting (any more).
                pub(crate) async fn approve_pending_in(
                    tx: &mut sqlx::Transaction<'static, $db>,
                    id: &AgentId,
                    by: &str,
                    now: i64,
                ) -> StoreResult<bool> {
                    let approved = sqlx::query(
                        "UPDATE agents SET status = $1, decided_by = $2, decided_at = $3 \
                         WHERE id = $4 AND status = $5",
                    )
                    .bind(AgentStatus::Approved.as_str())
                    .bind(by)
                    .bind(now)
                    .bind(id.as_str())
                    .bind(AgentStatus::Pending.as_str())
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                    Ok(approved == 1)
                }
            }

            #[async_trait]
            impl Store for $store {
                async fn insert_agent(&self, agent: &AgentRecord) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    Self::insert_agent_in(&mut tx, agent).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn agent_by_ssh_key(&self, key: &str) -> StoreResult<Option<AgentRecord>> {
                    self.agent_where("ssh_public_key", key).await
                }

                async fn agent_by_did(&self, did: &str) -> StoreResult<Option<AgentRecord>> {
                    self.agent_where("did", did).await
                }

                async fn agent_by_id(&self, id: &AgentId) -> StoreResult<Option<AgentRecord>> {
                    self.agent_where("id", id.as_str()).await
                }

                async fn agent_name_taken(&self, name: &str) -> StoreResult<bool> {
                    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE name = $1")
                        .bind(name)
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(n > 0)
                }

                async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
                    sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name"))
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(agent_from_row)
                        .collect()
                }

                async fn count_agents(&self, status: AgentStatus) -> StoreResult<u64> {
                    let n: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE status = $1")
                            .bind(status.as_str())
                            .fetch_one(&self.pool)
                            .await?;
                    Ok(u64::try_from(n).unwrap_or_default())
                }

                async fn set_agent_status(
                    &self,
                    id: &AgentId,
                    status: AgentStatus,
                    by: &str,
                    now: i64,
                ) -> StoreResult<()> {
                    sqlx::query(
                        "UPDATE agents SET status = $1, decided_by = $2, decided_at = $3 WHERE id = $4",
                    )
                    .bind(status.as_str())
                    .bind(by)
                    .bind(now)
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn update_agent_facts(&self, id: &AgentId, facts: &AgentFacts) -> StoreResult<()> {
                    let facts = serde_json::to_string(facts).map_err(|e| corrupt("facts", e))?;
                    sqlx::query("UPDATE agents SET facts = $1 WHERE id = $2")
                        .bind(facts)
                        .bind(id.as_str())
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn update_agent_seen(
                    &self,
                    id: &AgentId,
                    last_seen: i64,
                    remote_addr: Option<&str>,
                ) -> StoreResult<()> {
                    sqlx::query(
                        "UPDATE agents SET last_seen = $1, remote_addr = COALESCE($2, remote_addr) \
                         WHERE id = $3",
                    )
                    .bind(last_seen)
                    .bind(remote_addr)
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }
            }

            impl $store {
                /// The agent whose unique `column` (a fixed name, never input) is `value`.
                async fn agent_where(
                    &self,
                    column: &'static str,
                    value: &str,
                ) -> StoreResult<Option<AgentRecord>> {
                    sqlx::query(&format!(
                        "SELECT {AGENT_COLUMNS} FROM agents WHERE {column} = $1"
                    ))
                    .bind(value)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(agent_from_row)
                    .transpose()
                }
            }

            #[async_trait]
            impl AgentSearch for $store {
                async fn find_agents(&self, filter: &AgentFilter) -> StoreResult<AgentPage> {
                    let mut count = QueryBuilder::new("SELECT COUNT(*) FROM agents");
                    Self::push_agent_where(&mut count, filter)?;
                    let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;

                    let mut page =
                        QueryBuilder::new(format!("SELECT {AGENT_COLUMNS} FROM agents"));
                    Self::push_agent_where(&mut page, filter)?;
                    if let Some(after) = &filter.after {
                        page.push(" AND name > ").push_bind(after);
                    }
                    page.push(" ORDER BY name");
                    let limit = filter.limit.map(|l| l.clamp(1, MAX_PAGE));
                    if let Some(limit) = limit {
                        // One more than asked says whether a next page exists.
                        page.push(" LIMIT ").push_bind(i64::from(limit) + 1);
                    }
                    let mut agents = page
                        .build()
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(agent_from_row)
                        .collect::<StoreResult<Vec<_>>>()?;
                    let more = limit.is_some_and(|l| agents.len() > l as usize);
                    if let Some(limit) = limit {
                        agents.truncate(limit as usize);
                    }
                    let next = more
                        .then(|| agents.last().map(|a| a.name.clone()))
                        .flatten();
                    Ok(AgentPage {
                        agents,
                        total: u64::try_from(total).unwrap_or_default(),
                        next,
                    })
                }

                async fn agent_tally(&self) -> StoreResult<AgentTally> {
                    let mut tally = AgentTally::default();
                    let rows =
                        sqlx::query("SELECT status, COUNT(*) AS n FROM agents GROUP BY status")
                            .fetch_all(&self.pool)
                            .await?;
                    for row in rows {
                        let n = u64::try_from(row.int("n")?).unwrap_or_default();
                        match row.text("status")?.parse::<AgentStatus>() {
                            Ok(AgentStatus::Pending) => tally.pending = n,
                            Ok(AgentStatus::Approved) => tally.approved = n,
                            Ok(AgentStatus::Rejected) => tally.rejected = n,
                            Ok(AgentStatus::Revoked) => tally.revoked = n,
                            Err(e) => return Err(corrupt("agents.status", e)),
                        }
                    }
                    let open: i64 = sqlx::query_scalar(
                        "SELECT COUNT(DISTINCT agent_id) FROM sessions \
                         WHERE state IN ('requested', 'starting', 'running', 'detached')",
                    )
                    .fetch_one(&self.pool)
                    .await?;
                    tally.with_sessions = u64::try_from(open).unwrap_or_default();
                    Ok(tally)
                }

                async fn agent_by_exact(&self, reference: &str) -> StoreResult<Option<AgentRecord>> {
                    sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents {BY_EXACT}"))
                        .bind(reference)
                        .fetch_optional(&self.pool)
                        .await?
                        .as_ref()
                        .map(agent_from_row)
                        .transpose()
                }

                async fn agents_by_prefix(&self, prefix: &str) -> StoreResult<PrefixMatch> {
                    let [low, high, did_low, did_high] = prefix_bounds(prefix);
                    // Two rows say whether it is ambiguous; only then are all the names read.
                    let rows = sqlx::query(&format!(
                        "SELECT {AGENT_COLUMNS} FROM agents {BY_PREFIX} LIMIT 2"
                    ))
                    .bind(&low)
                    .bind(&high)
                    .bind(&did_low)
                    .bind(&did_high)
                    .fetch_all(&self.pool)
                    .await?;
                    match rows.as_slice() {
                        [] => Ok(PrefixMatch::None),
                        [one] => Ok(PrefixMatch::One(Box::new(agent_from_row(one)?))),
                        _ => Ok(PrefixMatch::Many(
                            sqlx::query_scalar(&format!("SELECT name FROM agents {BY_PREFIX}"))
                                .bind(&low)
                                .bind(&high)
                                .bind(&did_low)
                                .bind(&did_high)
                                .fetch_all(&self.pool)
                                .await?,
                        )),
                    }
                }
            }
        };
    };
}
pub(crate) use agent_store;
