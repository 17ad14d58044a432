//! Logins under a burst, against a real `postern server` process: concurrent wrong passwords
//! for one user are throttled as they arrive (not after they all failed), the server's
//! memory stays flat, and the right password still works once the wait is over. And what a
//! failed login shows: the name tried, to administrators only.

use futures::future::join_all;
use postern_protocol::api::{EventKind, Role};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::harness::{DEADLINE, TestServer, eventually, free_port, postern, read_until};

/// A `postern server` process on loopback with a fresh data dir.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub url: String,
    pub admin_password: String,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http = free_port();
        let mut child = postern()
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path().join("server"))
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--agent-listen", &format!("127.0.0.1:{}", free_port())])
            .args([
                "--tunnel-ports",
                &crate::harness::tunnel_ports().to_string(),
            ])
            .spawn()
            .unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let printed = read_until(&mut stdout, "agent gateway").await;
        let admin_password = printed
            .iter()
            .find_map(|l| l.trim().strip_prefix("password:"))
            .unwrap()
            .trim()
            .to_owned();
        // Keep reading what it prints, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Self {
            child,
            url: format!("http://127.0.0.1:{http}"),
            admin_password,
            _dir: dir,
        }
    }

    /// The process's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

async fn login(client: &reqwest::Client, url: &str, user: &str, password: &str) -> u16 {
    client
        .post(format!("{url}/api/v1/login"))
        .json(&json!({"user": user, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_burst_of_wrong_passwords_is_throttled_and_costs_no_memory() {
    let server = ServerProcess::start().await;
    let client = reqwest::Client::new();
    // One login first, so that "before" includes what any login allocates once.
    assert_eq!(
        login(&client, &server.url, "admin", &server.admin_password).await,
        200
    );
    let before = server.rss_kib();

    let (client_ref, url) = (&client, server.url.as_str());
    let burst = (0..200).map(|i| async move {
        login(client_ref, url, "admin", &format!("wrong-password-{i}")).await
    });
    let statuses = join_all(burst).await;
    let after = server.rss_kib();
    let count = |code: u16| statuses.iter().filter(|s| **s == code).count();
    println!(
        "200 concurrent wrong passwords: {} × 401, {} × 429, {} × 503; server RSS {before} KiB before, {after} KiB after (+{} KiB)",
        count(401),
        count(429),
        count(503),
        after.saturating_sub(before)
    );
    assert_eq!(count(401) + count(429) + count(503), 200, "{statuses:?}");
    assert!(count(429) >= 150, "most must be throttled: {statuses:?}");
    assert!(
        after < before + 200 * 1024,
        "RSS grew from {before} to {after} KiB"
    );

    // The right password works again once the wait is over; refused attempts while
    // waiting do not count as failures.
    eventually("the right password to log in again", || async {
        (login(&client, &server.url, "admin", &server.admin_password).await == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_name_tried_at_a_failed_login_is_shown_to_administrators_only() {
    let server = TestServer::start().await;
    let viewer = server.add_user("vera", Role::Viewer).await;
    let operator = server.add_user("otto", Role::Operator).await;
    // A viewer following the live stream while the login fails.
    let mut live = tokio::net::TcpStream::connect(server.config.http)
        .await
        .unwrap();
    live.write_all(
        format!(
            "GET /api/v1/events?limit=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {viewer}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut streamed = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&streamed).contains("\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, live.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the stream closed");
        streamed.extend_from_slice(&buf[..n]);
    }

    let secret = "hunter2-typed-as-a-name";
    let (status, _) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/login",
            None,
            Some(json!({"user": secret, "password": "whatever-it-was"})),
        )
        .await;
    assert_eq!(status, 401);

    let failed = |events: Vec<postern_protocol::api::EventView>| {
        events
            .into_iter()
            .find(|e| e.kind == EventKind::UserLoginFailed)
            .expect("the failed login is listed")
    };
    let for_admin = failed(server.events().await);
    assert!(for_admin.detail.contains(secret), "{}", for_admin.detail);
    for token in [&viewer, &operator] {
        let shown = failed(server.events_as(token).await);
        assert!(!shown.detail.contains(secret), "{}", shown.detail);
        assert!(shown.detail.contains("failed login"), "{}", shown.detail);
    }

    // The `data:` line of the live event, complete (ended by its newline).
    let data_line = tokio::time::timeout(DEADLINE, async {
        loop {
            let text = String::from_utf8_lossy(&streamed).into_owned();
            if let Some(line) = text
                .split('\n')
                .rev()
                .skip(1)
                .find(|l| l.starts_with("data:") && l.contains("user.login_failed"))
            {
                return line.trim_start_matches("data:").trim().to_owned();
            }
            let n = live.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream closed");
            streamed.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the failed login reaches the live stream");
    let live_event: postern_protocol::api::EventView = serde_json::from_str(&data_line).unwrap();
    assert!(!live_event.detail.contains(secret), "{}", live_event.detail);
    assert!(!String::from_utf8_lossy(&streamed).contains(secret));
}
