//! `AgentSearch` on SQLite: the filters are one WHERE clause shared by the page and its
//! count, so a page holds exactly the matches and the total counts exactly them.
//!
//! The page follows the `name` column's unique index (keyset: `name > cursor ORDER BY name
//! LIMIT n`), so a page costs the same at the end of the fleet as at its start. The search
//! (`LIKE '%…%'`) and the status filter scan the table; at 10,000 agents that is a few
//! milliseconds (the status filter) to about ten (a search, on a loaded machine), so no other
//! index is kept: none would serve a search inside names.
//!
//! Resolving a reference (`agent_by_exact`, `agents_by_prefix`) reads the few rows it names
//! through the unique indexes on id, name and DID, never the table: a prefix is a range of
//! each index (`name >= p AND name < p || U+10FFFF`), which is exactly "starts with p" because
//! names (see `sanitize_name`) and DIDs (`did:key:` and base58) are ASCII, below U+10FFFF.
//!
//! A set of ids (the connected agents, from memory) is bound as ONE JSON array and read with
//! `json_each`: one parameter whatever the fleet's size (SQLite allows 32,766 at most).

use async_trait::async_trait;
use postern_protocol::AgentStatus;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::agents::{
    AgentFilter, AgentPage, AgentSearch, AgentTally, IdSet, MAX_PAGE, PrefixMatch,
};
use super::sqlite::{AGENT_COLUMNS, agent_from_row, corrupt};
use super::{AgentRecord, SqliteStore, StoreResult};

/// `text` as a LIKE pattern that matches it literally (`\` escapes).
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The agent a reference names exactly; at most three rows match (the columns are unique).
const BY_EXACT: &str = "WHERE id = $1 OR name = $1 OR did = $1 ORDER BY name LIMIT 1";
/// Three index ranges: names, DIDs, and DIDs after `did:key:` (`$1`, `$3`) up to their ends
/// (`$2`, `$4`: the same with U+10FFFF appended).
const BY_PREFIX: &str = "WHERE (name >= $1 AND name < $2) OR (did >= $1 AND did < $2) \
                         OR (did >= $3 AND did < $4) ORDER BY name";

/// The bounds `BY_PREFIX` binds for `prefix`.
fn prefix_bounds(prefix: &str) -> [String; 4] {
    let did = format!("did:key:{prefix}");
    [
        prefix.to_owned(),
        format!("{prefix}\u{10FFFF}"),
        did.clone(),
        format!("{did}\u{10FFFF}"),
    ]
}

fn push_where<'a>(qb: &mut QueryBuilder<'a, Sqlite>, filter: &'a AgentFilter) -> StoreResult<()> {
    qb.push(" WHERE 1 = 1");
    if let Some(status) = filter.status {
        qb.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(search) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        // LIKE is case-insensitive for ASCII, as names, hostnames and DIDs are.
        let part = format!("%{}%", literal(search));
        let prefix = format!("{}%", literal(search));
        let did_body = format!("did:key:{}%", literal(search));
        qb.push(" AND (name LIKE ")
            .push_bind(part.clone())
            .push(" ESCAPE '\\' OR (");
        // The facts' JSON text holds the hostname and OS verbatim when the search has no
        // character JSON escapes (quote, backslash, control): a row whose text lacks the
        // search cannot match then, so json_extract (which parses the whole document) runs
        // only on rows that may — a third of the cost of a search at 10,000 agents.
        if !search
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            qb.push("facts LIKE ")
                .push_bind(part.clone())
                .push(" ESCAPE '\\' AND ");
        }
        qb.push("(json_extract(facts, '$.hostname') LIKE ")
            .push_bind(part.clone())
            .push(" ESCAPE '\\' OR json_extract(facts, '$.os') LIKE ")
            .push_bind(part)
            .push(" ESCAPE '\\')) OR did LIKE ")
            .push_bind(prefix)
            .push(" ESCAPE '\\' OR did LIKE ")
            .push_bind(did_body)
            .push(" ESCAPE '\\')");
    }
    if let Some(ids) = &filter.ids {
        let (op, ids) = match ids {
            IdSet::In(ids) => (" AND id IN", ids),
            IdSet::NotIn(ids) => (" AND id NOT IN", ids),
        };
        // Encoding a list of strings cannot fail; the error is only the type's.
        let json = serde_json::to_string(ids).map_err(|e| corrupt("agent ids", e))?;
        qb.push(op)
            .push(" (SELECT value FROM json_each(")
            .push_bind(json)
            .push("))");
    }
    Ok(())
}

#[async_trait]
impl AgentSearch for SqliteStore {
    async fn find_agents(&self, filter: &AgentFilter) -> StoreResult<AgentPage> {
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM agents");
        push_where(&mut count, filter)?;
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;

        let mut page = QueryBuilder::new(format!("SELECT {AGENT_COLUMNS} FROM agents"));
        push_where(&mut page, filter)?;
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
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM agents GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let status: String = row.try_get("status")?;
            let n = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or_default();
            match status.parse::<AgentStatus>() {
                Ok(AgentStatus::Pending) => tally.pending = n,
                Ok(AgentStatus::Approved) => tally.approved = n,
                Ok(AgentStatus::Rejected) => tally.rejected = n,
                Ok(AgentStatus::Revoked) => tally.revoked = n,
                Err(e) => return Err(corrupt("agents.status", e)),
            }
        }
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT agent_id) FROM sessions \
             WHERE state IN ('requested', 'starting', 'running')",
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

#[cfg(test)]
mod tests {
    use postern_protocol::api::EventKind;
    use postern_protocol::{AgentFacts, SessionId, SessionState};

    use super::*;
    use crate::store::{Actor, SessionInsert, SessionRecord, SessionStore, Store};

    fn agent(name: &str, status: AgentStatus, os: &str) -> AgentRecord {
        AgentRecord {
            id: format!("id-{name}"),
            did: format!("did:key:z6Mk{name}"),
            name: name.into(),
            ssh_public_key: format!("ssh-ed25519 {name}"),
            status,
            facts: AgentFacts {
                hostname: format!("host-{name}"),
                os: os.into(),
                ..AgentFacts::default()
            },
            enrolled_at: 0,
            last_seen: None,
            remote_addr: None,
        }
    }

    /// 25 agents, every fifth pending; ten on Debian, the rest on Alpine.
    async fn fleet() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        for i in 0..25 {
            let status = if i % 5 == 0 {
                AgentStatus::Pending
            } else {
                AgentStatus::Approved
            };
            let os = if i < 10 { "Debian 12" } else { "Alpine" };
            store
                .insert_agent(&agent(&format!("edge-{i:02}"), status, os))
                .await
                .unwrap();
        }
        (dir, store)
    }

    fn names(page: &AgentPage) -> Vec<&str> {
        page.agents.iter().map(|a| a.name.as_str()).collect()
    }

    #[tokio::test]
    async fn pages_follow_the_cursor_to_the_end() {
        let (_dir, store) = fleet().await;
        let mut filter = AgentFilter {
            limit: Some(10),
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = store.find_agents(&filter).await.unwrap();
            assert_eq!(page.total, 25);
            seen.extend(names(&page).into_iter().map(str::to_owned));
            match page.next {
                Some(next) => filter.after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        let all = store.find_agents(&AgentFilter::default()).await.unwrap();
        assert_eq!((all.agents.len(), all.next), (25, None));
    }

    #[tokio::test]
    async fn search_covers_name_hostname_os_and_did_prefix() {
        let (_dir, store) = fleet().await;
        let search = |s: &str| {
            let filter = AgentFilter {
                search: Some(s.into()),
                ..Default::default()
            };
            let store = &store;
            async move { store.find_agents(&filter).await.unwrap() }
        };
        assert_eq!(names(&search("EDGE-03").await), ["edge-03"]);
        assert_eq!(names(&search("host-edge-04").await), ["edge-04"]);
        assert_eq!(search("alpine").await.total, 15);
        assert_eq!(names(&search("z6Mkedge-07").await), ["edge-07"]);
        assert_eq!(names(&search("did:key:z6Mkedge-08").await), ["edge-08"]);
        // The DID matches by prefix only: its middle is noise.
        assert_eq!(search("kedge-0").await.total, 0);
        // LIKE's wildcards are plain characters in a search.
        assert_eq!(search("edge_0").await.total, 0);
        assert_eq!(search("%").await.total, 0);
        assert_eq!(search("  ").await.total, 25, "blank is no search");
        // A character JSON escapes in the stored facts is still found.
        let mut odd = agent("odd", AgentStatus::Approved, "Alpine");
        odd.facts.hostname = r#"lab"7\b"#.into();
        store.insert_agent(&odd).await.unwrap();
        assert_eq!(names(&search(r#"b"7\"#).await), ["odd"]);
    }

    #[tokio::test]
    async fn status_and_id_sets_filter_in_the_same_query_as_the_page() {
        let (_dir, store) = fleet().await;
        let online: Vec<String> = ["01", "11", "21", "15"]
            .iter()
            .map(|i| format!("id-edge-{i}"))
            .collect();
        let find = |filter: AgentFilter| {
            let store = &store;
            async move { store.find_agents(&filter).await.unwrap() }
        };
        let page = find(AgentFilter {
            status: Some(AgentStatus::Pending),
            ..Default::default()
        })
        .await;
        assert_eq!(page.total, 5);
        // A page of connected pending agents is full and its total exact, though most
        // agents are neither.
        let page = find(AgentFilter {
            ids: Some(IdSet::In(online.clone())),
            limit: Some(2),
            ..Default::default()
        })
        .await;
        assert_eq!(names(&page), ["edge-01", "edge-11"]);
        assert_eq!((page.total, page.next.as_deref()), (4, Some("edge-11")));
        let page = find(AgentFilter {
            ids: Some(IdSet::In(online.clone())),
            status: Some(AgentStatus::Pending),
            ..Default::default()
        })
        .await;
        assert_eq!(names(&page), ["edge-15"]);
        let page = find(AgentFilter {
            ids: Some(IdSet::NotIn(online)),
            limit: Some(0),
            ..Default::default()
        })
        .await;
        assert_eq!(
            (page.total, page.agents.len()),
            (21, 1),
            "a limit of 0 still returns one"
        );
        let none = find(AgentFilter {
            ids: Some(IdSet::In(Vec::new())),
            ..Default::default()
        })
        .await;
        assert_eq!(none.total, 0);
    }

    #[tokio::test]
    async fn the_tally_counts_statuses_and_agents_with_open_sessions() {
        let (_dir, store) = fleet().await;
        store
            .set_agent_status("id-edge-01", AgentStatus::Revoked, "admin", 1)
            .await
            .unwrap();
        // Two open sessions on one agent count it once; an ended one does not count.
        for (i, agent, state) in [
            (1, "id-edge-02", SessionState::Running),
            (2, "id-edge-02", SessionState::Requested),
            (3, "id-edge-03", SessionState::Stopped),
        ] {
            // One open session per user and agent: a user each.
            let session = SessionRecord {
                id: SessionId::parse(&format!("{i:032x}")).unwrap(),
                agent_id: agent.into(),
                user_id: format!("u{i}").into(),
                user_name: "ann".into(),
                state,
                port: None,
                reason: None,
                created_at: 0,
                updated_at: 0,
                ended_at: None,
                node: None,
            };
            let event = crate::events::new_event(
                EventKind::SessionState,
                &Actor::System,
                None,
                Some((session.id.clone(), state)),
                "",
            );
            let inserted = store.insert_session(&session, &event).await.unwrap();
            assert!(matches!(inserted, SessionInsert::Inserted { .. }));
        }
        let tally = store.agent_tally().await.unwrap();
        assert_eq!(
            tally,
            AgentTally {
                pending: 5,
                approved: 19,
                rejected: 0,
                revoked: 1,
                with_sessions: 1,
            }
        );
    }

    #[tokio::test]
    async fn a_reference_reads_only_the_rows_it_names_through_the_indexes() {
        let (_dir, store) = fleet().await;
        for (query, binds) in [
            (BY_EXACT, vec!["edge-03".to_owned()]),
            (BY_PREFIX, prefix_bounds("edge-0").to_vec()),
        ] {
            let sql = format!("EXPLAIN QUERY PLAN SELECT {AGENT_COLUMNS} FROM agents {query}");
            let mut plan = sqlx::query(&sql);
            for bind in binds {
                plan = plan.bind(bind);
            }
            let steps: Vec<String> = plan
                .fetch_all(&store.pool)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get("detail"))
                .collect();
            assert!(
                steps.iter().all(|s| !s.starts_with("SCAN")),
                "{query}: {steps:?}"
            );
        }
        // A prefix's range ends where the prefix stops matching, in each index.
        let found = |prefix: &str| {
            let store = &store;
            let prefix = prefix.to_owned();
            async move {
                match store.agents_by_prefix(&prefix).await.unwrap() {
                    PrefixMatch::None => vec![],
                    PrefixMatch::One(one) => vec![one.name],
                    PrefixMatch::Many(names) => names,
                }
            }
        };
        assert_eq!(found("edge-1").await.len(), 10);
        assert_eq!(found("edge-19").await, ["edge-19"]);
        assert_eq!(found("edge-1~").await, Vec::<String>::new());
        assert_eq!(found("z6Mkedge-2").await.len(), 5);
        assert_eq!(found("did:key:z6Mkedge-24").await, ["edge-24"]);
        assert_eq!(found("Edge").await, Vec::<String>::new(), "case-sensitive");
        assert_eq!(found("edge_").await, Vec::<String>::new(), "no wildcards");
    }
}
