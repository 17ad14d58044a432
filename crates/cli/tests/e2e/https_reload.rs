//! A certificate from files replaced while a web terminal is open over wss and an agent is
//! connected — by a renewal tool's rename (picked up by polling), then with SIGHUP, then with a
//! bad file (logged, the old certificate kept): the terminal and the agent stay, new
//! handshakes get the new certificate. A server with no certificate files takes SIGHUP too:
//! nothing to reload, logged, and it keeps serving. The server is a real process (SIGHUP is
//! process-wide).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use postern_agent::{Agent, AgentOptions};
use postern_protocol::api::EventKind;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{DEADLINE, approved, eventually, parse_sse, run_cli, wait_agent_state};
use crate::tls_support::{ServerProcess, TestCa, presented, reqwest_trusting, trusting};

type Terminal =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Types `keys` and reads the terminal until `needle` shows.
async fn echo(ws: &mut Terminal, keys: &str, needle: &str) {
    ws.send(Message::Binary(keys.as_bytes().to_vec().into()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => seen.extend_from_slice(&bytes),
                Some(Ok(_)) => {}
                _ => return false,
            }
        }
        true
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "the terminal did not show {needle:?}: {:?}",
        String::from_utf8_lossy(&seen)
    );
}

/// Sends SIGHUP to the server process.
async fn hangup(server: &ServerProcess) {
    let pid = server.child.id().unwrap().to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
}

#[tokio::test]
async fn sighup_without_certificate_files_is_logged_once_and_the_server_keeps_serving() {
    // Plain HTTP, and HTTPS with the self-signed certificate (not reloaded: it is the server's).
    for args in [&[][..], &["--https"]] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = ServerProcess::start(&dir.path().join("server"), args).await;
        let http = match server.tls_fingerprint {
            Some(_) => reqwest_trusting(
                &std::fs::read_to_string(
                    server.data_dir.join(postern_server::tls::SELF_SIGNED_CERT),
                )
                .unwrap(),
            ),
            None => reqwest::Client::new(),
        };
        for _ in 0..2 {
            hangup(&server).await;
            server.wait_log("nothing to reload").await;
            let health = http
                .get(format!("{}/api/v1/health", server.client_url()))
                .send()
                .await
                .unwrap();
            assert_eq!(health.status(), 200, "{args:?}");
        }
        assert!(server.child.try_wait().unwrap().is_none(), "{args:?}");
        // Everything it logged, to the end: one line per signal.
        server.child.kill().await.unwrap();
        let mut told = 2;
        while let Ok(Some(line)) = server.log.next_line().await {
            told += usize::from(line.contains("nothing to reload"));
        }
        assert_eq!(told, 2, "{args:?}");
    }
}

#[tokio::test]
async fn a_renewed_certificate_keeps_terminals_and_agents_and_new_handshakes_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let cert = dir.path().join("fullchain.pem");
    let key = dir.path().join("privkey.pem");
    let first = ca.issue();
    first.install(&cert, &key);
    let mut server = ServerProcess::start(
        &dir.path().join("server"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(server.tls_fingerprint, Some(first.fingerprint.clone()));
    let url = server.client_url();
    let http = reqwest_trusting(&ca.pem);

    // Log in, approve an agent with a token, open a session and its web terminal over wss.
    let login: serde_json::Value = http
        .post(format!("{url}/api/v1/login"))
        .json(&serde_json::json!({"user": "admin", "password": server.admin_password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{url}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let created: serde_json::Value = post(
        "/api/v1/tokens",
        serde_json::json!({"ttl_secs": 600, "uses": 1}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let mut options = AgentOptions::new(server.agent_addr.to_string(), dir.path().join("agent"));
    options.name = Some("renewed".into());
    options.token = Some(created["token"].as_str().unwrap().parse().unwrap());
    let agent = Agent::start(options).unwrap();
    wait_agent_state(&agent, "approved", approved).await;
    let session: serde_json::Value = post("/api/v1/agents/renewed/sessions", serde_json::json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["id"].as_str().unwrap().to_owned();
    eventually("the session to run", || async {
        let view: serde_json::Value = http
            .get(format!("{url}/api/v1/sessions/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (view["state"] == "running").then_some(())
    })
    .await;
    let mut request = format!(
        "wss://{}/api/v1/sessions/{id}/terminal?from=0&cols=80&rows=24",
        server.http_addr
    )
    .into_client_request()
    .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(trusting(&ca.pem))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut terminal, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    echo(&mut terminal, "echo one-$((40+1))\n", "one-41").await;
    // A CLI that trusts the CA (not one certificate) logs in now and keeps working after.
    let home = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let password = format!("{}\n", server.admin_password.clone().unwrap());
    let login = [
        "login",
        "--server",
        &url,
        "--user",
        "admin",
        "--password-stdin",
        "--ca-cert",
        ca_file.to_str().unwrap(),
    ];
    let (ok, _, err) = run_cli(home.path(), &login, Some(&password)).await;
    assert!(ok, "{err}");

    // A renewal tool renames new files into place: new handshakes get the new certificate.
    let second = ca.issue();
    second.install(&cert, &key);
    eventually("the renewed certificate in new handshakes", || async {
        (presented(server.http_addr).await.as_deref() == Some(&second.fingerprint)).then_some(())
    })
    .await;
    echo(&mut terminal, "echo two-$((40+2))\n", "two-42").await;

    // SIGHUP loads them at once.
    let third = ca.issue();
    third.install(&cert, &key);
    hangup(&server).await;
    eventually("the certificate loaded on SIGHUP", || async {
        (presented(server.http_addr).await.as_deref() == Some(&third.fingerprint)).then_some(())
    })
    .await;

    // A bad file is logged and the certificate in service kept.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    hangup(&server).await;
    server.wait_log("do not load").await;
    assert_eq!(
        presented(server.http_addr).await,
        Some(third.fingerprint.clone())
    );

    // Through it all: the terminal kept its connection, the agent its link.
    echo(&mut terminal, "echo three-$((40+3))\n", "three-43").await;
    assert!(agent.state().borrow().connected);
    let events = http
        .get(format!("{url}/api/v1/events?after=0&follow=false"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let offline = parse_sse(&events)
        .into_iter()
        .filter(|e| e.kind == EventKind::AgentOffline)
        .count();
    assert_eq!(offline, 0, "the agent's link dropped");
    // The login made before the renewals still works on a new connection.
    let me = http
        .get(format!("{url}/api/v1/me"))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let (ok, out, err) = run_cli(home.path(), &["agents"], None).await;
    assert!(ok && out.contains("renewed"), "{out}{err}");

    drop(terminal);
    agent.shutdown().await.unwrap();
    server.stop().await;
}
