//! The web terminal's server side: a shell the server keeps, reattached from any offset with
//! nothing lost or repeated, resized, ended by `exit` or by stopping the session, and
//! reachable by its own user only.

use futures::{SinkExt, StreamExt};
use postern_protocol::SessionState;
use postern_protocol::api::{Role, TerminalServerFrame};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{DEADLINE, TestServer, approved_agent};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A browser-like attachment: everything read so far, and the offset it has reached.
pub struct Attached {
    ws: Socket,
    pub offset: u64,
    output: Vec<u8>,
    pub frames: Vec<TerminalServerFrame>,
}

fn request(
    server: &TestServer,
    token: &str,
    path: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!("ws://{}{path}", server.config.http);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

impl Attached {
    pub async fn open(server: &TestServer, token: &str, id: &str, query: &str) -> Self {
        let path = format!("/api/v1/sessions/{id}/terminal?{query}");
        let (ws, _) = tokio_tungstenite::connect_async(request(server, token, &path))
            .await
            .unwrap();
        let mut me = Self {
            ws,
            offset: 0,
            output: Vec::new(),
            frames: Vec::new(),
        };
        let first = me.next_frame().await;
        match first {
            TerminalServerFrame::Attached { offset, .. } => me.offset = offset,
            other => panic!("expected attached, got {other:?}"),
        }
        me
    }

    /// Reads until a control frame arrives; output read on the way is kept.
    pub async fn next_frame(&mut self) -> TerminalServerFrame {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("socket closed")
                .unwrap();
            match message {
                Message::Binary(bytes) => {
                    self.offset += bytes.len() as u64;
                    self.output.extend_from_slice(&bytes);
                }
                Message::Text(text) => {
                    let frame: TerminalServerFrame = serde_json::from_str(&text).unwrap();
                    // The acknowledgements of what we typed: not what these tests watch.
                    if matches!(frame, TerminalServerFrame::Input { .. }) {
                        continue;
                    }
                    self.frames.push(frame.clone());
                    return frame;
                }
                _ => {}
            }
        }
    }

    pub async fn read_until(&mut self, needle: &str) {
        self.read_until_with(needle, |output| {
            String::from_utf8_lossy(output).contains(needle)
        })
        .await;
    }

    /// Reads until `done` holds for the output so far (`what` names it if it never does).
    pub async fn read_until_with(&mut self, what: &str, done: impl Fn(&[u8]) -> bool) {
        let found = tokio::time::timeout(DEADLINE * 2, async {
            while !done(&self.output) {
                match self.ws.next().await {
                    Some(Ok(Message::Binary(bytes))) => {
                        self.offset += bytes.len() as u64;
                        self.output.extend_from_slice(&bytes);
                    }
                    Some(Ok(Message::Text(text))) => {
                        self.frames.push(serde_json::from_str(&text).unwrap());
                    }
                    Some(Ok(_)) => {}
                    _ => return false,
                }
            }
            true
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "never saw {what:?} in {:?}",
            String::from_utf8_lossy(&self.output)
        );
    }

    /// Everything received so far.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    pub async fn type_in(&mut self, keys: &str) {
        self.ws
            .send(Message::Binary(keys.as_bytes().to_vec().into()))
            .await
            .unwrap();
    }
}

/// Where an `attached` frame says the output starts, and whether the screen starts over.
pub fn attached_at(frame: &TerminalServerFrame) -> (u64, bool) {
    match frame {
        TerminalServerFrame::Attached { offset, reset, .. } => (*offset, *reset),
        other => panic!("expected attached, got {other:?}"),
    }
}

pub async fn running_session(server: &TestServer, agent: &str, token: &str) -> String {
    let (status, body) = server.start_session(agent, token).await;
    assert!(status == 201 || status == 200, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    server.wait_session(&id, token, SessionState::Running).await;
    id
}

#[tokio::test]
async fn the_shell_outlives_the_socket_and_reattaching_resumes_exactly() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "kept").await;
    let token = server.admin_token.clone();
    let id = running_session(&server, "kept", &token).await;

    let mut first = Attached::open(&server, &token, &id, "from=0&cols=100&rows=30").await;
    assert_eq!(attached_at(&first.frames[0]), (0, false));
    assert!(
        matches!(&first.frames[0], TerminalServerFrame::Attached { shell: Some(name), .. } if name.len() >= 8),
        "the first attach names the shell the agent keeps: {:?}",
        first.frames[0]
    );
    first.type_in("echo one-$((40+2)); stty size\n").await;
    first.read_until("one-42").await;
    first.read_until("30 100").await;
    let seen = first.output.clone();
    let offset = first.offset;
    drop(first); // the browser goes away; the shell stays

    // Resuming from where it stopped: no byte again, then what the shell does next.
    let mut resumed = Attached::open(
        &server,
        &token,
        &id,
        &format!("from={offset}&cols=100&rows=30"),
    )
    .await;
    assert_eq!(attached_at(&resumed.frames[0]), (offset, false));
    resumed
        .ws
        .send(Message::Text(
            r#"{"type":"resize","cols":120,"rows":40}"#.into(),
        ))
        .await
        .unwrap();
    resumed.type_in("echo two-$((40+3)); stty size\n").await;
    resumed.read_until("two-43").await;
    resumed.read_until("40 120").await;
    let later = resumed.output.clone();
    let end = resumed.offset;
    drop(resumed);

    // A fresh tab (from 0) replays everything, byte for byte.
    let mut replay = Attached::open(&server, &token, &id, "from=0").await;
    assert_eq!(attached_at(&replay.frames[0]), (0, false));
    replay.read_until("40 120").await;
    let expected: Vec<u8> = [seen, later].concat();
    assert_eq!(replay.output[..expected.len()], expected[..]);
    assert!(replay.offset >= end);

    // `exit` ends the shell with its status; the next attach gets a new shell.
    replay.type_in("exit 3\n").await;
    loop {
        match replay.next_frame().await {
            TerminalServerFrame::Exit { status, signal } => {
                assert_eq!((status, signal), (Some(3), None));
                break;
            }
            TerminalServerFrame::Attached { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut fresh = Attached::open(&server, &token, &id, &format!("from={end}")).await;
    assert_eq!(attached_at(&fresh.frames[0]), (0, true));
    fresh.type_in("echo three-$((40+4))\n").await;
    fresh.read_until("three-44").await;

    // Stopping the session ends the terminal with the session's states.
    let (status, _) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/sessions/{id}/stop"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let mut states = Vec::new();
    while !states.contains(&SessionState::Stopped) {
        if let TerminalServerFrame::State { state, .. } = fresh.next_frame().await {
            states.push(state);
        }
    }
    assert_eq!(states, [SessionState::Stopping, SessionState::Stopped]);
}

#[tokio::test]
async fn a_shell_is_its_users_alone_and_cross_site_pages_cannot_attach() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "private").await;
    let owner = server.add_user("olive", Role::Operator).await;
    let other = server.add_user("oscar", Role::Operator).await;
    let viewer = server.add_user("vic", Role::Viewer).await;
    let id = running_session(&server, "private", &owner).await;
    let path = format!("/api/v1/sessions/{id}/terminal");
    let refused = |token: &str| {
        let request = request(&server, token, &path);
        async move {
            match tokio_tungstenite::connect_async(request).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    response.status().as_u16()
                }
                other => panic!(
                    "the attach was not refused: {:?}",
                    other.map(|(_, r)| r.status())
                ),
            }
        }
    };
    assert_eq!(refused(&other).await, 404, "another operator");
    assert_eq!(refused(&server.admin_token).await, 404, "not even an admin");
    assert_eq!(refused(&viewer).await, 403, "a viewer");

    let mut cross_site = request(&server, &owner, &path);
    cross_site
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(cross_site).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!(
            "a cross-site attach was not refused: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }

    // A session that is not running gets a clear error frame.
    let mut owner_view = Attached::open(&server, &owner, &id, "").await;
    owner_view.type_in("echo mine\n").await;
    owner_view.read_until("mine").await;
    // The shell's name is no key: another user naming it is refused as before, and a name
    // that is not one is refused before any upgrade.
    let TerminalServerFrame::Attached {
        shell: Some(name), ..
    } = owner_view.frames[0].clone()
    else {
        panic!("no shell name in {:?}", owner_view.frames[0]);
    };
    let named = format!("{path}?from=0&shell={name}");
    let stolen = request(&server, &other, &named);
    assert!(matches!(
        tokio_tungstenite::connect_async(stolen).await,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 404
    ));
    let bad = request(&server, &owner, &format!("{path}?shell=..%2F..%2Fx"));
    assert!(matches!(
        tokio_tungstenite::connect_async(bad).await,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400
    ));
    server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/sessions/{id}/stop"),
            Some(&owner),
            None,
        )
        .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(request(&server, &owner, &path))
        .await
        .unwrap();
    let frame = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let frame: TerminalServerFrame = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert!(
        matches!(&frame, TerminalServerFrame::Error { message } if message.contains("stopped")),
        "{frame:?}"
    );
}
