//! HTTP API: logins and their slow-down, roles on every endpoint, the error format, the event
//! stream's resumption, and no device address where it does not belong.

use std::collections::BTreeSet;

use postern_protocol::api::{EventKind, Role};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestAgent, TestServer, approved, approved_agent, parse_sse, test_key};

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

/// (method, path template, concrete path, body, minimum role or None for public)
type RoleCase = (
    &'static str,
    &'static str,
    String,
    Option<Value>,
    Option<Role>,
);

/// Expected status per role for every endpoint in the OpenAPI document. A new endpoint that
/// is not listed here fails the test, so no endpoint goes unchecked.
#[tokio::test]
async fn roles_are_checked_on_every_endpoint() {
    let server = TestServer::start().await;
    let viewer = server.add_user("vera", Role::Viewer).await;
    let operator = server.add_user("otto", Role::Operator).await;
    let admin = server.admin_token.clone();
    let agent = TestAgent::start(&server, "target", None);
    agent.wait_state("pending", |s| s.status.is_some()).await;
    let token_id = {
        let (_, body) = server.admin_post("/api/v1/tokens", json!({})).await;
        body["id"].as_str().unwrap().to_owned()
    };
    // A running session of the operator's, for the session endpoints.
    let _shell = approved_agent(&server, "shell").await;
    let (status, body) = server.start_session("shell", &operator).await;
    assert_eq!(status, 201, "{body}");
    let session_id = body["id"].as_str().unwrap().to_owned();
    server
        .wait_session(
            &session_id,
            &operator,
            postern_protocol::SessionState::Running,
        )
        .await;
    let user_key = test_key(3).public_key().to_openssh().unwrap();
    server.add_user("tmpuser", Role::Viewer).await;

    // (method, path template, concrete path, body, minimum role or None for public)
    let table: Vec<RoleCase> = vec![
        ("get", "/api/v1/health", "/api/v1/health".into(), None, None),
        ("get", "/healthz", "/healthz".into(), None, None),
        ("get", "/readyz", "/readyz".into(), None, None),
        (
            "get",
            "/api/v1/openapi.json",
            "/api/v1/openapi.json".into(),
            None,
            None,
        ),
        (
            "post",
            "/api/v1/login",
            "/api/v1/login".into(),
            Some(json!({"user": "vera", "password": "vera-password-123"})),
            None,
        ),
        (
            "get",
            "/api/v1/me",
            "/api/v1/me".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            "get",
            "/api/v1/agents",
            "/api/v1/agents".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            "get",
            "/api/v1/fleet/counts",
            "/api/v1/fleet/counts".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            "get",
            "/api/v1/presence",
            "/api/v1/presence".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            "get",
            "/api/v1/presence/changes",
            "/api/v1/presence/changes?since=x.1".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            "get",
            "/api/v1/agents/{agent}",
            "/api/v1/agents/target".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            "get",
            "/api/v1/events",
            "/api/v1/events?follow=false".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            "get",
            "/api/v1/tokens",
            "/api/v1/tokens".into(),
            None,
            Some(Role::Admin),
        ),
        (
            "post",
            "/api/v1/tokens",
            "/api/v1/tokens".into(),
            Some(json!({})),
            Some(Role::Admin),
        ),
        (
            "delete",
            "/api/v1/tokens/{id}",
            format!("/api/v1/tokens/{token_id}"),
            None,
            Some(Role::Admin),
        ),
        (
            "post",
            "/api/v1/agents/{agent}/reject",
            "/api/v1/agents/target/reject".into(),
            Some(json!({})),
            Some(Role::Admin),
        ),
        (
            "post",
            "/api/v1/agents/{agent}/approve",
            "/api/v1/agents/target/approve".into(),
            Some(json!({})),
            Some(Role::Admin),
        ),
        (
            "post",
            "/api/v1/agents/{agent}/revoke",
            "/api/v1/agents/target/revoke".into(),
            Some(json!({})),
            Some(Role::Admin),
        ),
        (
            "post",
            "/api/v1/agents/{agent}/sessions",
            "/api/v1/agents/shell/sessions".into(),
            Some(json!({})),
            Some(Role::Operator),
        ),
        (
            "get",
            "/api/v1/sessions",
            "/api/v1/sessions".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            "get",
            "/api/v1/sessions/{id}",
            format!("/api/v1/sessions/{session_id}"),
            None,
            Some(Role::Viewer),
        ),
        (
            "post",
            "/api/v1/sessions/{id}/certificate",
            format!("/api/v1/sessions/{session_id}/certificate"),
            Some(json!({"public_key": user_key})),
            Some(Role::Operator),
        ),
        (
            "get",
            "/api/v1/sessions/{id}/terminal",
            format!("/api/v1/sessions/{session_id}/terminal"),
            None,
            Some(Role::Operator),
        ),
        (
            "put",
            "/api/v1/me/notifications",
            "/api/v1/me/notifications".into(),
            Some(json!({"read_up_to": 1})),
            Some(Role::Viewer),
        ),
        (
            "get",
            "/api/v1/users",
            "/api/v1/users".into(),
            None,
            Some(Role::Admin),
        ),
        (
            "post",
            "/api/v1/users",
            "/api/v1/users".into(),
            Some(json!({"name": "newbie", "role": "viewer", "password": "newbie-password"})),
            Some(Role::Admin),
        ),
        (
            "patch",
            "/api/v1/users/{name}",
            "/api/v1/users/tmpuser".into(),
            Some(json!({"role": "operator"})),
            Some(Role::Admin),
        ),
        (
            "post",
            "/api/v1/users/{name}/password",
            "/api/v1/users/tmpuser/password".into(),
            Some(json!({"password": "another-password"})),
            Some(Role::Admin),
        ),
        (
            "delete",
            "/api/v1/users/{name}",
            "/api/v1/users/tmpuser".into(),
            None,
            Some(Role::Admin),
        ),
        (
            "get",
            "/api/v1/sessions/{id}/stream",
            format!("/api/v1/sessions/{session_id}/stream"),
            None,
            Some(Role::Operator),
        ),
        (
            "post",
            "/api/v1/sessions/{id}/stop",
            format!("/api/v1/sessions/{session_id}/stop"),
            Some(json!({})),
            Some(Role::Operator),
        ),
        (
            "post",
            "/api/v1/logout",
            "/api/v1/logout".into(),
            None,
            Some(Role::Viewer),
        ),
    ];

    let (_, doc) = server
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let covered: BTreeSet<(String, String)> = table
        .iter()
        .map(|(m, p, ..)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, covered,
        "every documented endpoint is in the role table"
    );

    for (method, template, path, body, min_role) in &table {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        for (role, token) in [
            (None, None),
            (Some(Role::Viewer), Some(viewer.as_str())),
            (Some(Role::Operator), Some(operator.as_str())),
        ] {
            if *template == "/api/v1/logout" && role.is_some() {
                continue; // would end the login the rest of the table needs
            }
            let (status, response) = server.call(method.clone(), path, token, body.clone()).await;
            let allowed = match (min_role, role) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(min), Some(r)) => r >= *min,
            };
            if allowed {
                assert!(
                    status != 401 && status != 403,
                    "{role:?} {method} {path}: {status} {response}"
                );
            } else {
                let want = if role.is_none() { 401 } else { 403 };
                assert_eq!(status, want, "{role:?} {method} {path}: {response}");
                assert!(response["error"].is_string() && response["message"].is_string());
            }
        }
        // Logging out is checked with a login of its own, to keep the admin's.
        let fresh;
        let admin = if *template == "/api/v1/logout" {
            fresh = server.login("admin", &server.admin_password).await;
            &fresh
        } else {
            &admin
        };
        let (status, response) = server
            .call(method.clone(), path, Some(admin), body.clone())
            .await;
        assert!(
            status != 401 && status != 403,
            "admin {method} {path}: {status} {response}"
        );
    }
    // The viewer could not approve: the agent's status only changed through the admin.
    let decided: Vec<String> = server
        .events()
        .await
        .into_iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::AgentApproved | EventKind::AgentRejected | EventKind::AgentRevoked
            ) && e.agent.as_ref().is_some_and(|a| a.name == "target")
        })
        .map(|e| e.actor)
        .collect();
    assert_eq!(decided, vec!["admin", "admin", "admin"]);
}

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
