//! Shells the agent keeps: a Postern client's interactive shell (PTY + process group) is owned
//! here, not by its SSH channel, so it outlives the channel, the connection and the link for
//! `--shell-grace` while nobody is attached. Its output goes into a bounded ring numbered by
//! byte offset whether or not anyone reads it (a slow or absent client never slows the
//! shell); the client's input is counted, so that a client that re-attaches sends what the
//! shell has not taken, once. A shell nobody attached to within the grace is ended, and the
//! link reports it (`GraceExpired`).
//!
//! Who may attach: the user the shell was started for — the same login and certificate key
//! id (the server names user and session in it) — and, as for every connection, only with a
//! fresh certificate bound to this agent and to the shell's session (see `auth`).

use std::collections::HashMap;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use nix::unistd::Pid;
use postern_protocol::SessionId;
use postern_protocol::shell::{Resume, ShellEnd, ShellId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};

use super::process::{Input, Process};
use super::reaper::SessionProcesses;
use super::ring::Ring;

/// The default grace: long enough for a server restart, a node's loss or a laptop's short
/// sleep; short enough that a forgotten shell does not linger for hours.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);
/// Output kept per shell: a few screens of a busy build log and a full-screen program's
/// redraws; 50 detached shells printing without pause cost the agent 50 MiB at most.
pub const RING_BYTES: usize = 1024 * 1024;
/// After the shell exits, a PTY kept open by a background job is read until quiet this long.
const PTY_LINGER: Duration = Duration::from_millis(100);

/// Who a shell belongs to: what the certificate that started it said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub login: String,
    pub key_id: String,
}

/// What the shell's input task does, in order.
pub enum Feed {
    Data(Bytes),
    Resize { cols: u16, rows: u16 },
}

struct Inner {
    ring: Ring,
    /// Client input bytes the shell has taken, counted from its start.
    input: u64,
    /// Set once the shell exited and its last output is in the ring.
    finished: Option<Option<ExitStatus>>,
    /// Bumped by every attach; a client whose generation is old has been displaced.
    generation: u64,
    attached: bool,
}

/// One kept shell.
pub struct Kept {
    pub id: ShellId,
    session: SessionId,
    owner: Owner,
    group: Pid,
    inner: Mutex<Inner>,
    /// Bumped whenever there is something new: output, the end, an attach.
    progress: watch::Sender<u64>,
    feed: mpsc::Sender<Feed>,
    shells: Weak<Shells>,
}

/// What a reader gets from the ring.
pub struct Chunk {
    /// Where `data` starts (later than asked if the asked offset fell off the ring).
    pub from: u64,
    pub data: Vec<u8>,
    /// The input taken so far.
    pub input: u64,
    /// The shell ended and nothing after `data` will come.
    pub finished: Option<Option<ExitStatus>>,
    /// Another client attached since.
    pub displaced: bool,
}

impl Kept {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn group(&self) -> Pid {
        self.group
    }

    /// Starts a client's attachment: the generation it holds, and a receiver that wakes on
    /// every change. An earlier client is displaced.
    pub fn attach(&self) -> (u64, watch::Receiver<u64>) {
        let generation = {
            let mut inner = self.lock();
            inner.generation += 1;
            inner.attached = true;
            inner.generation
        };
        self.progress.send_modify(|n| *n += 1);
        if let Some(shells) = self.shells.upgrade() {
            shells.changed.notify_one();
        }
        (generation, self.progress.subscribe())
    }

    /// Up to `max` bytes from `offset` on, for the client of `generation`.
    pub fn read(&self, offset: u64, max: usize, generation: u64) -> Chunk {
        let inner = self.lock();
        let (from, data) = inner.ring.read(offset, max);
        let at_end = from + data.len() as u64 == inner.ring.end();
        Chunk {
            from,
            data,
            input: inner.input,
            finished: inner.finished.filter(|_| at_end),
            displaced: inner.generation != generation,
        }
    }

    /// Input of the client of `generation`: counted as taken now, written in order (waits
    /// while the shell does not read: backpressure to the client). A displaced client's is
    /// dropped: what it sent late (over a path that came back after its client re-attached)
    /// is what the re-attached client sends again, from the count it was told.
    pub async fn write(&self, feed: Feed, generation: u64) {
        {
            let mut inner = self.lock();
            if inner.generation != generation {
                return;
            }
            if let Feed::Data(data) = &feed {
                inner.input += data.len() as u64;
            }
        }
        let _ = self.feed.send(feed).await;
    }

    /// The client of `generation` went away: unless another took over, the grace starts.
    pub fn detach(self: &Arc<Self>, generation: u64) {
        {
            let mut inner = self.lock();
            if inner.generation != generation {
                return;
            }
            inner.attached = false;
        }
        let Some(shells) = self.shells.upgrade() else {
            return;
        };
        shells.changed.notify_one();
        tracing::info!(session = %self.session, shell = %self.id, grace = ?shells.grace, "shell detached; kept");
        let kept = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(shells.grace).await;
            shells.expire(&kept, generation).await;
        });
    }

    /// The client of `generation` received the shell's end: it is done with.
    pub async fn delivered(&self, generation: u64) {
        if self.lock().generation != generation {
            return;
        }
        if let Some(shells) = self.shells.upgrade() {
            shells.remove(&self.session, &self.id);
            shells.processes.end_group(&self.session, self.group).await;
        }
    }
}

/// The agent's kept shells, by session. One per agent, outliving every link.
pub struct Shells {
    grace: Duration,
    capacity: usize,
    processes: Arc<SessionProcesses>,
    map: Mutex<HashMap<SessionId, HashMap<ShellId, Arc<Kept>>>>,
    /// Sessions whose last kept shell expired, for the link to report.
    expired: Mutex<Vec<SessionId>>,
    /// Wakes the link: an expiry to report, or a session's count of detached shells changed.
    changed: Notify,
}

impl Shells {
    /// Kept shells for `grace` (zero: none are kept, as before shells survived).
    pub fn new(grace: Duration, processes: Arc<SessionProcesses>) -> Arc<Self> {
        Self::with_capacity(grace, RING_BYTES, processes)
    }

    pub fn with_capacity(
        grace: Duration,
        capacity: usize,
        processes: Arc<SessionProcesses>,
    ) -> Arc<Self> {
        Arc::new(Self {
            grace,
            capacity,
            processes,
            map: Mutex::new(HashMap::new()),
            expired: Mutex::new(Vec::new()),
            changed: Notify::new(),
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, HashMap<ShellId, Arc<Kept>>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn enabled(&self) -> bool {
        !self.grace.is_zero()
    }

    /// The sessions with kept shells, in order.
    pub fn sessions(&self) -> Vec<SessionId> {
        let mut sessions: Vec<SessionId> = self.map().keys().cloned().collect();
        sessions.sort();
        sessions
    }

    pub fn has(&self, session: &SessionId) -> bool {
        self.map().contains_key(session)
    }

    /// Kept shells of `session` nobody is attached to: they count as in use, so that the
    /// server's idle timeout does not end the session under them.
    pub fn detached(&self, session: &SessionId) -> u32 {
        self.map().get(session).map_or(0, |shells| {
            let n = shells.values().filter(|k| !k.lock().attached).count();
            u32::try_from(n).unwrap_or(u32::MAX)
        })
    }

    /// Shells held now, and the output bytes they hold (for the memory bound).
    pub fn held(&self) -> (usize, usize) {
        let map = self.map();
        let shells = map.values().flat_map(|s| s.values());
        shells.fold((0, 0), |(n, bytes), k| (n + 1, bytes + k.lock().ring.len()))
    }

    /// The process groups of the kept shells, which outlive a lost link.
    pub fn groups(&self) -> Vec<Pid> {
        let map = self.map();
        map.values()
            .flat_map(|s| s.values().map(|k| k.group))
            .collect()
    }

    /// Sessions whose last kept shell expired since the last call.
    pub fn take_expired(&self) -> Vec<SessionId> {
        std::mem::take(&mut *self.expired.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Resolves when there is news for the link (see `changed`).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// The session stopped: its shells are forgotten (their processes are ended with the
    /// session's, by `SessionProcesses::end`).
    pub fn forget(&self, session: &SessionId) {
        self.map().remove(session);
    }

    /// Every shell is forgotten (the agent stops, or is no longer approved).
    pub fn forget_all(&self) {
        self.map().clear();
    }

    fn remove(&self, session: &SessionId, id: &ShellId) -> bool {
        let mut map = self.map();
        let Some(shells) = map.get_mut(session) else {
            return false;
        };
        let removed = shells.remove(id).is_some();
        if shells.is_empty() {
            map.remove(session);
        }
        drop(map);
        self.changed.notify_one();
        removed
    }

    /// The shell `resume` names in `session`, if `owner`'s.
    pub fn find(
        &self,
        session: &SessionId,
        resume: &Resume,
        owner: &Owner,
    ) -> Result<Arc<Kept>, ShellEnd> {
        let kept = self
            .map()
            .get(session)
            .and_then(|s| s.get(&resume.shell))
            .cloned()
            .ok_or(ShellEnd::Unknown)?;
        if kept.owner != *owner {
            return Err(ShellEnd::NotYours);
        }
        Ok(kept)
    }

    /// Keeps a freshly started PTY shell. `Err` gives the process back when the name is
    /// taken in the session, or the process has no PTY.
    pub fn keep(
        self: &Arc<Self>,
        session: &SessionId,
        id: ShellId,
        owner: Owner,
        process: Process,
    ) -> Result<Arc<Kept>, Box<Process>> {
        if self.map().get(session).is_some_and(|s| s.contains_key(&id)) {
            return Err(Box::new(process));
        }
        let Process {
            mut child,
            group,
            input,
            mut outputs,
        } = process;
        let (mut pty, output) = match (input, outputs.pop()) {
            (Input::Pty(pty), Some(output)) => (pty, output),
            (input, output) => {
                outputs.extend(output);
                return Err(Box::new(Process {
                    child,
                    group,
                    input,
                    outputs,
                }));
            }
        };
        let (feed, mut feeds) = mpsc::channel::<Feed>(64);
        let kept = Arc::new(Kept {
            id: id.clone(),
            session: session.clone(),
            owner,
            group,
            inner: Mutex::new(Inner {
                ring: Ring::new(self.capacity),
                input: 0,
                finished: None,
                generation: 0,
                attached: false,
            }),
            progress: watch::channel(0).0,
            feed,
            shells: Arc::downgrade(self),
        });
        tokio::spawn(async move {
            while let Some(item) = feeds.recv().await {
                match item {
                    Feed::Data(data) => {
                        if pty.write_all(&data).await.is_err() {
                            return;
                        }
                    }
                    Feed::Resize { cols, rows } => {
                        if let Err(error) = pty.resize(pty_process::Size::new(rows, cols)) {
                            tracing::debug!(%error, "terminal resize failed");
                        }
                    }
                }
            }
        });
        let owner_task = kept.clone();
        tokio::spawn(async move {
            let mut reader = output.reader;
            let mut buf = vec![0u8; 32 * 1024];
            let mut status = None;
            loop {
                let read = if status.is_some() {
                    match tokio::time::timeout(PTY_LINGER, reader.read(&mut buf)).await {
                        Ok(read) => read,
                        Err(_) => break,
                    }
                } else {
                    tokio::select! {
                        read = reader.read(&mut buf) => read,
                        exited = child.wait() => {
                            status = Some(exited.ok());
                            continue;
                        }
                    }
                };
                match read {
                    Ok(n) if n > 0 => {
                        owner_task.lock().ring.push(&buf[..n]);
                        owner_task.progress.send_modify(|v| *v += 1);
                    }
                    // EIO: the terminal's last holder is gone.
                    _ => break,
                }
            }
            let status = match status {
                Some(status) => status,
                None => child.wait().await.ok(),
            };
            owner_task.lock().finished = Some(status);
            owner_task.progress.send_modify(|v| *v += 1);
        });
        self.map()
            .entry(session.clone())
            .or_default()
            .insert(id, kept.clone());
        // The server learns which sessions have kept shells (see `sessions`).
        self.changed.notify_one();
        Ok(kept)
    }

    /// The grace of `generation`'s detach is over: unless someone attached since, the shell
    /// is ended, and its session reported if it was the last.
    async fn expire(&self, kept: &Arc<Kept>, generation: u64) {
        {
            let inner = kept.lock();
            if inner.attached || inner.generation != generation {
                return;
            }
        }
        if !self.remove(&kept.session, &kept.id) {
            return;
        }
        tracing::info!(session = %kept.session, shell = %kept.id, "nobody attached within the grace; ending the shell");
        self.processes.end_group(&kept.session, kept.group).await;
        if !self.has(&kept.session) {
            self.expired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(kept.session.clone());
        }
        self.changed.notify_one();
    }
}
