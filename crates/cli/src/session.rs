//! Opening a session for the user paths (`postern ssh`, `postern proxy`): start or reuse it,
//! follow its states live, and connect the WebSocket data path.

use std::time::Instant;

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

/// Starts (or reuses) the caller's session on `agent` and returns it once running, printing
/// each state to stderr unless `quiet`.
pub async fn open(client: &Client, agent: &str, quiet: bool) -> Result<SessionView> {
    // Listen before asking, so that no state change falls in between.
    let mut events = client.events("limit=0").await?;
    let started = Instant::now();
    let session: SessionView = client
        .post(
            &format!("/api/v1/agents/{}/sessions", segment(agent)),
            &serde_json::json!({}),
        )
        .await?;
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
    Ok(client
        .get(&format!("/api/v1/sessions/{}", session.id))
        .await?)
}

/// Connects the session's data path and returns one end of an in-memory pipe that carries
/// the raw SSH bytes.
pub async fn data_path(client: &Client, session: &SessionView) -> Result<DuplexStream> {
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
    // No Nagle: keystrokes are one-byte SSH packets that must not wait for an ACK.
    let connecting = tokio_tungstenite::connect_async_with_config(request, None, true);
    let (ws, _) = tokio::time::timeout(wait(), connecting)
        .await
        .map_err(|_| {
            anyhow!(
                "the server at {} did not open the session's data path within {}",
                client.base(),
                secs(wait())
            )
        })?
        .map_err(|e| anyhow!("cannot open the session's data path: {e}"))?;
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
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
        while let Some(Ok(message)) = ws_rx.next().await {
            match message {
                Message::Binary(bytes) if write.write_all(&bytes).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = write.shutdown().await;
    });
    Ok(ours)
}
