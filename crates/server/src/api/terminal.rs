//! The web terminal's WebSocket: binary frames carry terminal bytes both ways, small typed
//! JSON text frames carry the rest (`TerminalServerFrame`, `TerminalClientFrame`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use postern_protocol::api::{
    ApiError as ErrorBody, EventKind, TerminalClientFrame, TerminalServerFrame,
};
use postern_protocol::shell::{Resume, ShellId};
use postern_protocol::{SessionId, SessionState};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Caller};
use crate::store::UserRecord;
use crate::terminal::{ShellEnd, Terminal, Want};

/// Largest output frame sent at once; a reattach replays the scrollback in such frames.
const FRAME: usize = 64 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TerminalQuery {
    /// Byte offset of the shell's output to resume from (0: everything still kept).
    #[serde(default)]
    from: u64,
    /// The shell the browser had (from an `attached` frame): after this server restarted,
    /// or through another one, the terminal re-attaches to it at `from`.
    shell: Option<String>,
    /// The browser terminal's size (each clamped to 1..=1000).
    #[param(maximum = 65535)]
    cols: Option<u16>,
    #[param(maximum = 65535)]
    rows: Option<u16>,
}

/// Attach to the caller's web terminal on a running session (a shell the server keeps).
#[utoipa::path(get, path = "/api/v1/sessions/{id}/terminal", params(("id" = String, Path), TerminalQuery),
    responses((status = 101, description = "WebSocket: binary frames carry terminal bytes, text frames JSON control"),
    (status = 400, body = ErrorBody, description = "Not a WebSocket upgrade"),
    (status = 403, body = ErrorBody, description = "Not an operator, or a cross-origin page"),
    (status = 404, body = ErrorBody, description = "No such session of the caller's")), security(("bearer" = [])))]
pub async fn attach(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<TerminalQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (session, ws) =
        super::sessions::own_session_socket(&state, &caller, &id, &headers, ws).await?;
    let size = (
        query.cols.unwrap_or(80).clamp(1, 1000),
        query.rows.unwrap_or(24).clamp(1, 1000),
    );
    let want = match query.shell.as_deref() {
        None => Want::New,
        Some(name) => Want::Resume(Resume {
            shell: ShellId::parse(name).ok_or_else(|| {
                ApiError::bad_request("shell must be 8 to 64 letters, digits, '-' or '_'")
            })?,
            offset: query.from,
        }),
    };
    Ok(ws.max_message_size(1 << 20).on_upgrade(move |socket| {
        serve(
            socket,
            state,
            caller.user,
            session.id,
            peer,
            (query.from, want),
            size,
        )
    }))
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;

async fn send(ws: &mut Sink, frame: &TerminalServerFrame) -> bool {
    match serde_json::to_string(frame) {
        Ok(text) => ws.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn serve(
    socket: WebSocket,
    state: AppState,
    user: UserRecord,
    id: SessionId,
    peer: SocketAddr,
    (from, want): (u64, Want),
    size: (u16, u16),
) {
    let (mut tx, mut rx) = socket.split();
    let s = &state.services;
    // Watching first, so that a stop between the attach and the loop is not missed.
    let mut session = SessionWatch {
        events: s.events.subscribe(),
        id: &id,
        state: &state,
        last_sent: None,
    };
    let record = match s.sessions.get(id.as_str()).await {
        Ok(record) if record.state == SessionState::Detached => {
            // The device is out of reach and keeps the shell: say so, and attach once it is
            // back (or say how the session ended).
            if !session.send(&mut tx, record.state).await {
                return;
            }
            let back = tokio::select! {
                back = s.sessions.running_again(&id) => back,
                _ = closed(&mut rx) => return,
            };
            match back {
                Some(record) => {
                    if !session.send(&mut tx, record.state).await {
                        return;
                    }
                    Ok(record)
                }
                None => s.sessions.get(id.as_str()).await,
            }
        }
        other => other,
    };
    let terminal = match record {
        Ok(record) => {
            s.terminals
                .attach(&user, &record, peer, size, want.clone())
                .await
        }
        Err(e) => Err(e.into()),
    };
    let terminal = match terminal {
        Ok(t) => t,
        Err(error) => {
            let message = error.to_string();
            send(&mut tx, &TerminalServerFrame::Error { message }).await;
            let _ = tx.close().await;
            return;
        }
    };
    let mut written = terminal.written();
    let mut ended = terminal.ended();
    // The browser numbers its input from the shell's count, which a re-attached shell's
    // carrier learns from the agent's notice: the `attached` frame waits for it.
    // What the browser sends meanwhile waits (a browser sends nothing before its `attached`
    // frame; other clients may).
    let mut early = Vec::new();
    let early_end = loop {
        tokio::select! {
            _ = terminal.input() => break None,
            end = ended.wait_for(Option::is_some) => {
                break Some(end.ok().and_then(|end| end.clone()));
            }
            message = rx.next() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(message)) => early.push(message),
            },
        }
    };
    if let Some(end) = early_end {
        finish(&mut tx, &state, &mut session, end).await;
        return;
    }
    // Offsets in another shell than the one the browser had mean nothing: it starts over.
    let from = match &want {
        Want::Resume(resume) if terminal.shell() != &resume.shell => u64::MAX,
        _ => from,
    };
    let mut output = Output {
        offset: from,
        announced: false,
    };
    if !output.forward(&mut tx, &terminal).await {
        return;
    }
    for message in early {
        if !incoming(&mut tx, &terminal, message).await {
            finish(&mut tx, &state, &mut session, None).await;
            return;
        }
    }
    let end = loop {
        if !output.forward(&mut tx, &terminal).await {
            return;
        }
        tokio::select! {
            changed = written.changed() => if changed.is_err() {
                break None;
            },
            _ = ended.changed() => {
                let end = ended.borrow().clone();
                if !output.forward(&mut tx, &terminal).await {
                    return;
                }
                break end;
            }
            next = session.next() => match next {
                Some(st) if session.send(&mut tx, st).await && !st.is_final() => {}
                _ => break None,
            },
            message = rx.next() => match message {
                Some(Ok(message)) => if !incoming(&mut tx, &terminal, message).await {
                    break None;
                },
                None | Some(Err(_)) => break None,
            },
        }
    };
    finish(&mut tx, &state, &mut session, end).await;
}

/// Tells the browser how the terminal ended (nothing if the socket just closes), and closes.
async fn finish(
    tx: &mut Sink,
    state: &AppState,
    session: &mut SessionWatch<'_>,
    end: Option<ShellEnd>,
) {
    let s = &state.services;
    let id = session.id;
    match end {
        Some(ShellEnd::Status(status)) => {
            let frame = TerminalServerFrame::Exit {
                status: Some(status),
                signal: None,
            };
            send(tx, &frame).await;
        }
        Some(ShellEnd::Signal(signal)) => {
            let frame = TerminalServerFrame::Exit {
                status: None,
                signal: Some(signal),
            };
            send(tx, &frame).await;
        }
        Some(ShellEnd::Gone(end)) => {
            let reason = end.to_string();
            send(tx, &TerminalServerFrame::Gone { reason }).await;
        }
        // The connection to the device closed: because the session is ending (then the
        // browser sees it through to its end), or because the device went away.
        Some(ShellEnd::Lost) => match s.sessions.get(id.as_str()).await.map(|r| r.state) {
            Ok(SessionState::Running) | Err(_) => {
                let message = "the connection to the device was lost".to_owned();
                send(tx, &TerminalServerFrame::Error { message }).await;
            }
            Ok(now) => {
                let mut current = Some(now);
                while let Some(st) = current {
                    if !session.send(tx, st).await || st.is_final() {
                        break;
                    }
                    current = session.next().await;
                }
            }
        },
        None => {}
    }
    let _ = tx.close().await;
}

/// Resolves when the browser closes the socket (or it breaks). A browser sends no input
/// before its `attached` frame: it holds what is typed until then.
async fn closed(rx: &mut futures::stream::SplitStream<WebSocket>) {
    while let Some(Ok(message)) = rx.next().await {
        if matches!(message, Message::Close(_)) {
            return;
        }
    }
}

/// A message from the browser; false when the socket is done with.
async fn incoming(tx: &mut Sink, terminal: &Terminal, message: Message) -> bool {
    match message {
        Message::Binary(bytes) => match terminal.write(bytes).await {
            // Where it ends in the shell's input: the browser keeps it until a server's
            // loss, to send again what the shell did not take.
            Some(end) => send(tx, &TerminalServerFrame::Input { end }).await,
            None => true,
        },
        Message::Text(text) => control(tx, terminal, &text).await,
        Message::Close(_) => false,
        _ => true,
    }
}

/// A text frame from the browser; false when the socket is gone.
async fn control(tx: &mut Sink, terminal: &Terminal, text: &str) -> bool {
    match serde_json::from_str(text) {
        Ok(TerminalClientFrame::Resize { cols, rows }) => {
            terminal
                .resize(cols.clamp(1, 1000), rows.clamp(1, 1000))
                .await;
            true
        }
        Err(e) => {
            let message = format!("unreadable control frame: {e}");
            send(tx, &TerminalServerFrame::Error { message }).await
        }
    }
}

/// Where a socket is in the shell's output.
struct Output {
    offset: u64,
    /// Whether the `attached` frame went out.
    announced: bool,
}

impl Output {
    /// Sends what the scrollback holds past `offset`, in frames, announcing where it starts
    /// first (and again after a reset); false when the socket is gone.
    async fn forward(&mut self, tx: &mut Sink, terminal: &Arc<Terminal>) -> bool {
        loop {
            let chunk = terminal.read_from(self.offset, FRAME);
            if !self.announced || chunk.reset {
                self.announced = true;
                let frame = TerminalServerFrame::Attached {
                    offset: chunk.offset,
                    reset: chunk.reset,
                    shell: Some(terminal.shell().to_string()),
                    input: terminal.input().await,
                };
                if !send(tx, &frame).await {
                    return false;
                }
            }
            if chunk.bytes.is_empty() {
                return true;
            }
            self.offset = chunk.offset + chunk.bytes.len() as u64;
            if tx.send(Message::Binary(chunk.bytes.into())).await.is_err() {
                return false;
            }
        }
    }
}

/// The session's state changes, each sent once with the session's reason.
struct SessionWatch<'a> {
    events: tokio::sync::broadcast::Receiver<postern_protocol::api::EventView>,
    id: &'a SessionId,
    state: &'a AppState,
    last_sent: Option<SessionState>,
}

impl SessionWatch<'_> {
    /// The session's next state; None when the event bus is gone.
    async fn next(&mut self) -> Option<SessionState> {
        loop {
            match self.events.recv().await {
                Ok(e) if e.kind == EventKind::SessionState => {
                    if let Some(s) = e.session.filter(|s| &s.id == self.id) {
                        return Some(s.state);
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Sends `state` unless it was the last one sent; false when the socket is gone.
    async fn send(&mut self, tx: &mut Sink, state: SessionState) -> bool {
        if self.last_sent == Some(state) {
            return true;
        }
        self.last_sent = Some(state);
        let reason = self
            .state
            .services
            .sessions
            .get(self.id.as_str())
            .await
            .ok()
            .and_then(|r| r.reason);
        send(tx, &TerminalServerFrame::State { state, reason }).await
    }
}
