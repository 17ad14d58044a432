//! HTTPS end to end: the self-signed certificate pinned by the CLI on login and a changed one
//! refused by every command; HTTPS on any non-loopback address unless `--insecure-http`; and
//! the login cookie's `Secure` and the HSTS header over HTTPS only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::{TestServer, approved_agent, run_cli};
use crate::tls_support::{ServerProcess, presented};

async fn login(server: &TestServer, home: &Path, extra: &[&str]) -> (bool, String, String) {
    let url = server.url();
    let mut args = vec![
        "login",
        "--server",
        &url,
        "--user",
        "admin",
        "--password-stdin",
    ];
    args.extend_from_slice(extra);
    let password = format!("{}\n", server.admin_password);
    run_cli(home, &args, Some(&password)).await
}

#[tokio::test]
async fn the_cli_pins_a_self_signed_certificate_and_refuses_a_changed_one() {
    let mut server = TestServer::start_with(|c| c.https = true).await;
    assert_eq!(server.scheme, "https");
    let fingerprint = server.server().tls_fingerprint.clone().unwrap();
    let _agent = approved_agent(&server, "pinned").await;
    let home = tempfile::tempdir().unwrap();

    // No terminal to ask on and nothing to go by: refused before the password is sent,
    // naming the fingerprint to check.
    let (ok, _, err) = login(&server, home.path(), &[]).await;
    assert!(!ok);
    assert!(
        err.contains(&fingerprint) && err.contains("--fingerprint"),
        "{err}"
    );
    assert!(!home.path().join("credentials.json").exists());

    // A wrong --fingerprint on a first login is a mismatch with what was given, not a change:
    // refused before the password is sent, showing both.
    let wrong = format!("SHA256:{}", "A".repeat(43));
    let (ok, _, err) = login(&server, home.path(), &["--fingerprint", &wrong]).await;
    assert!(!ok);
    assert!(
        err.contains("does not match the fingerprint given")
            && err.contains(&wrong)
            && err.contains(&fingerprint)
            && !err.contains("HAS CHANGED"),
        "{err}"
    );
    assert!(!home.path().join("credentials.json").exists());

    let (ok, out, err) = login(&server, home.path(), &["--fingerprint", &fingerprint]).await;
    assert!(ok, "{err}");
    assert!(out.contains("logged in to https://"), "{out}");
    let kept = std::fs::read_to_string(home.path().join("credentials.json")).unwrap();
    assert!(kept.contains(&fingerprint), "{kept}");

    // Every command goes through the pin: the API, the event stream, the data path (wss).
    let (ok, out, err) = run_cli(home.path(), &["agents"], None).await;
    assert!(ok && out.contains("pinned"), "{out}{err}");
    let (ok, _, err) = run_cli(home.path(), &["events", "--limit", "1"], None).await;
    assert!(ok, "{err}");
    let (ok, out, err) = run_cli(
        home.path(),
        &["ssh", "-q", "pinned", "--", "echo", "over-wss-$((6*7))"],
        None,
    )
    .await;
    assert!(ok && out.contains("over-wss-42"), "{out}{err}");

    // The server comes back with another certificate: every command refuses it, naming both
    // fingerprints, and sends nothing.
    let dir = server.data_dir().to_owned();
    std::fs::remove_file(dir.join(postern_server::tls::SELF_SIGNED_CERT)).unwrap();
    std::fs::remove_file(dir.join(postern_server::tls::SELF_SIGNED_KEY)).unwrap();
    server.restart().await;
    let changed = server.server().tls_fingerprint.clone().unwrap();
    assert_ne!(changed, fingerprint);
    for args in [
        &["agents"][..],
        &["events", "--follow"],
        &["ssh", "pinned", "--", "true"],
        &["proxy", "pinned"],
    ] {
        let (ok, _, err) = run_cli(home.path(), args, None).await;
        assert!(!ok, "{args:?} went through a changed certificate");
        assert!(
            err.contains("HAS CHANGED") && err.contains(&fingerprint) && err.contains(&changed),
            "{args:?}: {err}"
        );
    }
    // Logging in again keeps the pin: still refused, not asked about.
    let (ok, _, err) = login(&server, home.path(), &[]).await;
    assert!(!ok && err.contains("HAS CHANGED"), "{err}");
    // Once the administrator confirms the new fingerprint, it is pinned instead.
    let (ok, _, err) = login(&server, home.path(), &["--fingerprint", &changed]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = run_cli(home.path(), &["agents"], None).await;
    assert!(ok && out.contains("pinned"), "{out}{err}");
}

#[tokio::test]
async fn the_cookie_is_secure_and_hsts_is_sent_over_https_only() {
    for https in [true, false] {
        let server = TestServer::start_with(|c| c.https = https).await;
        let response = server
            .http
            .post(format!("{}/api/v1/login", server.url()))
            .json(&serde_json::json!({"user": "admin", "password": server.admin_password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let cookie = response.headers()["set-cookie"].to_str().unwrap();
        assert_eq!(cookie.contains("; Secure"), https, "{cookie}");
        for path in ["/api/v1/health", "/", "/api/v1/nothing"] {
            let response = server
                .http
                .get(format!("{}{path}", server.url()))
                .send()
                .await
                .unwrap();
            let hsts = response.headers().get("strict-transport-security");
            assert_eq!(hsts.is_some(), https, "{path}: {hsts:?}");
            if let Some(value) = hsts {
                assert_eq!(value, "max-age=31536000");
            }
            // The other security headers stay.
            assert_eq!(response.headers()["x-frame-options"], "DENY");
        }
    }
}

#[tokio::test]
async fn a_non_loopback_address_gets_https_unless_insecure_http_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("a"), &["--http", "0.0.0.0:0"]).await;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let fingerprint = server
        .tls_fingerprint
        .clone()
        .expect("no fingerprint printed");
    assert_eq!(presented(server.http_addr).await, Some(fingerprint.clone()));
    let key = server.data_dir.join(postern_server::tls::SELF_SIGNED_KEY);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No plain HTTP on that port.
    let plain = format!("http://{}/api/v1/health", server.http_addr);
    assert!(reqwest::get(&plain).await.is_err());
    server.stop().await;

    // The same certificate on the next start: what a CLI pinned stays valid.
    let again = ServerProcess::start(&dir.path().join("a"), &["--http", "0.0.0.0:0"]).await;
    assert_eq!(again.tls_fingerprint, Some(fingerprint));
    again.stop().await;

    let insecure = ServerProcess::start(
        &dir.path().join("b"),
        &["--http", "0.0.0.0:0", "--insecure-http"],
    )
    .await;
    assert!(insecure.url.starts_with("http://"), "{}", insecure.url);
    assert_eq!(insecure.tls_fingerprint, None);
    let response = reqwest::get(format!("{}/api/v1/health", insecure.client_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
    insecure.stop().await;

    // Settings that contradict each other are refused before anything starts.
    let data = dir.path().join("c");
    let data = data.to_str().unwrap();
    for (args, needle) in [
        (vec!["--insecure-http", "--https"], "insecure_http"),
        (vec!["--acme-domain", "postern.example.com"], "acme_contact"),
        (
            vec!["--acme-domain", "1.2.3.4", "--acme-contact", "a@b.c"],
            "DNS name",
        ),
    ] {
        let mut all = vec!["server", "--data-dir", data];
        all.extend(args.iter().copied());
        let (ok, _, err) = run_cli(dir.path(), &all, None).await;
        assert!(!ok && err.contains(needle), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| {
        c.https = true;
        c.http_header_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    // Silent from the start, and silent after the first bytes of a ClientHello.
    for sent in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]] {
        let mut tcp = tokio::net::TcpStream::connect(server.config.http)
            .await
            .unwrap();
        tcp.write_all(sent).await.unwrap();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(crate::harness::DEADLINE, async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a stalled handshake ({sent:?}) was kept open"
        );
    }
    // A real client still gets through.
    let (status, _) = server
        .call(reqwest::Method::GET, "/api/v1/health", None, None)
        .await;
    assert_eq!(status, 200);
}

/// Reads the PTY until `needle` shows up.
async fn pty_until(pty: &mut pty_process::Pty, needle: &str, seen: &mut String) {
    use tokio::io::AsyncReadExt;
    let found = tokio::time::timeout(crate::harness::DEADLINE, async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = pty.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        true
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "never saw {needle:?} in {seen:?}"
    );
}

#[tokio::test]
async fn on_a_terminal_login_shows_the_fingerprint_and_asks_once() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(|c| c.https = true).await;
    let fingerprint = server.server().tls_fingerprint.clone().unwrap();
    let home = tempfile::tempdir().unwrap();
    for answer in ["no", "yes"] {
        let (mut pty, pts) = pty_process::open().unwrap();
        let url = server.url();
        let mut child = pty_process::Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(["login", "--server", &url, "--user", "admin"])
            .env("POSTERN_HOME", home.path())
            .kill_on_drop(true)
            .spawn(pts)
            .unwrap();
        let mut seen = String::new();
        pty_until(&mut pty, &fingerprint, &mut seen).await;
        pty_until(&mut pty, "Trust this certificate? [y/N]", &mut seen).await;
        pty.write_all(format!("{answer}\n").as_bytes())
            .await
            .unwrap();
        if answer == "yes" {
            pty_until(&mut pty, "Password:", &mut seen).await;
            pty.write_all(format!("{}\n", server.admin_password).as_bytes())
                .await
                .unwrap();
            pty_until(&mut pty, "logged in to", &mut seen).await;
        } else {
            pty_until(&mut pty, "not trusted", &mut seen).await;
        }
        let status = tokio::time::timeout(crate::harness::DEADLINE, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.success(), answer == "yes", "{seen}");
    }
    // Pinned: later commands and logins do not ask again.
    let (ok, out, err) = run_cli(home.path(), &["agents"], None).await;
    assert!(ok, "{out}{err}");
    let (ok, _, err) = login(&server, home.path(), &[]).await;
    assert!(ok, "{err}");
}
