//! What the app's administration and shell around it rely on: managing users, the
//! notifications read marker, and the app itself served with a strict policy.

use postern_protocol::api::{EventKind, Role};
use reqwest::Method;
use serde_json::json;

use crate::harness::TestServer;

#[tokio::test]
async fn admins_add_change_reset_and_delete_users_and_logins_follow() {
    let server = TestServer::start().await;
    let admin = server.admin_token.clone();

    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(json!({"name": "uma", "role": "viewer", "password": "uma-password-1"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["role"].as_str()),
        (Some("uma"), Some("viewer"))
    );
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(json!({"name": "uma", "role": "viewer", "password": "uma-password-2"})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let (status, _) = server
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(json!({"name": "weak", "role": "viewer", "password": "short"})),
        )
        .await;
    assert_eq!(status, 400);

    let uma = server.login("uma", "uma-password-1").await;
    let (status, _) = server
        .call(Method::GET, "/api/v1/tokens", Some(&uma), None)
        .await;
    assert_eq!(status, 403, "a viewer");
    let (status, body) = server
        .call(
            Method::PATCH,
            "/api/v1/users/uma",
            Some(&admin),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("admin")),
        "{body}"
    );
    let (status, _) = server
        .call(Method::GET, "/api/v1/tokens", Some(&uma), None)
        .await;
    assert_eq!(
        status, 200,
        "the new role applies to the live login at once"
    );

    // A reset password ends the user's logins; the new one works.
    let (status, _) = server
        .call(
            Method::POST,
            "/api/v1/users/uma/password",
            Some(&admin),
            Some(json!({"password": "uma-password-2"})),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .call(Method::GET, "/api/v1/me", Some(&uma), None)
        .await;
    assert_eq!(status, 401);
    let uma = server.login("uma", "uma-password-2").await;

    // Nobody deletes themselves; the last administrator stays one.
    let (status, body) = server
        .call(Method::DELETE, "/api/v1/users/uma", Some(&uma), None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("self_delete")),
        "{body}"
    );
    let (status, _) = server
        .call(Method::DELETE, "/api/v1/users/admin", Some(&uma), None)
        .await;
    assert_eq!(status, 204, "two admins: one may go");
    let (status, body) = server
        .call(
            Method::PATCH,
            "/api/v1/users/uma",
            Some(&uma),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("last_admin")),
        "{body}"
    );
    let (status, _) = server
        .call(Method::GET, "/api/v1/me", Some(&admin), None)
        .await;
    assert_eq!(status, 401, "a deleted user's logins end with it");

    let (_, users) = server
        .call(Method::GET, "/api/v1/users", Some(&uma), None)
        .await;
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["uma"]);
    assert!(users[0].get("password_hash").is_none());

    let kinds: Vec<EventKind> = server
        .events_as(&uma)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for kind in [
        EventKind::UserCreated,
        EventKind::UserUpdated,
        EventKind::UserDeleted,
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}

#[tokio::test]
async fn the_notifications_read_marker_belongs_to_the_user_and_only_moves_forward() {
    let server = TestServer::start().await;
    let viewer = server.add_user("nell", Role::Viewer).await;
    let me = |token: String| {
        let server = &server;
        async move {
            server
                .call(Method::GET, "/api/v1/me", Some(&token), None)
                .await
                .1
        }
    };
    assert_eq!(me(viewer.clone()).await["notifications_read_up_to"], 0);
    let mark = |up_to: i64| {
        server.call(
            Method::PUT,
            "/api/v1/me/notifications",
            Some(&viewer),
            Some(json!({"read_up_to": up_to})),
        )
    };
    assert_eq!(mark(7).await.0, 204);
    assert_eq!(mark(3).await.0, 204);
    assert_eq!(
        me(viewer.clone()).await["notifications_read_up_to"],
        7,
        "a stale tab cannot unread"
    );
    assert_eq!(
        me(server.admin_token.clone()).await["notifications_read_up_to"],
        0,
        "each user has their own"
    );
}

#[tokio::test]
async fn the_app_is_served_from_the_binary_with_a_strict_content_security_policy() {
    let server = TestServer::start().await;
    let get = |path: &str| server.http.get(format!("{}{path}", server.url())).send();
    for path in ["/", "/agents", "/sessions/some-id"] {
        let page = get(path).await.unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let headers = page.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert!(!csp.contains("unsafe-eval"));
        let html = page.text().await.unwrap();
        assert!(!html.contains("<script>"), "no inline script");
        // Every script and style the page loads comes from this server, fingerprinted and
        // cacheable for good.
        let asset = html
            .split('"')
            .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
            .unwrap_or_else(|| panic!("no script asset in {html}"));
        let script = get(asset).await.unwrap();
        assert_eq!(script.status(), 200);
        assert!(
            script.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        assert!(
            script.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
    }
    // The API keeps answering JSON, also for paths it does not know.
    let missing = get("/api/v1/no-such-thing").await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}
