//! A byte stream that can be cut from outside, for the SSH connections both ends serve.
//!
//! russh's connection task can wait forever on its peer: writing to a socket the peer does
//! not read, or, after a disconnect, waiting for the peer to close its side. A peer that is
//! given up — on the server, an agent that stopped reading or answering heartbeats; on the
//! agent, a connection past its login grace or of a stopped session — must let go of
//! everything at once. So once the token is cancelled every read, write, flush and shutdown
//! of the stream fails, and the task ends wherever it waits. No I/O of its own: it only passes
//! the inner stream's through, or refuses it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub struct Severable<S> {
    inner: S,
    /// Boxed: polled from both directions, and only its waker registration matters.
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Severable<S> {
    /// `inner`, cut when `cut` is cancelled.
    pub fn new(inner: S, cut: CancellationToken) -> Self {
        Self {
            inner,
            cut: Box::pin(cut.cancelled_owned()),
        }
    }

    /// Fails once cut; otherwise registers the task to be woken when it is.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.cut.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection cut",
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

    /// Refused too once cut: shutting down a russh channel stream waits for room in the
    /// connection's queue, and a cut stream must wait on nothing. Dropping it ends it.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_cut_ends_a_read_and_a_write_that_wait_and_refuses_a_shutdown() {
        let (ours, mut theirs) = tokio::io::duplex(8);
        let cut = CancellationToken::new();
        let mut stream = Severable::new(ours, cut.clone());
        theirs.write_all(b"hi").await.unwrap();
        let mut two = [0u8; 2];
        stream.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"hi");
        // The peer reads nothing: the write fills the pipe and waits; the cut ends it.
        let writing = async { stream.write_all(&[0u8; 64]).await };
        let (written, ()) = tokio::join!(writing, async { cut.cancel() });
        assert_eq!(
            written.unwrap_err().kind(),
            io::ErrorKind::ConnectionAborted
        );
        let mut byte = [0u8; 1];
        assert!(stream.read(&mut byte).await.is_err());
        assert!(stream.shutdown().await.is_err());
    }

    #[tokio::test]
    async fn a_read_that_waits_fails_when_the_stream_is_cut() {
        let (ours, _theirs) = tokio::io::duplex(8);
        let cut = CancellationToken::new();
        let mut stream = Severable::new(ours, cut.clone());
        let reading = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            stream.read(&mut byte).await
        });
        cut.cancel();
        let error = reading.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
    }
}
