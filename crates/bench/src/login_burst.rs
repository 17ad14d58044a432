//! Login burst: 200 wrong-password logins for one user from one address, sent at once to a
//! fresh server of its own; the server's resident memory before and after (and its peak),
//! and how the answers split between 401 (checked), 429 (throttled) and 503 (no slot free to
//! check a password). No target: the figure shows that memory stays flat.

use std::path::Path;

use anyhow::Result;
use serde_json::json;
use tokio::task::JoinSet;

use crate::postern::{Binaries, Deployment};
use crate::procfs;
use crate::report::Figure;

pub const ATTEMPTS: usize = 200;

pub async fn measure(bins: &Binaries, dir: &Path) -> Result<Vec<Figure>> {
    // Its deployment logged in twice already: "before" includes what a login allocates once.
    let deployment = Deployment::start(bins, dir, "burst").await?;
    let pid = deployment.server.pid();
    let before = procfs::rss_kib(pid)?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("{}/api/v1/login", deployment.server.base_url());
    let mut burst = JoinSet::new();
    for i in 0..ATTEMPTS {
        let request = client
            .post(&url)
            .json(&json!({"user": "admin", "password": format!("wrong-password-{i}")}));
        burst.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
    }
    let mut statuses = Vec::with_capacity(ATTEMPTS);
    while let Some(joined) = burst.join_next().await {
        statuses.push(joined??);
    }
    let after = procfs::rss_kib(pid)?;
    let peak = procfs::peak_rss_kib(pid)?;
    let count = |code: u16| statuses.iter().filter(|s| **s == code).count();
    let details = json!({
        "attempts": ATTEMPTS,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "peak_rss_kib": peak,
        "answered_401": count(401),
        "answered_429": count(429),
        "answered_503": count(503),
        "answered_other": ATTEMPTS - count(401) - count(429) - count(503),
    });
    eprintln!(
        "  {ATTEMPTS} wrong logins at once: {} × 401, {} × 429, {} × 503; server RSS {before} → {after} KiB (peak {peak})",
        count(401),
        count(429),
        count(503)
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(vec![
        Figure::new(
            "login_burst.rss_before",
            "server RSS before 200 concurrent wrong logins",
            "MiB",
        )
        .postern(mib(before))
        .details(details.clone())
        .judged(),
        Figure::new(
            "login_burst.rss_after",
            "server RSS after 200 concurrent wrong logins",
            "MiB",
        )
        .postern(mib(after))
        .details(details.clone())
        .judged(),
        Figure::new(
            "login_burst.throttled",
            "of 200 concurrent wrong logins, answered 429 at once",
            "requests",
        )
        .postern(count(429) as f64)
        .details(details)
        .judged(),
    ])
}
