//! The control channel's I/O: frames in, replies out, with bounded backpressure.
//!
//! russh hands each incoming data packet to the channel's queue and, when that queue is
//! full, waits — with the whole connection loop, which then reads nothing more, the peer's
//! window adjustments included. So this link never stops taking data from russh: replies are
//! queued in an outbox that is written as the peer's window allows, *while* frames are read.
//! When the outbox passes `OUTBOX_LIMIT` (the peer does not read its replies) the link stops
//! decoding frames and taking commands, but goes on draining russh into a buffer of at most
//! `PAUSED_READ_LIMIT`; a peer that fills that, or stays backed up for `STALL_TIMEOUT`, is
//! dropped. Everything a link holds is thus bounded, and russh's loop never waits on it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use postern_protocol::{AgentMessage, ControlCodec, Frame, MAX_FRAME_LEN, ServerMessage};
use russh::ChannelStream;
use russh::server::Msg;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::{Decoder, Encoder};

use super::sever::Cut;

/// Replies a peer may leave unread before the link stops taking more from it: some
/// hundreds of error replies, or one largest frame — an agent that reads never gets near.
pub const OUTBOX_LIMIT: usize = 64 * 1024;
/// What a backed-up link still takes in (so that russh never waits on it) before it gives
/// the peer up: 16 largest frames. A reply can be 15 times the size of the bad frame it
/// answers, so a client that pipelines a burst backs the link up long before its window
/// is full; this much lets such a burst wait for the client to read (a wedged link held
/// 16 MiB in russh's queue before).
pub const PAUSED_READ_LIMIT: usize = 16 * MAX_FRAME_LEN;
/// How long a link may stay backed up: a peer that has not read 64 KiB of replies in this
/// time is not an agent that will.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Buffers above this are given back once empty: a burst does not stay with an idle link.
const KEEP_CAPACITY: usize = 4 * 1024;

/// Why a peer was given up, as the read error that ends its link.
#[derive(Debug, thiserror::Error)]
pub enum Backlog {
    #[error("the peer kept writing without reading its replies")]
    Flooding,
    #[error("the peer did not read its replies for {0:?}")]
    Stalled(Duration),
}

/// One agent's control channel. Control messages are small and rare, so both buffers start
/// empty or small and are given back after a burst.
pub struct Link {
    stream: ChannelStream<Msg>,
    codec: ControlCodec<AgentMessage, ServerMessage>,
    read: BytesMut,
    outbox: BytesMut,
    /// Armed while backed up. Boxed: only a backed-up link pays for it.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    pub complaints: Complaints,
    pub cut: Cut,
}

impl Link {
    pub fn new(stream: ChannelStream<Msg>, peer: Option<SocketAddr>, cut: Cut) -> Self {
        Self {
            stream,
            codec: ControlCodec::new(),
            read: BytesMut::with_capacity(256),
            outbox: BytesMut::new(),
            stall: None,
            complaints: Complaints::new(peer),
            cut,
        }
    }

    /// The next frame; meanwhile, queued replies go out as the peer's window allows.
    /// `None` when the channel is closed. Cancel-safe: all state is in `self`.
    pub async fn next(&mut self) -> Option<io::Result<Frame<AgentMessage>>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Queues a message; it is written while the link waits for the next frame.
    pub fn queue(&mut self, message: &ServerMessage) -> io::Result<()> {
        self.codec.encode(message, &mut self.outbox)
    }

    /// The peer does not read its replies: take nothing more that would add to them.
    pub fn backed_up(&self) -> bool {
        self.outbox.len() >= OUTBOX_LIMIT
    }

    /// Writes out everything queued (for a last message before the link closes).
    pub async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outbox.is_empty() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.outbox))?;
            // The channel keeps the unsent rest of a started write and reports it on the
            // next call with the same bytes first: advancing only by `n` keeps that true.
            self.outbox.advance(n);
        }
        if self.outbox.capacity() > KEEP_CAPACITY {
            self.outbox = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.is_empty() && self.read.capacity() > KEEP_CAPACITY {
            self.read = BytesMut::with_capacity(256);
        }
        // Read into the spare room (or 256 more bytes): the buffer grows only as frames need.
        let len = self.read.len();
        let room = (self.read.capacity() - len).max(256);
        self.read.resize(len + room, 0);
        let mut buf = ReadBuf::new(&mut self.read[len..]);
        let read = Pin::new(&mut self.stream).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        self.read.truncate(len + n);
        read.map(|r| r.map(|()| n))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<AgentMessage>>>> {
        if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            if self.backed_up() {
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(STALL_TIMEOUT)));
                if stall.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(io::Error::other(Backlog::Stalled(
                        STALL_TIMEOUT,
                    )))));
                }
                if self.read.len() >= PAUSED_READ_LIMIT {
                    return Poll::Ready(Some(Err(io::Error::other(Backlog::Flooding))));
                }
            } else {
                self.stall = None;
                if let Some(frame) = self.codec.decode(&mut self.read).transpose() {
                    return Poll::Ready(Some(frame));
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(None),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

/// Whether a read error is the link giving its peer up (`Backlog`).
pub fn backlog(error: &io::Error) -> Option<&Backlog> {
    error.get_ref().and_then(|e| e.downcast_ref::<Backlog>())
}

/// Warnings about one peer's bad input: the first few in each minute are logged, the rest
/// counted and summarised, so that a peer cannot fill the log (any key may connect).
pub struct Complaints {
    peer: Option<SocketAddr>,
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// Warnings logged per peer per `COMPLAINT_WINDOW`.
pub const COMPLAINTS_PER_WINDOW: u32 = 5;
pub const COMPLAINT_WINDOW: Duration = Duration::from_secs(60);

impl Complaints {
    fn new(peer: Option<SocketAddr>) -> Self {
        Self {
            peer,
            window: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether to log this complaint; the caller logs it.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        if self
            .window
            .is_none_or(|start| now.duration_since(start) >= COMPLAINT_WINDOW)
        {
            self.summarise();
            self.window = Some(now);
            self.logged = 0;
        }
        if self.logged < COMPLAINTS_PER_WINDOW {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Logs how many complaints went unlogged, if any (at each new window and at the end).
    pub fn summarise(&mut self) {
        if self.suppressed > 0 {
            let peer = self
                .peer
                .map_or_else(|| "an unknown address".to_owned(), |p| p.to_string());
            tracing::warn!(
                suppressed = self.suppressed,
                "{} more bad control frames from {peer}",
                self.suppressed
            );
            self.suppressed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complaints_are_logged_a_few_at_a_time() {
        let mut complaints = Complaints::new(None);
        let logged = (0..1000).filter(|_| complaints.allow()).count();
        assert_eq!(logged, COMPLAINTS_PER_WINDOW as usize);
        assert_eq!(
            complaints.suppressed,
            1000 - u64::from(COMPLAINTS_PER_WINDOW)
        );
        complaints.summarise();
        assert_eq!(complaints.suppressed, 0);
    }

    #[test]
    fn a_backlog_error_is_recognised() {
        let e = io::Error::other(Backlog::Flooding);
        assert!(matches!(backlog(&e), Some(Backlog::Flooding)));
        assert!(backlog(&io::Error::other("x")).is_none());
    }
}
