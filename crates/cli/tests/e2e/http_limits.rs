//! HTTP connections with raw TCP clients: silent, half-sent and idle connections are closed
//! (with short timeouts configured), while event streams and terminal WebSockets stay open
//! past them; oversized bodies are refused before they are sent; and every response
//! carries the security headers.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use postern_protocol::SessionState;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{DEADLINE, TestServer, approved_agent};

/// A server whose HTTP connections may wait for a request for a second only.
async fn impatient_server() -> TestServer {
    let mut server = TestServer::start_with(|c| {
        c.http_header_timeout = Duration::from_secs(1);
        c.http_idle_timeout = Duration::from_secs(1);
    })
    .await;
    // A pooled connection the server closes for idleness may be picked for a request at
    // that very moment; the test's own calls use a fresh connection each.
    server.http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    server
}

/// Reads until the peer closes; what it sent on the way is returned.
async fn until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open; it sent {:?}",
        String::from_utf8_lossy(&seen)
    );
    seen
}

/// One response's head (status line and headers, lower-cased names) and body, read by its
/// Content-Length.
async fn read_response(tcp: &mut TcpStream) -> (u16, Vec<(String, String)>, String) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    let read_head = tokio::time::timeout(DEADLINE, async {
        while !raw.ends_with(b"\r\n\r\n") {
            assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "closed mid-head");
            raw.push(byte[0]);
        }
    })
    .await;
    assert!(read_head.is_ok(), "no response");
    let head = String::from_utf8(raw).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; length];
    tokio::time::timeout(DEADLINE, tcp.read_exact(&mut body))
        .await
        .unwrap()
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn silent_and_half_sent_connections_are_closed() {
    let server = impatient_server().await;
    let mut silent = TcpStream::connect(server.config.http).await.unwrap();
    let mut half = TcpStream::connect(server.config.http).await.unwrap();
    half.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(until_closed(&mut silent).await.is_empty());
    // No response to a request that never finished (at most a 408 saying so).
    let said = String::from_utf8(until_closed(&mut half).await).unwrap();
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "{said}"
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_ends_its_request_and_connection() {
    let server = impatient_server().await;
    let mut tcp = TcpStream::connect(server.config.http).await.unwrap();
    tcp.write_all(
        b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"user\":",
    )
    .await
    .unwrap();
    let said = String::from_utf8(until_closed(&mut tcp).await).unwrap();
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 400"),
        "{said}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_answer() {
    let server = impatient_server().await;
    let mut tcp = TcpStream::connect(server.config.http).await.unwrap();
    tcp.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = read_response(&mut tcp).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    // The connection was kept alive for a next request, which never comes.
    assert!(until_closed(&mut tcp).await.is_empty());
}

#[tokio::test]
async fn event_streams_and_terminals_stay_open_past_the_idle_timeout() {
    let server = impatient_server().await;
    let _agent = approved_agent(&server, "steady").await;
    let token = server.admin_token.clone();
    let (status, body) = server.start_session("steady", &token).await;
    assert!(status == 201 || status == 200, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    server
        .wait_session(&id, &token, SessionState::Running)
        .await;

    // A terminal WebSocket, attached and quiet.
    let url = format!(
        "ws://{}/api/v1/sessions/{id}/terminal?from=0&cols=80&rows=24",
        server.config.http
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    // The event stream, read past its replay.
    let mut sse = TcpStream::connect(server.config.http).await.unwrap();
    sse.write_all(
        format!(
            "GET /api/v1/events?limit=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut streamed = Vec::new();
    read_until(&mut sse, &mut streamed, "id:").await;

    // An idle connection opened after both is closed: the idle timeout has passed for them.
    let mut idle = TcpStream::connect(server.config.http).await.unwrap();
    idle.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut idle).await;
    until_closed(&mut idle).await;

    // Both still carry traffic.
    let (status, body) = server
        .admin_post("/api/v1/tokens", json!({"ttl_secs": 60, "uses": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    let created = format!("enrollment token {}", body["id"].as_str().unwrap());
    read_until(&mut sse, &mut streamed, &created).await;
    ws.send(Message::Binary(b"echo still-$((40+2))\n".to_vec().into()))
        .await
        .unwrap();
    let mut output = Vec::new();
    let echoed = tokio::time::timeout(DEADLINE, async {
        while !String::from_utf8_lossy(&output).contains("still-42") {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => output.extend_from_slice(&bytes),
                Some(Ok(_)) => {}
                _ => return false,
            }
        }
        true
    })
    .await;
    assert!(
        matches!(echoed, Ok(true)),
        "the terminal went quiet: {:?}",
        String::from_utf8_lossy(&output)
    );
}

async fn read_until(tcp: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) {
    let found = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(seen).contains(needle) {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "never saw {needle:?} in {:?}",
        String::from_utf8_lossy(seen)
    );
}

#[tokio::test]
async fn a_body_announced_too_large_is_refused_before_it_is_sent() {
    let server = TestServer::start().await;
    for path in ["/api/v1/login", "/api/v1/tokens", "/api/v1/nowhere"] {
        let mut tcp = TcpStream::connect(server.config.http).await.unwrap();
        tcp.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: 1000000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let (status, _, body) = read_response(&mut tcp).await;
        assert_eq!(status, 413, "{path}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "body_too_large", "{path}");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let server = TestServer::start().await;
    let url = server.url();
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{url}/api/v1/login"))
        .json(&json!({"user": "admin", "password": server.admin_password}))
        .send()
        .await
        .unwrap();
    let responses = vec![
        ("login", login),
        (
            "API",
            client
                .get(format!("{url}/api/v1/me"))
                .bearer_auth(&server.admin_token)
                .send()
                .await
                .unwrap(),
        ),
        (
            "API error",
            client.get(format!("{url}/api/v1/me")).send().await.unwrap(),
        ),
        (
            "unknown endpoint",
            client
                .get(format!("{url}/api/v1/nowhere"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "wrong method",
            client
                .delete(format!("{url}/api/v1/health"))
                .send()
                .await
                .unwrap(),
        ),
        ("app", client.get(format!("{url}/")).send().await.unwrap()),
        (
            "app asset route",
            client.get(format!("{url}/agents/x")).send().await.unwrap(),
        ),
    ];
    for (what, response) in &responses {
        let h = response.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
        assert_eq!(get("x-frame-options"), "DENY", "{what}");
        assert!(
            get("content-security-policy").contains("frame-ancestors 'none'"),
            "{what}"
        );
    }
    let login = &responses[0].1;
    assert_eq!(login.status(), 200);
    assert!(login.headers().contains_key("set-cookie"));
    assert_eq!(login.headers()["cache-control"], "no-store");
    assert_eq!(responses[2].1.status(), 401);
    assert_eq!(responses[4].1.status(), 405);
}
