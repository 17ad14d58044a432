//! Events on SQLite survive reopening the store.

#[cfg(test)]
mod tests {
    use postern_protocol::api::EventKind;

    use crate::store::{Actor, EventStore, NewEvent, SqliteStore};

    #[tokio::test]
    async fn events_page_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            for i in 0..5 {
                s.insert_events(&[NewEvent {
                    time: i,
                    kind: EventKind::UserLogin,
                    actor: Actor::User("ann".into()),
                    agent: None,
                    session: None,
                    detail: format!("e{i}"),
                }])
                .await
                .unwrap();
            }
        }
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let after: Vec<_> = s.events_after(2, 10).await.unwrap();
        assert_eq!(
            after.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let latest = s.latest_events(2).await.unwrap();
        assert_eq!(
            latest
                .iter()
                .map(|e| e.event.detail.as_str())
                .collect::<Vec<_>>(),
            vec!["e3", "e4"]
        );
    }
}
