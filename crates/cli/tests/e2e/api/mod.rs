//! HTTP API: logins and their slow-down, roles on every endpoint, the error format, the event
//! stream's resumption, and no device address where it does not belong.

use postern_protocol::api::{EventKind, Role};
use reqwest::Method;
use serde_json::{Value, json};

mod roles;

use crate::harness::{TestAgent, TestServer, approved, parse_sse};

#[tokio::test]
async fn repeated_failed_logins_are_slowed_down_per_user_and_per_source() {
    let server = TestServer::start().await;
    let login = |user: &'static str, password: String| {
        let s = &server;
        async move {
            s.call(
                Method::POST,
                "/api/v1/login",
                None,
                Some(json!({"user": user, "password": password})),
            )
            .await
        }
    };
    for _ in 0..3 {
        let (status, body) = login("admin", "wrong".into()).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"], "bad_credentials");
    }
    // Now even the right password must wait.
    let response = server
        .http
        .post(format!("{}/api/v1/login", server.url()))
        .json(&json!({"user": "admin", "password": server.admin_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "too_many_attempts");

    // Unknown user names look exactly like wrong passwords.
    let (status, body) = login("nobody", "x".into()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("bad_credentials"))
    );

    // The same source guessing many names is held back too.
    let mut last = 0;
    for i in 0..12 {
        let name: &'static str = Box::leak(format!("guess{i}").into_boxed_str());
        last = login(name, "x".into()).await.0;
    }
    assert_eq!(last, 429);
    assert!(
        server
            .events()
            .await
            .iter()
            .any(|e| e.kind == EventKind::UserLoginFailed)
    );
}

#[tokio::test]
async fn login_logout_and_me_with_bearer_and_cookie() {
    let server = TestServer::start().await;
    let (status, me) = server
        .call(Method::GET, "/api/v1/me", Some(&server.admin_token), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        me,
        json!({"name": "admin", "role": "admin", "notifications_read_up_to": 0})
    );

    // Browsers get an HttpOnly, SameSite=Strict cookie that works on its own.
    let response = server
        .http
        .post(format!("{}/api/v1/login", server.url()))
        .json(&json!({"user": "admin", "password": server.admin_password}))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let me = server
        .http
        .get(format!("{}/api/v1/me", server.url()))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // A cookie alone cannot change state: a cross-site form has no CSRF header.
    let forged = server
        .http
        .post(format!("{}/api/v1/tokens", server.url()))
        .header("cookie", &pair)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    let (status, _) = server
        .call(
            Method::POST,
            "/api/v1/logout",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = server
        .call(Method::GET, "/api/v1/me", Some(&server.admin_token), None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
}

/// Expected status per role for every endpoint in the OpenAPI document. A new endpoint that
/// is not listed here fails the test, so no endpoint goes unchecked.
#[tokio::test]
async fn errors_are_json_with_codes_and_bodies_are_size_limited() {
    let server = TestServer::start().await;
    let (status, body) = server
        .call(Method::GET, "/api/v1/nope", Some(&server.admin_token), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");

    let (status, body) = server
        .call(
            Method::GET,
            "/api/v1/agents/ghost",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().contains("ghost"));

    let response = server
        .http
        .post(format!("{}/api/v1/tokens", server.url()))
        .bearer_auth(&server.admin_token)
        .header("content-type", "application/json")
        .body("{\"ttl_secs\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_body");

    let huge = format!(
        "{{\"user\": \"{}\", \"password\": \"x\"}}",
        "a".repeat(200_000)
    );
    let response = server
        .http
        .post(format!("{}/api/v1/login", server.url()))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "body_too_large");

    let (status, body) = server
        .admin_post("/api/v1/tokens", json!({"uses": 0}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_request");

    let (status, doc) = server
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["schemas"]["AgentView"].is_object());
}

#[tokio::test]
async fn the_event_stream_is_live_and_resumes_after_the_last_event_seen() {
    use futures::StreamExt;

    let server = TestServer::start().await;
    let before = server.events().await;
    let last_id = before.last().unwrap().id;

    let response = server
        .http
        .get(format!("{}/api/v1/events", server.url()))
        .bearer_auth(&server.admin_token)
        .header("last-event-id", last_id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();

    // Something happens while we watch.
    let token = server.create_token(60, 1).await;
    let agent = TestAgent::start(&server, "watched", Some(token));
    agent.wait_state("approved", approved).await;

    let mut text = String::new();
    let seen = tokio::time::timeout(crate::harness::DEADLINE, async {
        loop {
            let chunk = stream.next().await.unwrap().unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
            let events = parse_sse(&text);
            if events.iter().any(|e| e.kind == EventKind::AgentOnline) {
                return events;
            }
        }
    })
    .await
    .expect("live events did not arrive");
    // Exactly the events after the one we had, in order, none repeated.
    let ids: Vec<i64> = seen.iter().map(|e| e.id).collect();
    assert!(ids.iter().all(|id| *id > last_id), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let kinds: Vec<EventKind> = seen.iter().map(|e| e.kind).collect();
    assert_eq!(
        &kinds[..4],
        &[
            EventKind::TokenCreated,
            EventKind::AgentEnrolled,
            EventKind::AgentApproved,
            EventKind::AgentOnline
        ]
    );
}

#[tokio::test]
async fn no_device_address_reaches_a_non_admin_or_any_event() {
    let server = TestServer::start().await;
    let viewer = server.add_user("val", Role::Viewer).await;
    let token = server.create_token(60, 1).await;
    let agent = TestAgent::start(&server, "private", Some(token));
    agent.wait_state("approved", approved).await;

    let (_, as_admin) = server
        .call(
            Method::GET,
            "/api/v1/agents",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(
        as_admin[0]["remote_addr"], "127.0.0.1",
        "admins see the address"
    );

    let (_, list) = server
        .call(Method::GET, "/api/v1/agents", Some(&viewer), None)
        .await;
    let (_, one) = server
        .call(Method::GET, "/api/v1/agents/private", Some(&viewer), None)
        .await;
    let events = server
        .http
        .get(format!(
            "{}/api/v1/events?after=0&follow=false",
            server.url()
        ))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for text in [list.to_string(), one.to_string(), events] {
        assert!(!text.contains("127.0.0.1"), "device address leaked: {text}");
        assert!(!text.contains("remote_addr"), "{text}");
    }
}
