//! Finding agents in a fleet through the API: the store filters and pages (search, status,
//! connection, keyset cursor) with exact totals, and the fleet's counts agree with the list.

use postern_protocol::api::{AgentCounts, AgentView};
use postern_protocol::{AgentStatus, SessionState};

use crate::harness::{TestAgent, TestServer, approved_agent};

/// One page: the names, the total over all pages, the next cursor.
async fn page(server: &TestServer, query: &str) -> (Vec<String>, u64, Option<String>) {
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/agents?{query}", server.url()))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let total = header("x-total-count").unwrap().parse().unwrap();
    let next = header("x-next-cursor");
    let agents: Vec<AgentView> = response.json().await.unwrap();
    (agents.into_iter().map(|a| a.name).collect(), total, next)
}

async fn counts(server: &TestServer) -> AgentCounts {
    let (status, body) = server
        .call(
            reqwest::Method::GET,
            "/api/v1/fleet/counts",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

#[tokio::test]
async fn the_list_filters_and_pages_by_connection_and_the_counts_agree() {
    let server = TestServer::start().await;
    let _a = approved_agent(&server, "edge-a").await;
    let _b = approved_agent(&server, "edge-b").await;
    let mut c = approved_agent(&server, "edge-c").await;
    let _p = TestAgent::start(&server, "edge-p", None);
    server
        .wait_agent("edge-p", "pending and online", |a| {
            a.online && a.status == AgentStatus::Pending
        })
        .await;
    c.stop().await;
    server.wait_agent("edge-c", "offline", |a| !a.online).await;
    let token = server.admin_token.clone();
    let (status, body) = server.start_session("edge-a", &token).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    server
        .wait_session(&id, &token, SessionState::Running)
        .await;

    // The online agents a page at a time: full pages, the exact total, every one once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("online=true&limit=1&cursor={c}"),
            None => "online=true&limit=1".to_owned(),
        };
        let (names, total, next) = page(&server, &query).await;
        assert_eq!(total, 3);
        assert_eq!(names.len(), 1, "a page is full: {query}");
        seen.extend(names);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["edge-a", "edge-b", "edge-p"]);
    assert_eq!(page(&server, "online=false").await.0, ["edge-c"]);
    assert_eq!(
        page(&server, "online=true&status=pending").await.0,
        ["edge-p"]
    );
    assert_eq!(page(&server, "q=EDGE-B").await.0, ["edge-b"]);
    let (names, total, next) = page(&server, "q=edge&limit=2&cursor=edge-a").await;
    assert_eq!(
        (names, total, next),
        (
            vec!["edge-b".into(), "edge-c".into()],
            4,
            Some("edge-c".into())
        )
    );

    assert_eq!(
        counts(&server).await,
        AgentCounts {
            total: 4,
            pending: 1,
            approved: 3,
            rejected: 0,
            revoked: 0,
            online: 3,
            not_responding: 0,
            with_sessions: 1,
        }
    );
}

#[tokio::test]
async fn an_agent_named_counts_is_found_by_its_name() {
    let server = TestServer::start().await;
    let _counts = approved_agent(&server, "counts").await;
    let (status, body) = server
        .call(
            reqwest::Method::GET,
            "/api/v1/agents/counts",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let agent: AgentView = serde_json::from_value(body).unwrap();
    assert_eq!(agent.name, "counts");
    assert_eq!(counts(&server).await.approved, 1);
}
