//! The API document is true: the server refuses what `/api/v1/openapi.json` forbids, accepts
//! what it allows, and the document lists every refusal in the error format. The full check
//! is schemathesis (scripts/api-fuzz); these are the cases it found, kept as regressions.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::TestServer;

/// What schemathesis found (issue 15): the server must refuse what its document forbids,
/// accept what it allows, and answer every refusal in the documented error format.
#[tokio::test]
async fn the_api_refuses_what_its_document_forbids_and_accepts_what_it_allows() {
    let server = TestServer::start().await;
    let admin = server.admin_token.clone();
    let send = |method: Method, path: &str, content_type: &str, body: &str| {
        server
            .http
            .request(method, format!("{}{path}", server.url()))
            .bearer_auth(&admin)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
    };
    let refused = |status: u16, code: &str, (got, body): (u16, Value)| {
        assert_eq!(got, status, "{body}");
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].is_string(), "{body}");
    };

    // A JSON array is not a token request (serde would read it field by field).
    let response = send(
        Method::POST,
        "/api/v1/tokens",
        "application/json",
        "[null, null]",
    )
    .await
    .unwrap();
    let status = response.status().as_u16();
    refused(
        422,
        "invalid_body",
        (status, response.json().await.unwrap()),
    );
    let (_, tokens) = server
        .call(Method::GET, "/api/v1/tokens", Some(&admin), None)
        .await;
    assert_eq!(tokens, json!([]), "no token was created");
    let response = send(Method::POST, "/api/v1/tokens", "text/plain", "{}")
        .await
        .unwrap();
    let status = response.status().as_u16();
    refused(
        415,
        "unsupported_media_type",
        (status, response.json().await.unwrap()),
    );

    // JSON Schema's integers: 2.0 is one, 1.5 is not; ranges as documented.
    let (status, body) = server
        .admin_post("/api/v1/tokens", json!({"uses": 2.0, "ttl_secs": 60.0}))
        .await;
    assert_eq!(
        (status, body["max_uses"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    refused(
        422,
        "invalid_body",
        server
            .admin_post("/api/v1/tokens", json!({"uses": 1.5}))
            .await,
    );
    refused(
        400,
        "bad_request",
        server
            .admin_post("/api/v1/tokens", json!({"uses": 100_001}))
            .await,
    );

    // Query values out of their type's range, and path segments that are not UTF-8.
    for path in [
        "/api/v1/events?limit=4294967296&follow=false",
        "/api/v1/sessions?limit=-1",
        "/api/v1/sessions?state=null",
    ] {
        refused(
            400,
            "invalid_query",
            server.call(Method::GET, path, Some(&admin), None).await,
        );
    }
    refused(
        400,
        "invalid_path",
        server
            .call(Method::GET, "/api/v1/agents/%FF", Some(&admin), None)
            .await,
    );

    // A method an endpoint does not take: 405, in the error format, with `Allow`.
    let response = send(Method::PUT, "/api/v1/health", "application/json", "{}")
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET,HEAD");
    let status = response.status().as_u16();
    refused(
        405,
        "method_not_allowed",
        (status, response.json().await.unwrap()),
    );

    // The document states the limits the server enforces, and every refusal it can give.
    let (_, doc) = server
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["CreateUserRequest"]["properties"]["password"]["minLength"],
        8
    );
    assert_eq!(
        schemas["CreateTokenRequest"]["properties"]["uses"]["maximum"],
        100_000
    );
    let (status, _) = server
        .admin_post(
            "/api/v1/users",
            json!({"name": "short", "role": "viewer", "password": "1234567"}),
        )
        .await;
    assert_eq!(status, 400);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let login = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            assert!(
                !login || responses.contains_key("401"),
                "{method} {path}: 401 undocumented"
            );
            if operation["requestBody"].is_object() {
                for status in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(status), "{method} {path}: {status}");
                }
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ApiError",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    // The event stream is described message by message, not as one JSON `EventView`.
    let stream = &doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"];
    assert!(stream["application/json"].is_null());
    let message = stream["text/event-stream"]["schema"]["$ref"]
        .as_str()
        .unwrap();
    let message = &schemas[message.trim_start_matches("#/components/schemas/")];
    assert_eq!(
        message["properties"]["data"]["contentMediaType"],
        "application/json"
    );
}
