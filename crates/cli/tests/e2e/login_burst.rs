//! Logins under a burst, against a real `postern server` process: concurrent wrong passwords
//! for one user are throttled as they arrive (not after they all failed), the server's
//! memory stays flat, and the right password still works once the wait is over.

use futures::future::join_all;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::harness::{eventually, free_port, postern, read_until};

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
