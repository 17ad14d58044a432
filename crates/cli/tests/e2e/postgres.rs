//! PostgreSQL under a real server: a database that cannot be opened stops the start with
//! the reason, `admin add-user --database` writes to it, and an outage under a running server
//! answers a clear 503 and ends by itself when PostgreSQL is back. Each test runs a throwaway
//! cluster of its own (scripts/test-postgres), which it can stop and start.

use std::path::PathBuf;

use postern_protocol::api::Role;
use reqwest::Method;
use sqlx::Connection;

use crate::cluster::Cluster;
use crate::harness::{TestServer, eventually, postern, run_cli};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-postgres")
}

/// A PostgreSQL cluster of one test's own, removed when dropped.
struct OwnCluster {
    dir: String,
    /// The server URL, database `postgres`, with the password.
    url: String,
}

impl OwnCluster {
    /// `None` (skipped, said) where the tests' PostgreSQL is not set up, as the store
    /// conformance suite decides (a failure under CI).
    async fn start() -> Option<Self> {
        postern_server::store::postgres_testing::server()?;
        let out = Self::script(&["start"]).await;
        let (dir, url) = out.trim().split_once(' ').expect("DIR URL");
        Some(Self {
            dir: dir.into(),
            url: url.into(),
        })
    }

    async fn script(args: &[&str]) -> String {
        let out = tokio::process::Command::new(script())
            .args(args)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "scripts/test-postgres {args:?}: {err}"
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// PostgreSQL stops (fast shutdown: every connection is cut).
    async fn pause(&self) {
        Self::script(&["pause", &self.dir]).await;
    }

    async fn resume(&self) {
        Self::script(&["resume", &self.dir]).await;
    }

    /// The URL with `password` and `database` in place of the real ones.
    fn url_with(&self, password: &str, database: &str) -> String {
        let (user_pass, rest) = self.url.split_once('@').unwrap();
        let user = user_pass.rsplit_once(':').unwrap().0;
        let host = rest.split_once('/').unwrap().0;
        format!("{user}:{password}@{host}/{database}")
    }

    fn password(&self) -> &str {
        let user_pass = self.url.split_once('@').unwrap().0;
        user_pass.rsplit_once(':').unwrap().1
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script())
            .args(["stop", &self.dir])
            .status();
    }
}

/// `postern server` on `database`: exits, and says why on stderr.
async fn server_refuses(database: &str) -> String {
    let data = tempfile::tempdir().unwrap();
    let out = postern()
        .args(["server", "--data-dir"])
        .arg(data.path())
        .args(["--http", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
        .env("POSTERN_DATABASE", database)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "the server started on {database}");
    String::from_utf8(out.stderr).unwrap()
}

#[tokio::test]
async fn a_server_that_cannot_open_postgres_exits_saying_why() {
    let Some(pg) = OwnCluster::start().await else {
        return;
    };
    let secret = pg.password().to_owned();

    let wrong = server_refuses(&pg.url_with("not-the-password", "postgres")).await;
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    let missing = server_refuses(&pg.url_with(&secret, "nothing_here")).await;
    assert!(
        missing.contains("database \"nothing_here\" does not exist"),
        "{missing}"
    );
    pg.pause().await;
    let down = server_refuses(&pg.url).await;
    assert!(down.contains("Connection refused"), "{down}");
    for err in [&wrong, &missing, &down] {
        assert!(err.contains("PostgreSQL at postern@127.0.0.1:"), "{err}");
        assert!(!err.contains(&secret), "the password is never shown: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// An outage under a running server: not ready, and requests answered 503 with a clear error,
/// while PostgreSQL is down; ready and answering again once it is back, with no restart.
#[tokio::test]
async fn a_server_rides_out_a_postgres_outage() {
    let Some(pg) = OwnCluster::start().await else {
        return;
    };
    let url = pg.url.clone();
    let server = TestServer::start_with(move |c| {
        c.database = Some(url);
        // A request during the outage fails after this wait for a connection.
        c.database_acquire_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let token = server.add_user("ops", Role::Admin).await;
    let readyz = || async {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
            .get(format!("{}/readyz", server.url()))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(readyz().await, 200);

    pg.pause().await;
    eventually("/readyz to say not ready", || async {
        (readyz().await == 503).then_some(())
    })
    .await;
    let (status, body) = server
        .call(Method::GET, "/api/v1/agents", Some(&token), None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "storage_unavailable", "{body}");

    pg.resume().await;
    eventually("/readyz to say ready again", || async {
        (readyz().await == 200).then_some(())
    })
    .await;
    let (status, body) = server
        .call(Method::GET, "/api/v1/agents", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
}

/// `postern admin add-user --database` adds the user to the database the nodes share, with
/// no data directory; a node of that database logs the user in.
#[tokio::test]
async fn admin_add_user_writes_to_the_database_given() {
    let cluster = Cluster::start(1).await;
    let home = tempfile::tempdir().unwrap();
    let (ok, out, err) = run_cli(
        home.path(),
        &[
            "admin",
            "add-user",
            "--database",
            &cluster.database,
            "nina",
            "--role",
            "viewer",
        ],
        Some("nina-secret-pw\n"),
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("added user nina (viewer)"), "{out}");
    cluster.nodes[0].login("nina", "nina-secret-pw").await;
}

/// PostgreSQL over TLS: with its certificate verified (`sslmode=verify-full` and the
/// cluster's own CA file) the server starts and every connection it holds is encrypted; a
/// certificate it cannot verify stops the start, saying why.
#[tokio::test]
async fn a_server_reaches_postgres_over_verified_tls_and_refuses_an_unverified_certificate() {
    let Some(pg) = OwnCluster::start().await else {
        return;
    };
    let verified = format!(
        "{}?sslmode=verify-full&sslrootcert={}/ca.crt",
        pg.url, pg.dir
    );
    let url = verified.clone();
    let server = TestServer::start_with(move |c| c.database = Some(url)).await;
    let token = server.add_user("tess", Role::Admin).await;
    let (status, body) = server
        .call(Method::GET, "/api/v1/agents", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    // PostgreSQL's own view of the server's connections (not this one's).
    let mut watcher = sqlx::postgres::PgConnection::connect(&verified)
        .await
        .unwrap();
    let (tls, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.usename = 'postern' AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&mut watcher)
    .await
    .unwrap();
    assert!(tls >= 1 && plain == 0, "TLS {tls}, plain {plain}");

    // A CA that did not sign the cluster's certificate.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), other.cert.pem()).unwrap();
    let unverified = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url,
        ca.path().display()
    );
    let err = server_refuses(&unverified).await;
    assert!(err.contains("PostgreSQL at postern@127.0.0.1:"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains(pg.password()), "{err}");
}
