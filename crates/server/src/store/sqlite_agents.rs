//! `AgentSearch`'s filter on SQLite (the rest is shared, `sql_agents.rs`): LIKE is
//! case-insensitive for ASCII, the facts are read with `json_extract`, and a set of ids (the
//! connected agents, from memory) is bound as ONE JSON array and read with `json_each`: one
//! parameter whatever the fleet's size (SQLite allows 32,766 at most).

use sqlx::{QueryBuilder, Sqlite};

use super::agents::{AgentFilter, IdSet};
use super::rows::corrupt;
use super::sql_agents::{Dialect, push_filter};
use super::{SqliteStore, StoreResult};

const SQLITE: Dialect = Dialect {
    like: "LIKE",
    hostname: "json_extract(facts, '$.hostname')",
    os: "json_extract(facts, '$.os')",
};

impl SqliteStore {
    /// The WHERE clause of `filter`, shared by a page and its count.
    pub(super) fn push_agent_where<'a>(
        qb: &mut QueryBuilder<'a, Sqlite>,
        filter: &'a AgentFilter,
    ) -> StoreResult<()> {
        push_filter(qb, filter, &SQLITE);
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
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use crate::store::SqliteStore;
    use crate::store::conformance::agents::fleet;
    use crate::store::rows::AGENT_COLUMNS;
    use crate::store::sql_agents::{BY_EXACT, BY_PREFIX, prefix_bounds};

    #[tokio::test]
    async fn a_reference_reads_only_the_rows_it_names_through_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        fleet(&store).await;
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
    }
}
