//! The web terminal: the server holds the shell. Each running session of a user may have one
//! terminal — an SSH connection from this server to the agent's SSH server (see `shell`) with
//! a login shell on a PTY — that outlives the browser: its output goes into a scrollback
//! numbered by byte offset, and any number of browser tabs attach, read from where they
//! stopped, type and resize. A slow tab never slows the shell: it reads the scrollback at
//! its own pace and starts over if it falls more than the scrollback behind.

mod scrollback;
mod shell;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use postern_protocol::{SessionId, SessionState};
use russh::ChannelMsg;
use tokio::sync::{mpsc, watch};

pub use scrollback::Chunk;
use scrollback::Scrollback;

use crate::certificates::{Certificates, CertifyError};
use crate::sessions::{SessionError, Sessions};
use crate::store::{SessionRecord, UserRecord};

/// Output kept per terminal for reattaching (the issue asks for at least 1 MiB).
pub const SCROLLBACK_BYTES: usize = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("session {id} is {state}; a terminal needs a running session")]
    NotRunning { id: SessionId, state: SessionState },
    #[error(transparent)]
    Certify(#[from] CertifyError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("SSH to the device failed: {0}")]
    Ssh(String),
}

/// How a terminal's shell ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShellEnd {
    Status(u32),
    Signal(String),
    /// The connection to the device closed without an exit status (the session stopped, or
    /// the link broke).
    Lost,
}

enum Input {
    Data(Bytes),
    Resize { cols: u16, rows: u16 },
}

/// One shell kept by the server.
pub struct Terminal {
    scrollback: Mutex<Scrollback>,
    /// The scrollback's end offset, announced after every write; readers wait on it.
    written: watch::Sender<u64>,
    ended: watch::Sender<Option<ShellEnd>>,
    input: mpsc::Sender<Input>,
}

impl Terminal {
    /// Output from `from` on (at most `max` bytes).
    pub fn read_from(&self, from: u64, max: usize) -> Chunk {
        self.scrollback
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_from(from, max)
    }

    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    pub fn ended(&self) -> watch::Receiver<Option<ShellEnd>> {
        self.ended.subscribe()
    }

    fn is_alive(&self) -> bool {
        self.ended.borrow().is_none()
    }

    /// Keystrokes and pastes, in order; waits while the device is not reading.
    pub async fn write(&self, data: Bytes) {
        let _ = self.input.send(Input::Data(data)).await;
    }

    pub async fn resize(&self, cols: u16, rows: u16) {
        let _ = self.input.send(Input::Resize { cols, rows }).await;
    }

    fn record(&self, data: &[u8]) {
        let end = {
            let mut sb = self.scrollback.lock().unwrap_or_else(|e| e.into_inner());
            sb.push(data);
            sb.end()
        };
        self.written.send_replace(end);
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Terminal>>>>;

pub struct Terminals {
    sessions: Arc<Sessions>,
    certificates: Arc<Certificates>,
    /// One slot per session; its lock makes concurrent first attaches start one shell.
    slots: Mutex<HashMap<SessionId, Slot>>,
}

impl Terminals {
    pub fn new(sessions: Arc<Sessions>, certificates: Arc<Certificates>) -> Arc<Self> {
        Arc::new(Self {
            sessions,
            certificates,
            slots: Mutex::new(HashMap::new()),
        })
    }

    fn slot(&self, id: &SessionId) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(id.clone()).or_default().clone()
    }

    /// Drops a slot no shell was started in (its start failed), so failures leave nothing.
    fn forget_empty(&self, id: &SessionId) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let empty = slots
            .get(id)
            .is_some_and(|slot| slot.try_lock().is_ok_and(|t| t.is_none()));
        if empty {
            slots.remove(id);
        }
    }

    fn forget(&self, id: &SessionId, terminal: &Arc<Terminal>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let current = slots.get(id).and_then(|slot| {
            slot.try_lock()
                .ok()
                .and_then(|t| t.as_ref().map(|t| Arc::ptr_eq(t, terminal)))
        });
        if current == Some(true) {
            slots.remove(id);
        }
    }

    /// The user's terminal on `session`: the live one, or a new shell when there is none
    /// (first attach, or the last shell ended). The caller has checked who may attach.
    pub async fn attach(
        self: &Arc<Self>,
        user: &UserRecord,
        session: &SessionRecord,
        peer: SocketAddr,
        cols: u16,
        rows: u16,
    ) -> Result<Arc<Terminal>, TerminalError> {
        if session.state != SessionState::Running {
            return Err(TerminalError::NotRunning {
                id: session.id.clone(),
                state: session.state,
            });
        }
        let slot = self.slot(&session.id);
        let mut held = slot.lock().await;
        if let Some(terminal) = held.as_ref().filter(|t| t.is_alive()) {
            terminal.resize(cols, rows).await;
            return Ok(terminal.clone());
        }
        match self.start(user, session, peer, cols, rows).await {
            Ok(terminal) => {
                *held = Some(terminal.clone());
                Ok(terminal)
            }
            Err(error) => {
                drop(held);
                self.forget_empty(&session.id);
                Err(error)
            }
        }
    }

    /// A new login shell for `user` on `session`, and the tasks that carry it.
    async fn start(
        self: &Arc<Self>,
        user: &UserRecord,
        session: &SessionRecord,
        peer: SocketAddr,
        cols: u16,
        rows: u16,
    ) -> Result<Arc<Terminal>, TerminalError> {
        let key = shell::ephemeral_key()?;
        let issued = self
            .certificates
            .issue(user, session, key.public_key(), None)
            .await?;
        let (stream, activity) = self.sessions.open_stream(&session.id, peer).await?;
        let (ssh, channel) = shell::open(
            stream,
            &issued.agent.ssh_public_key,
            &issued.login,
            key,
            issued.certificate,
            cols,
            rows,
        )
        .await?;
        let (input_tx, mut input_rx) = mpsc::channel(64);
        let terminal = Arc::new(Terminal {
            scrollback: Mutex::new(Scrollback::new(SCROLLBACK_BYTES)),
            written: watch::channel(0).0,
            ended: watch::channel(None).0,
            input: input_tx,
        });
        tracing::info!(session = %session.id, user = %user.name, login = %issued.login, "web terminal started");

        // Input goes out on its own task: waiting for the device's window must never stop
        // the output from being read (that would stall the whole connection).
        // Both tasks are the node's: they end when the server stops.
        let (mut output, writer) = channel.split();
        let stopping = self.sessions.stopping();
        let input_stopping = stopping.clone();
        self.sessions.spawn(async move {
            loop {
                let input = tokio::select! {
                    input = input_rx.recv() => input,
                    _ = input_stopping.cancelled() => None,
                };
                let Some(input) = input else {
                    return;
                };
                let sent = match input {
                    Input::Data(data) => writer.data_bytes(data).await,
                    Input::Resize { cols, rows } => {
                        writer
                            .window_change(u32::from(cols), u32::from(rows), 0, 0)
                            .await
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        let me = self.clone();
        let id = session.id.clone();
        let shell = terminal.clone();
        self.sessions.spawn(async move {
            let mut end = ShellEnd::Lost;
            loop {
                let msg = tokio::select! {
                    msg = output.wait() => msg,
                    _ = stopping.cancelled() => None,
                };
                let Some(msg) = msg else {
                    break;
                };
                match msg {
                    ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                        shell.record(&data);
                    }
                    ChannelMsg::ExitStatus { exit_status } => end = ShellEnd::Status(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        end = ShellEnd::Signal(match signal_name {
                            russh::Sig::Custom(name) => name,
                            known => format!("{known:?}"),
                        });
                    }
                    ChannelMsg::Failure => {
                        shell.record(b"\r\npostern: the device refused to start a shell\r\n");
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            tracing::info!(session = %id, ?end, "web terminal ended");
            shell.ended.send_replace(Some(end));
            me.forget(&id, &shell);
            drop(activity);
            let _ = ssh
                .disconnect(russh::Disconnect::ByApplication, "terminal closed", "en")
                .await;
        });
        Ok(terminal)
    }
}
