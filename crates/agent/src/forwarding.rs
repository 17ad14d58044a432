//! The agent's side of SSH sessions: which sessions it accepted, what serves each forwarded
//! channel — the built-in SSH server, or the device's own sshd (`--local-ssh`) — and how many
//! connections are logged in through each, which the server is told (`logins`) so that only
//! they keep a session from going idle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use postern_protocol::SessionId;
use russh::Channel;
use russh::client::Msg;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::sshd::{self, Shells, SshdConfig};

/// What answers on a session's channels.
#[derive(Clone)]
pub enum Target {
    BuiltIn(Arc<SshdConfig>),
    Local(SocketAddr),
}

/// A session this agent accepted.
struct Accepted {
    /// Closes its channels when it is stopped.
    stop: CancellationToken,
    /// Connections logged in through it now, and as the server was last told.
    logins: u32,
    told: u32,
}

/// Sessions this agent accepted, and what the server has yet to hear of their logins.
#[derive(Default)]
pub struct Forwarding {
    sessions: Mutex<HashMap<SessionId, Accepted>>,
    target: Mutex<Option<Target>>,
    /// The server asked for login counts (its `welcome`); an older one would refuse them.
    reporting: AtomicBool,
    /// Wakes the link when a count changed.
    changed: Notify,
}

impl Forwarding {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Accepted>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the server is to be told of logins (for as long as this link lasts).
    pub fn report_logins(&self, wanted: bool) {
        self.reporting.store(wanted, Ordering::Relaxed);
    }

    /// Resolves when a session's login count changed since `changes` was last taken (never,
    /// when the server did not ask for them).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// The sessions whose login count the server has yet to hear, with their counts now:
    /// counts, not events, so that changes in a burst are told once. A kept shell nobody is
    /// attached to counts as a login: it is in use, and must not go idle under its user.
    pub fn changes(&self, shells: &Shells) -> Vec<(SessionId, u32)> {
        if !self.reporting.load(Ordering::Relaxed) {
            return Vec::new();
        }
        self.sessions()
            .iter_mut()
            .filter_map(|(id, s)| {
                let now = s.logins.saturating_add(shells.detached(id));
                (now != s.told).then(|| {
                    s.told = now;
                    (id.clone(), now)
                })
            })
            .collect()
    }

    /// Counts one connection logged in through `session` until the returned guard drops.
    fn log_in(self: &Arc<Self>, session: &SessionId) -> LoggedIn {
        self.count(session, |n| n.saturating_add(1));
        LoggedIn {
            forwarding: self.clone(),
            session: session.clone(),
        }
    }

    fn count(&self, session: &SessionId, change: impl FnOnce(u32) -> u32) {
        if let Some(accepted) = self.sessions().get_mut(session) {
            accepted.logins = change(accepted.logins);
            if self.reporting.load(Ordering::Relaxed) {
                self.changed.notify_one();
            }
        }
    }

    pub fn set_target(&self, target: Option<Target>) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    pub fn ready(&self) -> bool {
        self.target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Records a session as accepted; false if it already was (a repeated `StartSsh`).
    pub fn accept(&self, id: &SessionId) -> bool {
        match self.sessions().entry(id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(Accepted {
                    stop: CancellationToken::new(),
                    logins: 0,
                    told: 0,
                });
                true
            }
        }
    }

    /// Forgets a session and closes its channels; false if it was not known.
    pub fn stop(&self, id: &SessionId) -> bool {
        match self.sessions().remove(id) {
            Some(accepted) => {
                accepted.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Every session ends with the link that carried it.
    pub fn stop_all(&self) {
        for (_, accepted) in self.sessions().drain() {
            accepted.stop.cancel();
        }
    }

    /// What should serve a channel the server opened for `address`, if it names a session
    /// this agent accepted: the target, the session, and its stop token.
    pub fn route(&self, address: &str) -> Option<(Target, SessionId, CancellationToken)> {
        let id = SessionId::from_forward_address(address)?;
        let token = self.sessions().get(&id)?.stop.clone();
        let target = self
            .target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        Some((target, id, token))
    }
}

/// One connection logged in through a session, counted until dropped.
struct LoggedIn {
    forwarding: Arc<Forwarding>,
    session: SessionId,
}

impl Drop for LoggedIn {
    fn drop(&mut self) {
        self.forwarding
            .count(&self.session, |n| n.saturating_sub(1));
    }
}

/// Serves one forwarded channel of `session` until it ends or the session is stopped.
pub async fn serve_channel(
    channel: Channel<Msg>,
    target: Target,
    session: SessionId,
    stop: CancellationToken,
    forwarding: Arc<Forwarding>,
) {
    let mut stream = channel.into_stream();
    match target {
        Target::BuiltIn(config) => {
            let log_in = || forwarding.log_in(&session);
            if let Err(error) = sshd::serve(config, session.clone(), stream, stop, log_in).await {
                tracing::debug!(%error, "SSH connection ended with an error");
            }
        }
        Target::Local(addr) => {
            let relayed = async {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(mut tcp) => {
                        // The device's sshd checks logins, unseen inside the encrypted
                        // stream: a relayed connection counts from the start, as before
                        // agents reported logins; that sshd's own LoginGraceTime bounds one
                        // that never logs in.
                        let _counted = forwarding.log_in(&session);
                        let _ = tcp.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional_with_sizes(
                            &mut tcp,
                            &mut stream,
                            64 * 1024,
                            64 * 1024,
                        )
                        .await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, %addr, "cannot reach the local SSH server")
                    }
                }
            };
            tokio::select! {
                _ = relayed => {}
                _ = stop.cancelled() => {}
            }
        }
    }
}
