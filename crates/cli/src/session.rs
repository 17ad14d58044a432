//! Opening a session for the user paths (`postern ssh`, `postern proxy`): start or reuse it,
//! follow its states live, and connect the WebSocket data path.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use postern_protocol::SessionState;
use postern_protocol::api::{EventKind, SessionView};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::client::{Client, secs, segment, wait};
use crate::output::shown;

/// Advice for the states a session can fail in, from the field.
fn advice(reason: &str) -> &'static str {
    if reason.contains("offline") {
        " — the agent is offline: check that it runs and can reach the server, then try again"
    } else if reason.contains("in time") {
        " — the agent or its network may be slow or unstable: try again"
    } else {
        ""
    }
}

/// How many times a request that joined the caller's open session, which then ended before
/// running, asks again.
const JOIN_TRIES: usize = 3;

/// Starts (or reuses) the caller's session on `agent` and returns it once running, printing
/// each state to stderr unless `quiet`.
///
/// The caller's session already open is reused (one per user and agent). One found past
/// `requested` (a new one always starts there) may be on its way out: a session detached by a
/// server restart ends when its agent, linking again, no longer has its shells. Its end is
/// not this request's: the request is made again.
pub async fn open(client: &Client, agent: &str, quiet: bool) -> Result<SessionView> {
    // Listen before asking, so that no state change falls in between.
    let mut events = client.events("limit=0").await?;
    let started = Instant::now();
    let mut tries = 1;
    loop {
        let ask_again = tries < JOIN_TRIES;
        let opened = open_once(client, &mut events, agent, quiet, started, ask_again).await?;
        if let Some(session) = opened {
            return Ok(session);
        }
        tries += 1;
    }
}

/// One request: the session once running; `None` when it joined an open session that ended
/// before running and `ask_again` allows another request.
async fn open_once(
    client: &Client,
    events: &mut crate::sse::EventReader,
    agent: &str,
    quiet: bool,
    started: Instant,
    ask_again: bool,
) -> Result<Option<SessionView>> {
    let session: SessionView = client
        .post(
            &format!("/api/v1/agents/{}/sessions", segment(agent)),
            &serde_json::json!({}),
        )
        .await?;
    let joined = session.state != SessionState::Requested;
    let show = |state: SessionState, reason: Option<&str>| {
        if !quiet {
            let ms = started.elapsed().as_millis();
            match reason {
                Some(r) => eprintln!(
                    "postern: session {state} after {ms} ms: {}{}",
                    shown(r),
                    advice(r)
                ),
                None => eprintln!("postern: session {state} ({ms} ms)"),
            }
        }
    };
    let mut state = session.state;
    show(state, None);
    while state != SessionState::Running {
        if state.is_final() || state == SessionState::Stopping {
            if joined && ask_again {
                return Ok(None);
            }
            let current: SessionView = client
                .get(&format!("/api/v1/sessions/{}", session.id))
                .await?;
            let reason = current.reason.unwrap_or_else(|| "no reason given".into());
            bail!(
                "the session {}: {}{}",
                current.state,
                shown(&reason),
                advice(&reason)
            );
        }
        let Some(event) = events.next().await? else {
            bail!("the server closed the event stream");
        };
        let Some(s) = event.session.filter(|s| s.id == session.id) else {
            continue;
        };
        if event.kind == EventKind::SessionState && s.state != state {
            state = s.state;
            if !state.is_final() {
                show(state, None);
            }
        }
    }
    Ok(Some(
        client
            .get(&format!("/api/v1/sessions/{}", session.id))
            .await?,
    ))
}

/// How the data path's WebSocket ended, as this end saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathEnd {
    /// The server closed it (a close frame): it ended the session's stream, and records why.
    Closed,
    /// It broke without a close: the server's process died, or the network or a proxy between
    /// cut it. The server had no chance to say anything.
    Lost,
}

/// How the data path ended, once it has (set before the SSH bytes end, so that whoever sees
/// them end can ask).
#[derive(Clone, Debug, Default)]
pub struct PathEnded(Arc<OnceLock<PathEnd>>);

impl PathEnded {
    pub fn get(&self) -> Option<PathEnd> {
        self.0.get().copied()
    }
}

/// The session's data path: the raw SSH bytes through an in-memory pipe, and how the
/// WebSocket under them ended.
pub struct DataPath {
    pub stream: DuplexStream,
    pub ended: PathEnded,
}

/// Connects the session's data path.
pub async fn data_path(client: &Client, session: &SessionView) -> Result<DataPath> {
    let url = format!(
        "{}/api/v1/sessions/{}/stream",
        client.base().replacen("http", "ws", 1),
        session.id
    );
    let mut request = url
        .into_client_request()
        .map_err(|e| anyhow!("bad data path URL: {e}"))?;
    if let Some(token) = client.token() {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .map_err(|_| anyhow!("bad token"))?,
        );
    }
    let late = || {
        anyhow!(
            "the server at {} did not open the session's data path within {}",
            client.base(),
            secs(wait())
        )
    };
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let ended = PathEnded::default();
    match client.tls() {
        None => {
            // No Nagle: keystrokes are one-byte SSH packets that must not wait for an ACK.
            let connecting = tokio_tungstenite::connect_async_with_config(request, None, true);
            let (ws, _) = tokio::time::timeout(wait(), connecting)
                .await
                .map_err(|_| late())?
                .map_err(|e| anyhow!("cannot open the session's data path: {e}"))?;
            pump(ws, theirs, ended.clone());
        }
        Some(tls) => {
            let connecting = wss(client, tls, request);
            let ws = tokio::time::timeout(wait(), connecting)
                .await
                .map_err(|_| late())??;
            pump(ws, theirs, ended.clone());
        }
    }
    Ok(DataPath {
        stream: ours,
        ended,
    })
}

/// The data path over TLS: the same certificate check as every other request (a pin is
/// honoured here too), on a TCP connection without Nagle.
async fn wss(
    client: &Client,
    tls: &crate::tls::TlsClient,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
> {
    let url = reqwest::Url::parse(client.base())?;
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("no host in {}", client.base()))?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.clone())?,
    };
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| anyhow!("cannot open the session's data path: {e}"))?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = match connector.connect(name, tcp).await {
        Ok(stream) => stream,
        Err(e) => match client.refused() {
            Some(refused) => return Err(refused.into()),
            None => bail!("cannot open the session's data path: {e}"),
        },
    };
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, None)
        .await
        .map_err(|e| anyhow!("cannot open the session's data path: {e}"))?;
    Ok(ws)
}

/// Moves bytes between the WebSocket and the in-memory pipe until either side ends, and
/// records how the WebSocket ended.
fn pump<S>(ws: tokio_tungstenite::WebSocketStream<S>, theirs: DuplexStream, ended: PathEnded)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut read, mut write) = tokio::io::split(theirs);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n]));
                    if ws_tx.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    });
    tokio::spawn(async move {
        let end = loop {
            match ws_rx.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    if write.write_all(&bytes).await.is_err() {
                        break None; // our side is gone: nothing to tell it
                    }
                }
                Some(Ok(Message::Close(_))) => break Some(PathEnd::Closed),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break Some(PathEnd::Lost),
            }
        };
        if let Some(end) = end {
            let _ = ended.0.set(end);
        }
        let _ = write.shutdown().await;
    });
}

/// How long `postern ssh` waits to learn why a session's connection closed: the server records
/// the end as it closes the tunnel, or, when it restarts, at its next start.
const END_REASON_WAIT: Duration = Duration::from_secs(20);

/// Why the session's connection closed without an exit status, in the user's words, from the
/// session's recorded end. Asks again while the session is still open or the server does not
/// answer (it may be restarting), for at most [`END_REASON_WAIT`].
pub async fn end_reason(client: &Client, session: &SessionView) -> String {
    let deadline = Instant::now() + END_REASON_WAIT;
    let path = format!("/api/v1/sessions/{}", session.id);
    let mut last = None;
    while Instant::now() < deadline {
        match client.get::<SessionView>(&path).await {
            Ok(current) if current.state.is_final() || current.state == SessionState::Stopping => {
                return ended_because(current.reason.as_deref().unwrap_or("no reason given"));
            }
            Ok(current) => last = Some(Ok(current.state)),
            Err(e) => last = Some(Err(e)),
        }
        // Polling, not the event stream: the server may be gone and back in between.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    match last {
        Some(Ok(state)) => format!(
            "the connection to the device closed without an exit status; the session is still {state}"
        ),
        Some(Err(e)) => format!(
            "the connection to the device closed without an exit status, and the server does not answer ({e})"
        ),
        None => "the connection to the device closed without an exit status".to_owned(),
    }
}

/// The session's end, if it has ended by now (one question, no waiting).
pub async fn ended_now(client: &Client, session: &SessionView) -> Option<anyhow::Error> {
    let current: SessionView = client
        .get(&format!("/api/v1/sessions/{}", session.id))
        .await
        .ok()?;
    (current.state.is_final() || current.state == SessionState::Stopping).then(|| {
        anyhow!(ended_because(
            current.reason.as_deref().unwrap_or("no reason given")
        ))
    })
}

/// A recorded end reason as a sentence.
fn ended_because(reason: &str) -> String {
    let why = match reason {
        "agent link lost" => "the agent's link to the server was lost".to_owned(),
        "server restarted" => "the server restarted".to_owned(),
        // Another node found the session's node dead (see `SessionEvent::NodeLost`).
        "node lost" => "the server node that held the agent's link was lost".to_owned(),
        "agent revoked" => "the agent was revoked".to_owned(),
        "idle timeout" => "it was idle for too long (the server's idle timeout)".to_owned(),
        other => match other.strip_prefix("stopped by ") {
            Some(user) => format!("it was stopped by {}", shown(user)),
            None => shown(other),
        },
    };
    format!("the session ended: {why}")
}
