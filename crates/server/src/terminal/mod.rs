//! The web terminal: the server holds the browser's side of the shell. Each running session
//! of a user may have one terminal — an SSH connection from this server to the agent's SSH
//! server (see `shell`) with a login shell on a PTY — that outlives the browser: its output
//! goes into a scrollback numbered by byte offset, and any number of browser tabs attach,
//! read from where they stopped, type and resize. A slow tab never slows the shell: it reads
//! the scrollback at its own pace and starts over if it falls more than the scrollback behind.
//!
//! The shell itself is one the agent keeps (see `postern_protocol::shell`), so it outlives
//! this server too: when the path to the device breaks (the agent's link lost, the node that
//! held it gone) the terminal re-attaches by itself once the session runs again (`carrier`),
//! and after this server restarts a browser names its shell and offset and a new terminal
//! re-attaches to it. The shell's output offsets are the agent's, so the browser's offset
//! means the same on every server.

mod carrier;
mod scrollback;
mod shell;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use postern_protocol::shell::{RESUME_ENV, Resume, SHELL_ENV, ShellId};
use postern_protocol::{SessionId, SessionState};
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
    /// The agent no longer has the shell (its grace ran out, or it never kept it).
    Gone(postern_protocol::shell::ShellEnd),
    /// The connection to the device closed without an exit status, and the agent does not
    /// keep the shell (the session stopped, or the agent keeps no shells).
    Lost,
}

enum Input {
    Data(Bytes),
    Resize { cols: u16, rows: u16 },
}

/// One shell, as this server holds it for the browsers.
pub struct Terminal {
    /// The name the agent keeps the shell under.
    shell: ShellId,
    scrollback: Mutex<Scrollback>,
    /// The scrollback's end offset, announced after every write; readers wait on it.
    written: watch::Sender<u64>,
    ended: watch::Sender<Option<ShellEnd>>,
    /// The browsers' input, one frame after another, to the carrier.
    input: tokio::sync::Mutex<mpsc::Sender<Input>>,
    /// The shell's input count after the last byte accepted from a browser — numbered as the
    /// shell numbers it, so that a browser can tell after a re-attach (through any server)
    /// which of its bytes the shell took. None until the agent's notice says where a
    /// re-attached shell's input stands.
    accepted: watch::Sender<Option<u64>>,
    /// The browser's last size, for a re-attach.
    size: Mutex<(u16, u16)>,
}

impl Terminal {
    /// `accepted`: the shell's input count, if known (a new shell's is 0).
    fn new(
        shell: ShellId,
        start: u64,
        size: (u16, u16),
        input: mpsc::Sender<Input>,
        accepted: Option<u64>,
    ) -> Self {
        Self {
            shell,
            scrollback: Mutex::new(Scrollback::starting_at(SCROLLBACK_BYTES, start)),
            written: watch::channel(start).0,
            ended: watch::channel(None).0,
            input: tokio::sync::Mutex::new(input),
            accepted: watch::channel(accepted).0,
            size: Mutex::new(size),
        }
    }

    /// The shell's name on the device.
    pub fn shell(&self) -> &ShellId {
        &self.shell
    }

    /// Output from `from` on (at most `max` bytes).
    pub fn read_from(&self, from: u64, max: usize) -> Chunk {
        self.scrollback().read_from(from, max)
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

    /// Keystrokes and pastes, in order; waits while the device is not reading. The shell's
    /// input count after `data` (where it ends), or None if the terminal is gone (or a
    /// browser typed before its `attached` frame, which browsers do not).
    pub async fn write(&self, data: Bytes) -> Option<u64> {
        let input = self.input.lock().await;
        let start = (*self.accepted.borrow())?;
        let end = start + data.len() as u64;
        // Numbered in the order the carrier gets them: the lock is held across the send.
        input.send(Input::Data(data)).await.ok()?;
        self.accepted.send_replace(Some(end));
        Some(end)
    }

    pub async fn resize(&self, cols: u16, rows: u16) {
        *self.size.lock().unwrap_or_else(|e| e.into_inner()) = (cols, rows);
        let _ = self
            .input
            .lock()
            .await
            .send(Input::Resize { cols, rows })
            .await;
    }

    /// The shell's input count so far, once known (see `accepted`): what an `attached` frame
    /// tells a browser. Waits for the agent's notice on a re-attached shell.
    pub async fn input(&self) -> u64 {
        let mut accepted = self.accepted.subscribe();
        match accepted.wait_for(Option::is_some).await {
            Ok(count) => count.unwrap_or_default(),
            // The sender lives as long as `self`.
            Err(_) => 0,
        }
    }

    /// The agent's first notice on a re-attached shell: its input stood at `taken`. True if
    /// that is news (the count was not known yet).
    fn input_from(&self, taken: u64) -> bool {
        self.accepted.send_if_modified(|accepted| {
            let news = accepted.is_none();
            if news {
                *accepted = Some(taken);
            }
            news
        })
    }

    fn scrollback(&self) -> std::sync::MutexGuard<'_, Scrollback> {
        self.scrollback.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn size(&self) -> (u16, u16) {
        *self.size.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn end(&self) -> u64 {
        self.scrollback().end()
    }

    fn record(&self, data: &[u8]) {
        let end = {
            let mut sb = self.scrollback();
            sb.push(data);
            sb.end()
        };
        self.written.send_replace(end);
    }

    /// The agent kept less than we missed: the output resumes at `offset`.
    fn skip_to(&self, offset: u64) {
        let end = {
            let mut sb = self.scrollback();
            sb.skip_to(offset);
            sb.end()
        };
        self.written.send_replace(end);
    }
}

/// What an attach asks for when this server has no live terminal for the session.
#[derive(Clone, Debug)]
pub enum Want {
    /// A new shell.
    New,
    /// The shell a browser had (through this server before it restarted, or another node),
    /// from the output offset it has.
    Resume(Resume),
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

    /// The user's terminal on `session`: the live one, or else a new shell or a re-attach to
    /// the kept one `want` names. The caller has checked who may attach.
    pub async fn attach(
        self: &Arc<Self>,
        user: &UserRecord,
        session: &SessionRecord,
        peer: SocketAddr,
        size: (u16, u16),
        want: Want,
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
            terminal.resize(size.0, size.1).await;
            return Ok(terminal.clone());
        }
        match self.start(user, session, peer, size, want).await {
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

    /// A terminal on a new shell for `user` on `session`, or re-attached to a kept one, and
    /// the task that carries it.
    async fn start(
        self: &Arc<Self>,
        user: &UserRecord,
        session: &SessionRecord,
        peer: SocketAddr,
        size: (u16, u16),
        want: Want,
    ) -> Result<Arc<Terminal>, TerminalError> {
        let resumed = matches!(want, Want::Resume(_));
        let (shell, start, keep) = match want {
            Want::New => {
                let shell = new_shell_id()?;
                let keep = (SHELL_ENV, shell.to_string());
                (shell, 0, keep)
            }
            Want::Resume(resume) => {
                let keep = (RESUME_ENV, resume.to_string());
                (resume.shell, resume.offset, keep)
            }
        };
        let link = self.connect(user, session, peer, size, keep).await?;
        let (input_tx, input_rx) = mpsc::channel(64);
        // A new shell has taken no input; a re-attached one's count comes with the notice.
        let accepted = (!resumed).then_some(0);
        let terminal = Arc::new(Terminal::new(shell, start, size, input_tx, accepted));
        tracing::info!(session = %session.id, user = %user.name, login = %link.login, shell = %terminal.shell, "web terminal started");
        let carrier = carrier::Carrier {
            terminals: self.clone(),
            terminal: terminal.clone(),
            user: user.clone(),
            session: session.id.clone(),
            peer,
            resumed,
        };
        self.sessions.spawn(carrier.run(link, input_rx));
        Ok(terminal)
    }

    /// A fresh key and certificate for `user` on `session`, the data path, the SSH login and
    /// the shell channel (`keep` names the kept shell, new or re-attached).
    async fn connect(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
        peer: SocketAddr,
        size: (u16, u16),
        keep: (&str, String),
    ) -> Result<carrier::Link, TerminalError> {
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
            size,
            keep,
        )
        .await?;
        Ok(carrier::Link {
            ssh,
            channel,
            activity,
            login: issued.login,
        })
    }
}

fn new_shell_id() -> Result<ShellId, TerminalError> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| TerminalError::Ssh(format!("no randomness: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ShellId::parse(&hex).ok_or_else(|| TerminalError::Ssh("a bad shell id".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terminal(accepted: Option<u64>) -> (Arc<Terminal>, mpsc::Receiver<Input>) {
        let (tx, rx) = mpsc::channel(64);
        let shell = ShellId::parse("shell-under-test").unwrap();
        (
            Arc::new(Terminal::new(shell, 0, (80, 24), tx, accepted)),
            rx,
        )
    }

    #[tokio::test]
    async fn input_is_numbered_as_the_shell_numbers_it_in_the_order_the_carrier_gets_it() {
        let (terminal, mut rx) = terminal(Some(0));
        assert_eq!(terminal.input().await, 0);
        let tasks: Vec<_> = (0..50u8)
            .map(|i| {
                let terminal = terminal.clone();
                tokio::spawn(async move {
                    let data = Bytes::from(vec![i; usize::from(i) + 1]);
                    (terminal.write(data.clone()).await, data)
                })
            })
            .collect();
        let mut ends = std::collections::HashMap::new();
        for task in tasks {
            let (end, data) = task.await.unwrap();
            ends.insert(data[0], end.unwrap());
        }
        // The carrier gets each frame where its acknowledgement said it ends.
        let mut at = 0;
        for _ in 0..50 {
            let Some(Input::Data(data)) = rx.recv().await else {
                panic!("a frame is missing");
            };
            at += data.len() as u64;
            assert_eq!(ends[&data[0]], at);
        }
        assert_eq!(terminal.input().await, at);
    }

    #[tokio::test]
    async fn a_re_attached_shell_says_where_its_input_stands_before_anyone_types() {
        let (terminal, mut rx) = terminal(None);
        let waiting = tokio::spawn({
            let terminal = terminal.clone();
            async move { terminal.input().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no count before the agent's notice");
        assert_eq!(terminal.write(Bytes::from_static(b"early")).await, None);
        assert!(terminal.input_from(42), "the first notice sets the count");
        assert!(
            !terminal.input_from(7),
            "a later one (a carrier's re-attach) does not"
        );
        assert_eq!(waiting.await.unwrap(), 42);
        assert_eq!(terminal.write(Bytes::from_static(b"ls\n")).await, Some(45));
        assert!(matches!(rx.recv().await, Some(Input::Data(d)) if d == "ls\n"));
        assert!(
            rx.try_recv().is_err(),
            "nothing typed before the count was sent"
        );
    }
}
