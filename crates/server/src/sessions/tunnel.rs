//! A running session's tunnel: the bound port's accept loop, each connection and each data
//! path stream carried as a `forwarded-tcpip` channel to the agent, and idle tracking.
//!
//! A session is in use while someone is logged in through it, as its agent reports: a
//! connection that never logs in (a port scan, a stalled handshake, a client reconnecting in
//! a loop) does not keep it from going idle. Older agents report nothing; for them every open
//! channel counts, as before. Every channel's bytes are counted for the metrics as they pass.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postern_protocol::{AgentId, SessionId};
use russh::ChannelStream;
use russh::server::{Handle, Msg};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::links::SessionUse;
use crate::metrics::{Direction, Metrics};

/// How much a session is in use — logged-in connections or open channels, by `SessionUse` —
/// which the idle timer watches: it runs only while this is zero.
#[derive(Clone)]
pub struct Activity {
    in_use: Arc<watch::Sender<usize>>,
    counts: SessionUse,
}

/// One open channel, counted while held when channels are what counts.
pub struct ActivityGuard(Option<Activity>);

impl ActivityGuard {
    /// Counts nothing: the node that holds the tunnel counts the channel.
    pub fn elsewhere() -> Self {
        Self(None)
    }
}

impl Activity {
    pub fn new(counts: SessionUse) -> Self {
        Self {
            in_use: Arc::new(watch::channel(0).0),
            counts,
        }
    }

    pub fn enter(&self) -> ActivityGuard {
        if self.counts != SessionUse::Channels {
            return ActivityGuard(None);
        }
        self.in_use.send_modify(|n| *n += 1);
        ActivityGuard(Some(self.clone()))
    }

    /// The agent's count of connections logged in through the session; ignored when channels
    /// are what counts (the agent did not offer logins).
    pub fn logins(&self, count: u32) {
        if self.counts == SessionUse::Logins {
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            self.in_use
                .send_if_modified(|n| std::mem::replace(n, count) != count);
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.in_use.subscribe()
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        if let Some(activity) = &self.0 {
            activity.in_use.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

/// A tunnel and the task accepting on its port, which owns the port's listener.
pub struct OpenTunnel {
    pub tunnel: Tunnel,
    accepting: JoinHandle<()>,
}

impl OpenTunnel {
    pub fn start(tunnel: Tunnel, listener: TcpListener) -> Self {
        let accepting = tokio::spawn(tunnel.clone().serve(listener));
        Self { tunnel, accepting }
    }

    /// Stops the tunnel and returns its port once closed: a session reported stopped
    /// accepts nothing more.
    pub async fn close(self) -> u16 {
        self.tunnel.stop.cancel();
        let _ = self.accepting.await;
        self.tunnel.port
    }
}

/// What the server needs to open channels into a running session.
#[derive(Clone)]
pub struct Tunnel {
    pub session: SessionId,
    /// The agent whose link carries it: only it may report its logins.
    pub agent: AgentId,
    pub port: u16,
    pub handle: Handle,
    pub stop: CancellationToken,
    pub activity: Activity,
    pub metrics: Metrics,
}

impl Tunnel {
    /// Opens one channel to the agent's SSH server for this session.
    pub async fn open(
        &self,
        originator: SocketAddr,
    ) -> Result<(TunnelStream, ActivityGuard), russh::Error> {
        let guard = self.activity.enter();
        let channel = self
            .handle
            .channel_open_forwarded_tcpip(
                self.session.forward_address(),
                u32::from(self.port),
                originator.ip().to_string(),
                u32::from(originator.port()),
            )
            .await?;
        let stream = TunnelStream {
            inner: Inner::Channel(channel.into_stream()),
            to_agent: Some(self.metrics.tunnel_bytes(Direction::ToAgent)),
            from_agent: Some(self.metrics.tunnel_bytes(Direction::FromAgent)),
        };
        Ok((stream, guard))
    }

    /// Accepts connections on the session's port until stopped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let (mut tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        // Out of file descriptors, typically: back off instead of spinning.
                        tracing::warn!(%error, session = %self.session, "tunnel accept failed");
                        tokio::select! {
                            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => continue,
                            _ = self.stop.cancelled() => return,
                        }
                    }
                },
                _ = self.stop.cancelled() => return,
            };
            let _ = tcp.set_nodelay(true);
            let tunnel = self.clone();
            tokio::spawn(async move {
                let (mut channel, _guard) = match tunnel.open(peer).await {
                    Ok(c) => c,
                    Err(error) => {
                        tracing::warn!(%error, session = %tunnel.session, "agent refused a tunnel channel");
                        return;
                    }
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut channel, 64 * 1024, 64 * 1024) => {}
                    _ = tunnel.stop.cancelled() => {}
                }
            });
        }
    }
}

/// One stream to the agent's SSH server: a channel of a tunnel this node holds, its bytes
/// counted each way as they pass, or a node stream to the node that holds the tunnel (which
/// counts them there).
pub struct TunnelStream {
    inner: Inner,
    to_agent: Option<metrics::Counter>,
    from_agent: Option<metrics::Counter>,
}

enum Inner {
    Channel(ChannelStream<Msg>),
    Node(TcpStream),
}

impl TunnelStream {
    /// The bytes of a tunnel on another node, through a node stream to it.
    pub fn through_node(stream: TcpStream) -> Self {
        Self {
            inner: Inner::Node(stream),
            to_agent: None,
            from_agent: None,
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let polled = match &mut me.inner {
            Inner::Channel(c) => Pin::new(c).poll_read(cx, buf),
            Inner::Node(t) => Pin::new(t).poll_read(cx, buf),
        };
        if let Some(counter) = &me.from_agent {
            counter.increment(buf.filled().len().saturating_sub(before) as u64);
        }
        polled
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let polled = match &mut me.inner {
            Inner::Channel(c) => Pin::new(c).poll_write(cx, buf),
            Inner::Node(t) => Pin::new(t).poll_write(cx, buf),
        };
        if let (Poll::Ready(Ok(n)), Some(counter)) = (&polled, &me.to_agent) {
            counter.increment(*n as u64);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Channel(c) => Pin::new(c).poll_flush(cx),
            Inner::Node(t) => Pin::new(t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Channel(c) => Pin::new(c).poll_shutdown(cx),
            Inner::Node(t) => Pin::new(t).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_agents_session_is_in_use_while_a_channel_is_open() {
        let activity = Activity::new(SessionUse::Channels);
        let in_use = activity.subscribe();
        let first = activity.enter();
        let second = activity.enter();
        assert_eq!(*in_use.borrow(), 2);
        // Reports are not trusted from an agent that did not offer them.
        activity.logins(0);
        assert_eq!(*in_use.borrow(), 2);
        drop(first);
        drop(second);
        assert_eq!(*in_use.borrow(), 0);
    }

    #[test]
    fn a_reporting_agents_session_is_in_use_only_while_someone_is_logged_in() {
        let activity = Activity::new(SessionUse::Logins);
        let in_use = activity.subscribe();
        let _channel = activity.enter();
        assert_eq!(*in_use.borrow(), 0, "an open channel is not a login");
        activity.logins(1);
        assert_eq!(*in_use.borrow(), 1);
        activity.logins(0);
        assert_eq!(*in_use.borrow(), 0);
    }
}
