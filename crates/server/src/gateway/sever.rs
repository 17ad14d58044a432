//! An agent connection's socket, which the server can cut from outside.
//!
//! russh's connection loop can wait forever on its peer: writing to a socket the peer does
//! not read, or, after a disconnect, waiting for the peer to close its side (the gateway runs
//! without russh's inactivity timeout, since an idle agent is healthy). A peer that is
//! dropped — it stopped reading, or stopped answering heartbeats — must let go of everything
//! at once, so the socket itself fails every read and write once its `Cut` fires, and the
//! loop ends wherever it waits.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Cuts one connection; clones cut the same one.
#[derive(Clone, Debug, Default)]
pub struct Cut(CancellationToken);

impl Cut {
    pub fn cut(&self) {
        self.0.cancel();
    }

    pub fn is_cut(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once the connection is cut.
    pub async fn done(&self) {
        self.0.cancelled().await
    }
}

pub struct Severable<S> {
    inner: S,
    /// Boxed: polled from both directions, and only its waker registration matters.
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Severable<S> {
    pub fn new(inner: S, cut: &Cut) -> Self {
        Self {
            inner,
            cut: Box::pin(cut.0.clone().cancelled_owned()),
        }
    }

    /// Fails once cut; otherwise registers the task to be woken when it is.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.cut.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection dropped by the server",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Severable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Severable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_cut_ends_a_read_and_a_write_that_wait() {
        let (ours, _theirs) = tokio::io::duplex(8);
        let cut = Cut::default();
        let mut stream = Severable::new(ours, &cut);
        // The peer reads nothing: the write fills the pipe and waits; the cut ends it.
        let writing = async { stream.write_all(&[0u8; 64]).await };
        let (written, ()) = tokio::join!(writing, async { cut.cut() });
        assert_eq!(
            written.unwrap_err().kind(),
            io::ErrorKind::ConnectionAborted
        );
        let mut byte = [0u8; 1];
        assert!(stream.read(&mut byte).await.is_err());
    }
}
