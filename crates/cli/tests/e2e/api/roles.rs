//! Roles on every endpoint: each route of the API document answered for each role as the
//! role table says.

use std::collections::BTreeSet;

use postern_protocol::api::{EventKind, Role};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestAgent, TestServer, approved_agent, test_key};

/// (method, path template, concrete path, body, minimum role or None for public)
type RoleCase = (
    &'static str,
    &'static str,
    String,
    Option<Value>,
    Option<Role>,
);

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
