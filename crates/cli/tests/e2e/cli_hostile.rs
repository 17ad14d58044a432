//! The real `postern` binary against small fake servers this test starts on loopback — silent,
//! endless, HTML, JSON of another shape, an event stream that only keeps alive — each ending
//! in one clear line and a non-zero exit, never a hang or a process that grows without bound.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use std::process::Stdio;

use crate::harness::{DEADLINE, postern, run_cli};

/// What the fake server does with every request.
#[derive(Clone, Copy)]
enum Fake {
    /// Takes the connection and the request, never answers.
    Silent,
    /// 200 with a JSON array that never ends.
    EndlessJson,
    /// 200 `text/event-stream` whose one event never ends.
    EndlessEvent,
    /// 200 `text/html`: a web server's page, not Postern.
    Html,
    /// 200 JSON, but not the shape Postern answers.
    OtherJson,
    /// 200 `text/event-stream`, whose event is not a Postern event.
    OtherEvent,
    /// 200 `text/event-stream` that sends its headers and then nothing.
    SilentStream,
    /// 200 `text/event-stream`: keepalive comments for a while (longer than the CLI's wait),
    /// then one real event, then the end.
    KeepaliveThenEvent,
    /// Postern's shapes, with terminal escapes and forged lines in every string.
    HostileText,
}

/// Most any fake writes, so that it stops by itself whatever the client does.
const FAKE_WRITE_CAP: usize = 256 << 20;

const EVENT: &str =
    r#"{"id":7,"time":1767225600000,"kind":"user.login","actor":"kim","detail":"logged in"}"#;

/// Reads the request's head; its path.
async fn read_request(tcp: &mut TcpStream) -> String {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65_536 {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request);
    head.split(' ').nth(1).unwrap_or_default().to_owned()
}

/// Clears the screen, sets the window title, and starts a forged line.
const HOSTILE: &str =
    "\u{1b}[2J\u{1b}]0;owned\u{7}\r\n2026-01-01T00:00:00Z  agent.approved  evil  alice\u{9b}31m";

/// Postern-shaped answers whose every string is hostile.
fn hostile_body(path: &str) -> (&'static str, String) {
    let agent = serde_json::json!({"id": "a1", "name": HOSTILE, "did": HOSTILE});
    if path.starts_with("/api/v1/events") {
        let event = serde_json::json!({
            "id": 1, "time": 1767225600000i64, "kind": "session.state", "actor": HOSTILE,
            "agent": agent, "detail": HOSTILE,
        });
        ("text/event-stream", format!("id: 1\ndata: {event}\n\n"))
    } else {
        let session = serde_json::json!({
            "id": "0123456789abcdef0123456789abcdef", "agent": agent, "user": HOSTILE,
            "state": "failed", "reason": HOSTILE, "created_at": 0, "updated_at": 0,
        });
        ("application/json", serde_json::json!([session]).to_string())
    }
}

fn head(content_type: &str) -> String {
    format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n")
}

async fn endless(tcp: &mut TcpStream, head: &str, repeat: &[u8]) {
    if tcp.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let block = repeat.repeat(64 * 1024 / repeat.len());
    let mut written = 0;
    while written < FAKE_WRITE_CAP && tcp.write_all(&block).await.is_ok() {
        written += block.len();
    }
}

/// `run_cli` with `POSTERN_TIMEOUT=1s`.
async fn run_waiting_1s(home: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = postern();
    cmd.env("POSTERN_HOME", home)
        .env("POSTERN_TIMEOUT", "1s")
        .args(args)
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // A command that does not read its input: a broken pipe is not the test's failure.
    let _ = pipe.write_all(stdin.unwrap_or_default().as_bytes()).await;
    drop(pipe);
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("postern hung")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn answer(mut tcp: TcpStream, fake: Fake) {
    let path = read_request(&mut tcp).await;
    let whole = |content_type: &str, body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match fake {
        Fake::Silent | Fake::SilentStream => {
            if matches!(fake, Fake::SilentStream) {
                let _ = tcp.write_all(head("text/event-stream").as_bytes()).await;
            }
            // Hold the connection open until the client gives up.
            let mut buf = [0u8; 1024];
            while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
        }
        Fake::EndlessJson => endless(&mut tcp, &head("application/json"), b"[").await,
        Fake::EndlessEvent => {
            let head = format!("{}data: ", head("text/event-stream"));
            endless(&mut tcp, &head, b"x").await;
        }
        Fake::Html => {
            let page = "<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>";
            let _ = tcp.write_all(whole("text/html", page).as_bytes()).await;
        }
        Fake::OtherJson => {
            let _ = tcp
                .write_all(whole("application/json", r#"{"hello":"world"}"#).as_bytes())
                .await;
        }
        Fake::OtherEvent => {
            let body = "data: {\"hello\":\"world\"}\n\n";
            let _ = tcp
                .write_all(whole("text/event-stream", body).as_bytes())
                .await;
        }
        Fake::HostileText => {
            let (content_type, body) = hostile_body(&path);
            let _ = tcp.write_all(whole(content_type, &body).as_bytes()).await;
        }
        Fake::KeepaliveThenEvent => {
            // Pacing, not synchronisation: a live stream that is quiet but kept alive, for
            // three times the CLI's wait in all.
            if tcp
                .write_all(head("text/event-stream").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if tcp.write_all(b":\n\n").await.is_err() {
                    return;
                }
            }
            let _ = tcp
                .write_all(format!("id: 7\ndata: {EVENT}\n\n").as_bytes())
                .await;
        }
    }
}

/// A fake server on loopback port 0; its URL.
async fn fake_server(fake: Fake) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(answer(tcp, fake));
        }
    });
    url
}

/// A POSTERN_HOME "logged in" to `url`.
fn home_for(url: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let credentials = serde_json::json!({"server": url, "user": "kim", "token": "t0ken"});
    std::fs::write(
        home.path().join("credentials.json"),
        credentials.to_string(),
    )
    .unwrap();
    home
}

/// Runs `postern ARGS` with a 1 s wait (`POSTERN_TIMEOUT`) and returns its stderr after
/// checking it failed with one line that names the server.
async fn fails(home: &Path, url: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = run_waiting_1s(home, args, stdin).await;
    assert!(!ok, "{args:?} succeeded: {out}");
    let last = err.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("error: "), "{args:?}: {err}");
    assert!(
        last.contains(url),
        "{args:?} does not name the server: {err}"
    );
    last
}

#[tokio::test]
async fn a_silent_server_ends_every_command_with_a_timeout_that_names_it() {
    let url = fake_server(Fake::Silent).await;
    let home = home_for(&url);
    let home = home.path();
    for args in [
        &["agents"][..],
        &["events"],
        &["events", "--follow"],
        &["sessions"],
        &["ssh", "box", "--", "true"],
    ] {
        let err = fails(home, &url, args, None).await;
        assert!(
            err.contains("did not answer in time: no response within 1 s"),
            "{args:?}: {err}"
        );
    }
    let err = fails(
        home,
        &url,
        &[
            "login",
            "--server",
            &url,
            "--user",
            "kim",
            "--password-stdin",
        ],
        Some("a-password\n"),
    )
    .await;
    assert!(err.contains("did not answer in time"), "{err}");

    // Headers, then nothing: the stream's silence is bounded too.
    let url = fake_server(Fake::SilentStream).await;
    let home = home_for(&url);
    let err = fails(home.path(), &url, &["events"], None).await;
    assert!(err.contains("the event stream was silent for 1 s"), "{err}");
}

#[tokio::test]
async fn an_event_stream_that_only_keeps_alive_is_not_cut() {
    let url = fake_server(Fake::KeepaliveThenEvent).await;
    let home = home_for(&url);
    let (ok, _, err) = run_cli(home.path(), &["--timeout", "1s", "events"], None).await;
    // The flag and the variable are one setting.
    assert!(ok, "{err}");
    let (ok, out, err) = run_waiting_1s(home.path(), &["events"], None).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("user.login") && out.contains("logged in"),
        "{out}"
    );
}

#[tokio::test]
async fn an_endless_answer_is_refused_at_its_bound() {
    let url = fake_server(Fake::EndlessJson).await;
    let home = home_for(&url);
    let err = fails(home.path(), &url, &["agents"], None).await;
    assert!(err.contains("sent more than 16 MiB"), "{err}");

    let url = fake_server(Fake::EndlessEvent).await;
    let home = home_for(&url);
    for args in [&["events"][..], &["events", "--follow"]] {
        let err = fails(home.path(), &url, args, None).await;
        assert!(err.contains("sent more than 1 MiB for one event"), "{err}");
    }
}

#[tokio::test]
async fn an_answer_that_is_not_postern_s_says_so_and_fails() {
    let url = fake_server(Fake::Html).await;
    let home = home_for(&url);
    for args in [&["agents"][..], &["events"], &["events", "--follow"]] {
        let err = fails(home.path(), &url, args, None).await;
        assert_eq!(
            err,
            format!("error: {url} did not answer as a Postern server (got text/html)"),
            "{args:?}"
        );
    }

    let url = fake_server(Fake::OtherJson).await;
    let home = home_for(&url);
    for args in [&["agents"][..], &["sessions"], &["tokens", "list"]] {
        let err = fails(home.path(), &url, args, None).await;
        assert!(
            err.contains("did not answer as a Postern server (JSON of another shape"),
            "{args:?}: {err}"
        );
    }

    let url = fake_server(Fake::OtherEvent).await;
    let home = home_for(&url);
    for args in [&["events"][..], &["events", "--follow"]] {
        let err = fails(home.path(), &url, args, None).await;
        assert!(
            err.contains(
                "did not answer as a Postern server (an event that is not a Postern event"
            ),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test]
async fn text_from_the_server_cannot_drive_the_terminal() {
    let url = fake_server(Fake::HostileText).await;
    let home = home_for(&url);
    for args in [&["events"][..], &["sessions"]] {
        let (ok, out, err) = run_cli(home.path(), args, None).await;
        assert!(ok, "{args:?}: {err}");
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?} printed a control character: {out:?}"
        );
        // Header (for the table) and one row: the forged line is not a line of its own.
        let lines = out.lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(lines, if args[0] == "events" { 1 } else { 2 }, "{out}");
        assert!(
            out.contains("\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\r\\n2026"),
            "{out}"
        );
    }
}
