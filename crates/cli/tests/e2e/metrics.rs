//! Metrics and health: a scrape after a session's whole life through the real `postern ssh`
//! shows every counter, the histogram and the gauges where they must be; the Grafana
//! dashboard queries only metrics the server exports; `/healthz` and `/readyz` follow a
//! store broken for real under the running server.

use std::collections::{BTreeSet, HashMap};
use std::io::{Seek, SeekFrom, Write};

use postern_protocol::SessionState;
use serde_json::{Value, json};

use crate::harness::{
    TestServer, approved_agent, cli_home, eventually, free_port, postern, read_until, run_cli,
};

async fn metrics_server() -> TestServer {
    TestServer::start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await
}

fn metrics_url(server: &TestServer, path: &str) -> String {
    let addr = server.server().metrics_addr.expect("a metrics listener");
    format!("http://{addr}{path}")
}

async fn scrape(server: &TestServer) -> Scrape {
    let response = reqwest::get(metrics_url(server, "/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    Scrape(response.text().await.unwrap())
}

/// One scrape's text, read by series.
struct Scrape(String);

impl Scrape {
    /// The value of the series written exactly `series` (name and labels), if exported.
    fn value(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
    }

    fn get(&self, series: &str) -> f64 {
        self.value(series)
            .unwrap_or_else(|| panic!("{series} is not exported:\n{}", self.0))
    }

    /// Metric families and their types, from the `# TYPE` lines.
    fn families(&self) -> HashMap<String, String> {
        self.0
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect()
    }
}

#[tokio::test]
async fn a_session_s_whole_life_moves_the_metrics_and_the_dashboard_queries_only_exported_ones() {
    let server = metrics_server().await;
    let before = scrape(&server).await;
    // The harness logged the administrator in once.
    assert_eq!(before.get("postern_logins_total{result=\"success\"}"), 1.0);
    assert_eq!(
        before.get("postern_session_transitions_total{state=\"requested\"}"),
        0.0
    );

    let (status, _) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/login",
            None,
            Some(json!({"user": "admin", "password": "not the password"})),
        )
        .await;
    assert_eq!(status, 401);
    let agent = approved_agent(&server, "metered-device").await;
    let home = cli_home(&server, "admin", &server.admin_password).await;
    let (ok, out, err) = run_cli(
        home.path(),
        &[
            "ssh",
            "-q",
            "metered-device",
            "--",
            "echo",
            "through the tunnel",
        ],
        None,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "through the tunnel\n");
    let (ok, _, err) = run_cli(home.path(), &["sessions", "stop", "metered-device"], None).await;
    assert!(ok, "{err}");

    let ended = "postern_sessions_ended_total{state=\"stopped\",reason=\"stopped_by_user\"}";
    let after = eventually("the stopped session in the metrics", || async {
        let s = scrape(&server).await;
        (s.value(ended) == Some(1.0)).then_some(s)
    })
    .await;
    for state in ["requested", "starting", "running", "stopping", "stopped"] {
        let series = format!("postern_session_transitions_total{{state=\"{state}\"}}");
        assert_eq!(after.get(&series), 1.0, "{series}");
    }
    assert_eq!(
        after.get("postern_session_transitions_total{state=\"failed\"}"),
        0.0
    );
    assert_eq!(
        after.get("postern_session_time_to_running_seconds_count"),
        1.0
    );
    assert_eq!(
        after.get("postern_session_time_to_running_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    assert!(after.get("postern_session_time_to_running_seconds_sum") > 0.0);
    assert!(after.get("postern_certificates_issued_total") >= 1.0);
    assert_eq!(after.get("postern_logins_total{result=\"success\"}"), 2.0);
    assert_eq!(after.get("postern_logins_total{result=\"failure\"}"), 1.0);
    assert_eq!(after.get("postern_links_opened_total"), 1.0);
    assert!(after.get("postern_tunnel_bytes_total{direction=\"to_agent\"}") > 0.0);
    assert!(after.get("postern_tunnel_bytes_total{direction=\"from_agent\"}") > 0.0);
    for series in [
        "{route=\"/api/v1/agents/{agent}/sessions\",method=\"POST\",status=\"201\"}",
        "{route=\"/api/v1/sessions/{id}/certificate\",method=\"POST\",status=\"200\"}",
        "{route=\"/api/v1/sessions/{id}/stream\",method=\"GET\",status=\"101\"}",
        "{route=\"/api/v1/login\",method=\"POST\",status=\"401\"}",
    ] {
        let series = format!("postern_http_requests_total{series}");
        assert!(after.get(&series) >= 1.0, "{series}");
    }
    // Gauges: read from the state, so they are back where they were.
    assert_eq!(after.get("postern_sessions{state=\"running\"}"), 0.0);
    assert_eq!(after.get("postern_tunnel_ports_in_use"), 0.0);
    assert_eq!(after.get("postern_agents{status=\"approved\"}"), 1.0);
    assert_eq!(
        after.get("postern_agents_connected{liveness=\"responding\"}"),
        1.0
    );
    assert_eq!(after.get("postern_store_up"), 1.0);
    // No agent, user or session names a series.
    let sessions = server.events().await;
    for event in sessions.iter().filter_map(|e| e.session.as_ref()) {
        assert!(
            !after.0.contains(event.id.as_str()),
            "a session id in:\n{}",
            after.0
        );
    }
    assert!(!after.0.contains("metered-device"), "{}", after.0);
    assert!(!after.0.contains("admin"), "{}", after.0);

    // The agent goes: its link is counted closed, and the gauge follows.
    let mut agent = agent;
    agent.stop().await;
    let gone = eventually("the agent's link closed in the metrics", || async {
        let s = scrape(&server).await;
        (s.value("postern_links_closed_total{reason=\"closed\"}") == Some(1.0)).then_some(s)
    })
    .await;
    assert_eq!(
        gone.get("postern_agents_connected{liveness=\"responding\"}"),
        0.0
    );

    // Every metric the dashboard queries is one of these.
    let exported = after.families();
    let dashboard =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let queried = queried_metrics(&dashboard);
    assert!(queried.len() >= 10, "{queried:?}");
    for name in &queried {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| exported.get(*base).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(
            exported.contains_key(family),
            "the dashboard queries {name}, which the server does not export"
        );
    }
}

/// The metric names in every panel's expressions.
fn queried_metrics(dashboard: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("postern_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
    }
    names
}

async fn status_and_body(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Health on both listeners: (healthz, readyz) statuses, each the same on both.
async fn health(server: &TestServer) -> (u16, (u16, Value)) {
    let (alive, _) = status_and_body(&format!("{}/healthz", server.url())).await;
    let (alive_m, _) = status_and_body(&metrics_url(server, "/healthz")).await;
    assert_eq!(alive, alive_m);
    let ready = status_and_body(&format!("{}/readyz", server.url())).await;
    let ready_m = status_and_body(&metrics_url(server, "/readyz")).await;
    assert_eq!(ready.0, ready_m.0, "{} / {}", ready.1, ready_m.1);
    (alive, ready)
}

#[tokio::test]
async fn readiness_follows_the_store_and_liveness_does_not() {
    let server = metrics_server().await;
    let (alive, (ready, body)) = health(&server).await;
    assert_eq!((alive, ready), (200, 200), "{body}");
    assert_eq!(body, json!({"status": "ready"}));

    // Break the store under the server, for real: every committed page into the database
    // file (a second connection's checkpoint, which also tells the server's connections to
    // read the file again), then the file overwritten with zeros in place.
    let db = server.data_dir().join("postern.db");
    let url = format!("sqlite://{}", db.display());
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let saved = std::fs::read(&db).unwrap();
    let mut file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.write_all(&vec![0u8; saved.len()]).unwrap();
    file.sync_all().unwrap();

    let body = eventually("readiness to fail with the store", || async {
        let (alive, (ready, body)) = health(&server).await;
        assert_eq!(alive, 200, "liveness does not ask the store");
        (ready == 503).then_some(body)
    })
    .await;
    assert_eq!(body["error"], "not_ready", "{body}");
    assert_eq!(body["message"], "the store does not answer", "{body}");
    let scraped = scrape(&server).await;
    assert_eq!(scraped.get("postern_store_up"), 0.0);
    assert_eq!(
        scraped.value("postern_agents{status=\"approved\"}"),
        None,
        "no stale gauge"
    );
    assert_eq!(
        scraped.get("postern_agents_connected{liveness=\"responding\"}"),
        0.0
    );

    // Mended: the file written back, and one write through a second connection (the same
    // header value again) so that the server's connections drop the pages they cached from
    // the broken file, as after any other connection's commit.
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&saved).unwrap();
    file.sync_all().unwrap();
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&pool)
            .await
            .unwrap();
        sqlx::query(&format!("PRAGMA user_version = {version}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    eventually("readiness to come back with the store", || async {
        (health(&server).await.1.0 == 200).then_some(())
    })
    .await;
    assert_eq!(scrape(&server).await.get("postern_store_up"), 1.0);
}

#[tokio::test]
async fn the_server_binary_serves_metrics_on_the_flag_s_address_only() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let (http, agents, metrics) = (free_port(), free_port(), free_port());
    let mut child = postern()
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--agent-listen", &format!("127.0.0.1:{agents}")])
        .env("POSTERN_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let out = read_until(&mut stdout, "metrics:").await.join("\n");
    assert!(
        out.contains(&format!("http://127.0.0.1:{metrics}/metrics")),
        "{out}"
    );
    let scraped = reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = scraped.text().await.unwrap();
    assert!(text.contains("\npostern_store_up 1\n"), "{text}");
    let ready = reqwest::get(format!("http://127.0.0.1:{metrics}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // The main listener has no metrics (the path is one of the app's pages there).
    let main = reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!main.contains("postern_"), "{main}");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn an_exhausted_port_range_counts_a_refused_forward_and_a_failed_session() {
    let port = crate::harness::tunnel_ports().first;
    let server = TestServer::start_with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tunnel_ports = postern_server::config::PortRange {
            first: port,
            last: port,
        };
    })
    .await;
    let _a = approved_agent(&server, "first").await;
    let _b = approved_agent(&server, "second").await;
    let token = server.admin_token.clone();
    let (_, one) = server.start_session("first", &token).await;
    let one = one["id"].as_str().unwrap();
    server
        .wait_session(one, &token, SessionState::Running)
        .await;
    let (_, two) = server.start_session("second", &token).await;
    let two = two["id"].as_str().unwrap();
    server.wait_session(two, &token, SessionState::Failed).await;

    let s = scrape(&server).await;
    assert_eq!(
        s.get("postern_tunnel_forwards_refused_total{reason=\"no_free_port\"}"),
        1.0
    );
    assert_eq!(
        s.get("postern_tunnel_forwards_refused_total{reason=\"not_allowed\"}"),
        0.0
    );
    assert_eq!(
        s.get("postern_sessions_ended_total{state=\"failed\",reason=\"no_free_port\"}"),
        1.0
    );
    assert_eq!(s.get("postern_tunnel_ports_in_use"), 1.0);
    assert_eq!(s.get("postern_tunnel_ports_capacity"), 1.0);
    assert_eq!(s.get("postern_sessions{state=\"running\"}"), 1.0);
    assert_eq!(s.get("postern_session_time_to_running_seconds_count"), 1.0);
}
