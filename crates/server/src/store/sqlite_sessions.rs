//! SQLite's migrations keep an existing store.

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use postern_protocol::SessionState;
    use sqlx::migrate::Migrator;
    use sqlx::sqlite::SqliteConnectOptions;

    use postern_protocol::SessionId;

    use crate::node::NodeId;
    use crate::store::{SessionStore, SqliteStore};

    /// A store from before nodes were recorded opens with every session kept; should it hold
    /// two open sessions of one user on one agent, the older ends as a restart ends it; the
    /// detached state's migration keeps every row and transition.
    #[tokio::test]
    async fn the_node_migration_keeps_an_existing_store() {
        let dir = tempfile::tempdir().unwrap();
        let all = sqlx::migrate!("./migrations/sqlite");
        let before = Migrator {
            migrations: Cow::Owned(
                all.iter()
                    .filter(|m| m.version < 4)
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            ..Migrator::DEFAULT
        };
        {
            let options = SqliteConnectOptions::new()
                .filename(dir.path().join(crate::store::STORE_FILE))
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            before.run(&pool).await.unwrap();
            sqlx::query("INSERT INTO agents (id, did, name, ssh_public_key, status, facts, enrolled_at) VALUES ('a', 'd', 'n', 'k', 'approved', '{}', 0)")
                .execute(&pool).await.unwrap();
            for (id, created) in [("0", 1), ("1", 2), ("2", 3)] {
                let id = format!("{id:0>32}");
                let state = if id.ends_with('2') {
                    "stopped"
                } else {
                    "running"
                };
                sqlx::query("INSERT INTO sessions (id, agent_id, user_id, user_name, state, created_at, updated_at) VALUES ($1, 'a', 'u', 'ann', $2, $3, $3)")
                    .bind(&id).bind(state).bind(created).execute(&pool).await.unwrap();
                sqlx::query("INSERT INTO session_transitions (session_id, seq, state, time) VALUES ($1, 0, $2, $3)")
                    .bind(&id).bind(state).bind(created).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let id = |n: &str| SessionId::parse(&format!("{n:0>32}")).unwrap();
        let older = store.session(&id("0")).await.unwrap().unwrap();
        assert_eq!(
            (older.state, older.reason.as_deref(), older.node),
            (SessionState::Stopped, Some("server restarted"), None)
        );
        assert_eq!(store.session_history(&id("0")).await.unwrap().len(), 2);
        let newer = store.session(&id("1")).await.unwrap().unwrap();
        assert_eq!(newer.state, SessionState::Running);
        let adopted = store.unfinished_sessions(&NodeId::random()).await.unwrap();
        assert_eq!(
            adopted.len(),
            1,
            "the one open session, stored before nodes"
        );
        // The state column replaced for the detached state (migration 0008) still checks its
        // values, and a detached session is still the user's one open session on the agent.
        let options =
            SqliteConnectOptions::new().filename(dir.path().join(crate::store::STORE_FILE));
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let set = |state: &'static str| {
            sqlx::query("UPDATE sessions SET state = $1 WHERE id = $2")
                .bind(state)
                .bind(format!("{:0>32}", "1"))
        };
        set("detached").execute(&pool).await.unwrap();
        assert!(set("lost").execute(&pool).await.is_err());
        let another = sqlx::query("INSERT INTO sessions (id, agent_id, user_id, user_name, state, created_at, updated_at) VALUES ($1, 'a', 'u', 'ann', 'requested', 4, 4)")
            .bind(format!("{:0>32}", "3"))
            .execute(&pool)
            .await;
        assert!(another.is_err(), "a detached session is open");
        pool.close().await;
    }
}
