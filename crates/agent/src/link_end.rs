//! Why the link to the server ended, as the log should say it. When the control channel
//! closes, the channel itself only knows that it closed; what happened underneath comes from
//! the link's socket (a timeout on data the server never acknowledged), from russh (no
//! answer to keepalives, or the server's disconnect message), or from nowhere (the server
//! closed the connection). `Watched` wraps the socket, the link's handler reports the rest.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// How long to wait, once the control channel closed, for the connection under it to finish
/// ending and say why: it does so within moments; the bound only keeps a redial from waiting.
const SETTLE: Duration = Duration::from_secs(1);

/// What ended the link, most telling first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// russh sent its keepalives and none was answered.
    Keepalives,
    /// The kernel gave up on data the server never acknowledged (`TCP_USER_TIMEOUT`).
    Unacknowledged,
    /// The server said goodbye, with this message.
    ServerDisconnect(String),
    /// Any other failure of the socket (reset, unreachable…).
    Io(String),
}

impl Cause {
    fn specific(&self) -> bool {
        !matches!(self, Self::Io(_))
    }
}

/// The timings that turn a cause into "no answer within N s".
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub keepalive: Duration,
    pub keepalive_max: usize,
    pub unacked: Duration,
}

/// Collects the cause of one connection's end.
#[derive(Clone)]
pub struct LinkEnd {
    cause: Arc<Mutex<Option<Cause>>>,
    ended: Arc<watch::Sender<bool>>,
}

impl Default for LinkEnd {
    fn default() -> Self {
        Self {
            cause: Arc::default(),
            ended: Arc::new(watch::channel(false).0),
        }
    }
}

impl LinkEnd {
    /// Notes a cause; a specific one replaces a generic socket error, never the reverse.
    pub fn record(&self, cause: Cause) {
        let mut slot = self.cause.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            None => *slot = Some(cause),
            Some(old) if !old.specific() && cause.specific() => *slot = Some(cause),
            Some(_) => {}
        }
    }

    /// A guard for the connection's handler: dropped with it when the connection's task
    /// ends, which tells `explain` that every cause is in.
    pub fn guard(&self) -> EndGuard {
        EndGuard(self.clone())
    }

    /// Why the link ended, given that its control channel reported `closed`.
    pub async fn explain(&self, closed: String, timings: Timings) -> String {
        let mut ended = self.ended.subscribe();
        let _ = tokio::time::timeout(SETTLE, ended.wait_for(|e| *e)).await;
        let cause = self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone();
        describe(cause, closed, timings)
    }
}

fn describe(cause: Option<Cause>, closed: String, t: Timings) -> String {
    match cause {
        Some(Cause::Keepalives) => {
            // russh gives up at the keepalive after `keepalive_max` unanswered ones.
            let within = t.keepalive * u32::try_from(t.keepalive_max + 1).unwrap_or(u32::MAX);
            format!(
                "no answer from the server within {} s: {} keepalives {} apart went unanswered \
                 (network down, or the server hung)",
                secs(within),
                t.keepalive_max,
                humantime::format_duration(t.keepalive)
            )
        }
        Some(Cause::Unacknowledged) => format!(
            "no answer from the server within {} s: data sent was never acknowledged \
             (network down, or the server's host gone)",
            secs(t.unacked)
        ),
        Some(Cause::ServerDisconnect(message)) if message.is_empty() => {
            "the server closed the link".into()
        }
        Some(Cause::ServerDisconnect(message)) => {
            let message: String = message
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            format!("the server closed the link: {message}")
        }
        Some(Cause::Io(error)) => format!("the link failed: {error}"),
        None => closed,
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

pub struct EndGuard(LinkEnd);

impl EndGuard {
    /// What russh reports when the connection ends (its handler's `disconnected`).
    pub fn disconnected(
        &self,
        reason: russh::client::DisconnectReason<russh::Error>,
    ) -> Result<(), russh::Error> {
        match reason {
            russh::client::DisconnectReason::ReceivedDisconnect(info) => {
                self.0.record(Cause::ServerDisconnect(info.message));
                Ok(())
            }
            russh::client::DisconnectReason::Error(error) => {
                self.0.record(match &error {
                    russh::Error::KeepaliveTimeout => Cause::Keepalives,
                    other => Cause::Io(other.to_string()),
                });
                Err(error)
            }
        }
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.ended.send_replace(true);
    }
}

/// The link's socket, noting the first error it returns.
pub struct Watched<S> {
    inner: S,
    end: LinkEnd,
}

impl<S> Watched<S> {
    pub fn new(inner: S, end: LinkEnd) -> Self {
        Self { inner, end }
    }

    fn note<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(error)) = &poll {
            self.end.record(match error.kind() {
                io::ErrorKind::TimedOut => Cause::Unacknowledged,
                _ => Cause::Io(error.to_string()),
            });
        }
        poll
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(poll)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note(poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timings = Timings {
        keepalive: Duration::from_secs(15),
        keepalive_max: 3,
        unacked: Duration::from_secs(45),
    };

    #[test]
    fn each_cause_says_what_happened() {
        let say = |c: Option<Cause>| describe(c, "the server closed the link".into(), T);
        assert!(say(Some(Cause::Keepalives)).starts_with("no answer from the server within 60 s"));
        assert!(
            say(Some(Cause::Unacknowledged)).starts_with("no answer from the server within 45 s")
        );
        assert_eq!(
            say(Some(Cause::ServerDisconnect("bye\x1b[2J".into()))),
            "the server closed the link: bye[2J"
        );
        assert_eq!(say(None), "the server closed the link");
        assert!(say(Some(Cause::Io("reset".into()))).contains("reset"));
    }

    #[test]
    fn a_specific_cause_is_not_replaced_by_a_later_socket_error() {
        let end = LinkEnd::default();
        end.record(Cause::Io("broken pipe".into()));
        end.record(Cause::Keepalives);
        end.record(Cause::Io("not connected".into()));
        end.record(Cause::Unacknowledged);
        assert_eq!(*end.cause.lock().unwrap(), Some(Cause::Keepalives));
    }
}
