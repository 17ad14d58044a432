//! A TCP stream the gateway can cut from outside: russh owns the connection's stream in a
//! task of its own, and only a cut ends a peer stalled in a stage that russh itself never
//! times out (the banner, a key exchange, the wait for authentication).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[derive(Default)]
struct Cut {
    cut: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

/// Cuts the stream it was made with: every read and write fails from then on, and waiting
/// ones wake, so that the task holding the stream ends and closes it.
pub struct Cutter(Arc<Cut>);

impl Cutter {
    pub fn cut(&self) {
        self.0.cut.store(true, Ordering::Release);
        self.0.reader.wake();
        self.0.writer.wake();
    }
}

pub struct CutStream {
    inner: TcpStream,
    cut: Arc<Cut>,
}

impl CutStream {
    pub fn new(inner: TcpStream) -> (Self, Cutter) {
        let cut = Arc::new(Cut::default());
        (
            Self {
                inner,
                cut: cut.clone(),
            },
            Cutter(cut),
        )
    }

    /// Registers the waiting task, then checks: a cut between the two still wakes it.
    fn check(waker: &AtomicWaker, cut: &AtomicBool, cx: &Context<'_>) -> Result<(), io::Error> {
        waker.register(cx.waker());
        if cut.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the gateway",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for CutStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = Self::check(&this.cut.reader, &this.cut.cut, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = Self::check(&this.cut.writer, &this.cut.cut, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = Self::check(&this.cut.writer, &this.cut.cut, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = Self::check(&this.cut.writer, &this.cut.cut, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
