//! Serves the router over HTTP/1.1 with hyper, one task per connection, with two limits
//! `axum::serve` does not have: a connection must send a complete request header within
//! the header timeout (from accept, or from the first byte of a later request), and a
//! keep-alive connection with no request for the idle timeout is closed. Neither applies
//! while a request is being served, so event streams and WebSocket upgrades (which leave
//! this loop altogether) run as long as they like; a request's body, though, must arrive
//! within the header timeout of its header. With HTTPS, the TLS handshake must complete
//! within the header timeout of accept, before the header's own timeout starts.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The HTTP connection limits (see docs/ARCHITECTURE.md, "HTTP connections").
#[derive(Clone, Copy, Debug)]
pub struct HttpTimeouts {
    /// From accept, or from the first byte of a request, to its complete header.
    pub header: Duration,
    /// From the end of a response to the first byte of the next request.
    pub idle: Duration,
}

/// Where a connection is between requests; only `Serving` has no deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading a request header (a new connection starts here).
    Header,
    /// Requests being served (HTTP/1.1 pipelining may queue more than one).
    Serving(usize),
    /// Between requests, nothing received yet.
    Idle,
}

type PhaseTx = watch::Sender<Phase>;

/// Accepts until `stop`, then lets open connections finish and waits for them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: HttpTimeouts,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    // Every connection task holds a sender; when all are gone, `recv` ends.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                if !is_per_connection(&error) {
                    // Out of file descriptors or the like: retrying at once would spin.
                    tracing::error!(%error, "cannot accept HTTP connections");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => break,
                    }
                }
                continue;
            }
        };
        tune(&tcp);
        let open = open_tx.clone();
        let app = app.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(tcp, peer, app, timeouts, stop).await,
                Some(tls) => {
                    if let Some(stream) = handshake(tls, tcp, peer, timeouts, &stop).await {
                        connection(stream, peer, app, timeouts, stop).await;
                    }
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_tx);
    let _ = open_rx.recv().await;
}

/// A peer that vanished without a word (a pulled cable, a closed laptop, a NAT that forgot
/// the flow) is found this long after its last sign of life: see [`tune`].
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;
const UNACKNOWLEDGED_MAX: Duration = Duration::from_secs(60);

/// Socket options of every accepted connection. Terminal keystrokes and data-path frames are
/// small writes: no Nagle delay. A vanished client would otherwise hold its WebSocket — a
/// shell's data path, the web terminal — with its tasks until the kernel gives up by itself,
/// which on an idle connection is never: keepalive probes find it (after 30 s of silence,
/// three probes 10 s apart), and TCP_USER_TIMEOUT ends a connection whose sent data stays
/// unacknowledged for 60 s. A live client's kernel answers both, however slowly the program
/// behind it reads (a zero window is acknowledged), so a slow reader is never cut.
fn tune(tcp: &TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let socket = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(error) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "cannot set TCP keepalive");
    }
    if let Err(error) = socket.set_tcp_user_timeout(Some(UNACKNOWLEDGED_MAX)) {
        tracing::debug!(%error, "cannot set TCP_USER_TIMEOUT");
    }
}

/// Errors that concern one connection only (it went away before it was accepted).
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The TLS handshake, within the header timeout: a client that connects and stalls holds a
/// socket no longer than one that stalls its header.
async fn handshake(
    tls: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeouts: HttpTimeouts,
    stop: &CancellationToken,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let done = tokio::select! {
        done = tokio::time::timeout(timeouts.header, tls.accept(tcp)) => done,
        _ = stop.cancelled() => return None,
    };
    match done {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, %peer, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not done in time");
            None
        }
    }
}

async fn connection<S>(
    tcp: S,
    peer: SocketAddr,
    app: Router,
    timeouts: HttpTimeouts,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (phase, watched) = watch::channel(Phase::Header);
    let io = TokioIo::new(Watched {
        inner: tcp,
        phase: phase.clone(),
    });
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(|body| {
            if http_body::Body::is_end_stream(&body) {
                Body::new(body)
            } else {
                Body::new(BodyDeadline::new(body, timeouts.header))
            }
        });
        request.extensions_mut().insert(ConnectInfo(peer));
        let serving = InFlight::start(phase.clone());
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(Tracked {
                    body,
                    _serving: serving,
                })
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // Ours (above) replaces hyper's, which would also cut idle connections at the
        // header timeout.
        .header_read_timeout(None)
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(error) = done {
                    tracing::debug!(%error, %peer, "HTTP connection ended");
                }
                return;
            }
            () = deadline(watched.clone(), timeouts) => {
                tracing::debug!(%peer, "HTTP connection closed: no request in time");
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                // Idle connections close now; a request being served finishes first.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Completes when the connection has been waiting for a request longer than allowed.
async fn deadline(mut phase: watch::Receiver<Phase>, timeouts: HttpTimeouts) {
    loop {
        let limit = match *phase.borrow_and_update() {
            Phase::Header => Some(timeouts.header),
            Phase::Idle => Some(timeouts.idle),
            Phase::Serving(_) => None,
        };
        let changed = match limit {
            Some(limit) => tokio::select! {
                changed = phase.changed() => changed,
                () = tokio::time::sleep(limit) => return,
            },
            None => phase.changed().await,
        };
        if changed.is_err() {
            // The connection is gone; its task ends through the other branch.
            return std::future::pending().await;
        }
    }
}

/// Counts a request as being served until its response body is done (or dropped).
struct InFlight(PhaseTx);

impl InFlight {
    fn start(phase: PhaseTx) -> Self {
        phase.send_modify(|p| {
            *p = match *p {
                Phase::Serving(n) => Phase::Serving(n + 1),
                Phase::Header | Phase::Idle => Phase::Serving(1),
            }
        });
        Self(phase)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|p| {
            *p = match *p {
                Phase::Serving(n) if n > 1 => Phase::Serving(n - 1),
                _ => Phase::Idle,
            }
        });
    }
}

/// A response body that keeps its request counted as in flight while it is sent.
struct Tracked {
    body: Body,
    _serving: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body must arrive within the header timeout of its header too: a client that
/// announces a body and trickles or withholds it would otherwise hold its connection (and a
/// handler) for ever, since a request being served has no other deadline.
struct BodyDeadline {
    body: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl BodyDeadline {
    fn new(body: Incoming, limit: Duration) -> Self {
        Self {
            body,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTooSlow;

impl http_body::Body for BodyDeadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let me = self.get_mut();
        match Pin::new(&mut me.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match me.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyTooSlow.into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's stream (TCP, or TLS over it), noting the first byte of a request that
/// arrives on an idle connection (the header timeout starts there).
struct Watched<S> {
    inner: S,
    phase: PhaseTx,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut me.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            me.phase.send_if_modified(|p| {
                let idle = *p == Phase::Idle;
                if idle {
                    *p = Phase::Header;
                }
                idle
            });
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
