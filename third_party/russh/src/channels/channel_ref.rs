use std::collections::VecDeque;

use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use super::WindowSizeRef;
use crate::ChannelMsg;

/// Data bytes per held message below which a peer is taken to be flooding a stalled channel
/// with tiny messages (see [`ChannelRef::deliver`]): a held message costs about 128 bytes
/// beyond its data, so at 256 the messages' own cost stays under half the window.
const MIN_HELD_DATA_PER_MESSAGE: usize = 256;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
    /// Messages for the reader that did not fit in its queue, oldest first. While any are
    /// held the peer's window is not reopened, so what a compliant peer can add is bounded
    /// by the window (flow control on consumption, see `deliver`).
    held: VecDeque<ChannelMsg>,
    held_data: usize,
    /// The peer closed the channel: once nothing is held, the loop forgets it.
    closed: bool,
}

impl ChannelRef {
    pub fn new(sender: Sender<ChannelMsg>) -> Self {
        Self::with_window(sender, WindowSizeRef::new(0))
    }

    pub(super) fn with_window(sender: Sender<ChannelMsg>, window_size: WindowSizeRef) -> Self {
        Self {
            sender,
            window_size,
            held: VecDeque::new(),
            held_data: 0,
            closed: false,
        }
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    /// Hands `msg` to the channel's reader without waiting for it, so that a reader that
    /// stops reading holds up only its own channel, never the connection's loop: when its
    /// queue is full, `msg` is held here, in order, until the reader takes from the queue
    /// and the loop calls [`Self::release`]. A reader that is gone gets nothing (as before).
    ///
    /// Held data is bounded by the window (the caller refuses data beyond it while messages
    /// are held). Only a peer sending tiny messages to a stalled channel can make their
    /// count outgrow that data (more than the queue's capacity plus one message per
    /// `MIN_HELD_DATA_PER_MESSAGE` data bytes): such a peer waits for the reader, as every
    /// message did before.
    pub(crate) async fn deliver(&mut self, msg: ChannelMsg) {
        self.closed |= matches!(msg, ChannelMsg::Close);
        let msg = if self.held.is_empty() {
            match self.sender.try_send(msg) {
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(msg)) => msg,
            }
        } else {
            msg
        };
        self.held_data += data_len(&msg);
        self.held.push_back(msg);
        while self.held.len()
            > self.sender.max_capacity() + self.held_data / MIN_HELD_DATA_PER_MESSAGE
        {
            let Some(msg) = self.held.pop_front() else {
                break;
            };
            self.held_data -= data_len(&msg);
            if self.sender.send(msg).await.is_err() {
                self.drop_held();
            }
        }
    }

    /// Moves held messages into the reader's queue while it has room. True when none is
    /// left held (the caller may then reopen the peer's window).
    pub(crate) fn release(&mut self) -> bool {
        while let Some(msg) = self.held.pop_front() {
            let len = data_len(&msg);
            match self.sender.try_send(msg) {
                Ok(()) => self.held_data -= len,
                Err(TrySendError::Full(msg)) => {
                    self.held.push_front(msg);
                    return false;
                }
                Err(TrySendError::Closed(_)) => self.drop_held(),
            }
        }
        true
    }

    /// Whether messages wait for room in the reader's queue.
    pub(crate) fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether the peer closed the channel (its `Close` went to the reader, or is held).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    fn drop_held(&mut self) {
        self.held.clear();
        self.held_data = 0;
    }
}

fn data_len(msg: &ChannelMsg) -> usize {
    match msg {
        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len(),
        _ => 0,
    }
}

impl std::ops::Deref for ChannelRef {
    type Target = Sender<ChannelMsg>;

    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::sync::mpsc;

    use super::*;

    fn data(byte: u8, len: usize) -> ChannelMsg {
        ChannelMsg::Data {
            data: Bytes::from(vec![byte; len]),
        }
    }

    fn byte_of(msg: ChannelMsg) -> u8 {
        match msg {
            ChannelMsg::Data { data } => data[0],
            msg => panic!("unexpected message: {msg:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_holds_messages_in_order_without_waiting() {
        let (sender, mut receiver) = mpsc::channel(2);
        let mut chan = ChannelRef::new(sender);
        for byte in 0..5 {
            chan.deliver(data(byte, 1024)).await;
        }
        assert!(chan.is_holding());
        assert!(!chan.release(), "the queue is still full");

        assert_eq!(byte_of(receiver.recv().await.unwrap()), 0);
        assert!(!chan.release(), "room for one of three");
        assert_eq!(byte_of(receiver.recv().await.unwrap()), 1);
        assert_eq!(byte_of(receiver.recv().await.unwrap()), 2);
        assert!(chan.release(), "the last two fit");
        chan.deliver(ChannelMsg::Eof).await;
        assert!(chan.is_holding(), "Eof waits behind the data");
        for byte in 3..5 {
            assert_eq!(byte_of(receiver.recv().await.unwrap()), byte);
        }
        assert!(chan.release());
        assert!(matches!(receiver.recv().await, Some(ChannelMsg::Eof)));
    }

    #[tokio::test]
    async fn what_is_held_for_a_reader_that_is_gone_is_dropped() {
        let (sender, receiver) = mpsc::channel(1);
        let mut chan = ChannelRef::new(sender);
        chan.deliver(data(0, 1)).await;
        chan.deliver(data(1, 1)).await;
        chan.deliver(ChannelMsg::Close).await;
        assert!(chan.is_holding() && chan.is_closed());
        drop(receiver);
        assert!(chan.release());
        assert!(!chan.is_holding());
        chan.deliver(data(2, 1)).await;
        assert!(!chan.is_holding());
    }

    #[tokio::test]
    async fn a_flood_of_tiny_messages_waits_for_the_reader() {
        let (sender, mut receiver) = mpsc::channel(2);
        let mut chan = ChannelRef::new(sender);
        // Two queued, then held up to the queue's capacity again (plus one per 256 bytes).
        for byte in 0..4 {
            chan.deliver(data(byte, 1)).await;
        }
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(msg) = receiver.recv().await {
                got.push(byte_of(msg));
            }
            got
        });
        // The fifth is beyond the bound: delivering it waits until the reader took one.
        chan.deliver(data(4, 1)).await;
        assert!(chan.held.len() <= 2);
        assert!(chan.release());
        drop(chan);
        assert_eq!(reader.await.unwrap(), vec![0, 1, 2, 3, 4]);
    }
}
