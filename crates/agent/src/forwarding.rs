//! The agent's side of SSH sessions: which sessions it accepted, and what serves each
//! forwarded channel — the built-in SSH server, or the device's own sshd (`--local-ssh`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use postern_protocol::SessionId;
use russh::Channel;
use russh::client::Msg;
use tokio_util::sync::CancellationToken;

use crate::sshd::{self, SshdConfig};

/// What answers on a session's channels.
#[derive(Clone)]
pub enum Target {
    BuiltIn(Arc<SshdConfig>),
    Local(SocketAddr),
}

/// Sessions this agent accepted, each with a token that closes its channels when stopped.
#[derive(Default)]
pub struct Forwarding {
    sessions: Mutex<HashMap<SessionId, CancellationToken>>,
    target: Mutex<Option<Target>>,
}

impl Forwarding {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, CancellationToken>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
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
                slot.insert(CancellationToken::new());
                true
            }
        }
    }

    /// Forgets a session and closes its channels; false if it was not known.
    pub fn stop(&self, id: &SessionId) -> bool {
        match self.sessions().remove(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Every session ends with the link that carried it.
    pub fn stop_all(&self) {
        for (_, token) in self.sessions().drain() {
            token.cancel();
        }
    }

    /// What should serve a channel the server opened for `address`, if it names a session
    /// this agent accepted: the target, the session, and its stop token.
    pub fn route(&self, address: &str) -> Option<(Target, SessionId, CancellationToken)> {
        let id = SessionId::from_forward_address(address)?;
        let token = self.sessions().get(&id)?.clone();
        let target = self
            .target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        Some((target, id, token))
    }
}

/// Serves one forwarded channel of `session` until it ends or the session is stopped.
pub async fn serve_channel(
    channel: Channel<Msg>,
    target: Target,
    session: SessionId,
    stop: CancellationToken,
) {
    let mut stream = channel.into_stream();
    match target {
        Target::BuiltIn(config) => {
            if let Err(error) = sshd::serve(config, session, stream, stop).await {
                tracing::debug!(%error, "SSH connection ended with an error");
            }
        }
        Target::Local(addr) => {
            let relayed = async {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(mut tcp) => {
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
