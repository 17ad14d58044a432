//! Framing for control messages: a 4-byte big-endian length, then one JSON message.
//!
//! A bad frame is an item, not a stream error: a malformed body yields
//! `Err(FrameError::Malformed)` and an oversized one is skipped byte for byte and yields
//! `Err(FrameError::TooLarge)`, so the reader can answer with an error and keep the link.

use std::io;
use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

/// Largest control message accepted or sent. Control messages are small; 64 KiB leaves room
/// for facts and certificates while bounding what a peer can make us buffer.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// What a decoder yields: a message, or a bad frame that was consumed whole.
pub type Frame<T> = Result<T, FrameError>;

pub struct ControlCodec<In, Out> {
    max: usize,
    /// Bytes of an oversized frame still to discard.
    skipping: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> ControlCodec<In, Out> {
    pub fn new() -> Self {
        Self::with_max(MAX_FRAME_LEN)
    }

    pub fn with_max(max: usize) -> Self {
        Self {
            max,
            skipping: 0,
            _types: PhantomData,
        }
    }

    fn skip(&mut self, src: &mut BytesMut) {
        let n = self.skipping.min(src.len());
        src.advance(n);
        self.skipping -= n;
    }
}

impl<In, Out> Default for ControlCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In: DeserializeOwned, Out> Decoder for ControlCodec<In, Out> {
    type Item = Frame<In>;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        if self.skipping > 0 {
            self.skip(src);
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        let Some(header) = src.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > self.max {
            src.advance(4);
            self.skipping = len;
            self.skip(src);
            return Ok(Some(Err(FrameError::TooLarge { len, max: self.max })));
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let body = src.split_to(len);
        Ok(Some(
            serde_json::from_slice(&body).map_err(|e| FrameError::Malformed(e.to_string())),
        ))
    }
}

impl<In, Out: Serialize> Encoder<&Out> for ControlCodec<In, Out> {
    type Error = io::Error;

    fn encode(&mut self, item: &Out, dst: &mut BytesMut) -> io::Result<()> {
        let body = serde_json::to_vec(item).map_err(io::Error::other)?;
        if body.len() > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                FrameError::TooLarge {
                    len: body.len(),
                    max: self.max,
                },
            ));
        }
        dst.reserve(4 + body.len());
        dst.put_u32(body.len() as u32);
        dst.put_slice(&body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{AgentMessage, ServerMessage};

    type AgentSide = ControlCodec<ServerMessage, AgentMessage>;
    type ServerSide = ControlCodec<AgentMessage, ServerMessage>;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn round_trip_across_arbitrary_splits() {
        let msgs = vec![
            AgentMessage::Hello {
                version: 1,
                agent_version: "0.1.0".into(),
                heartbeat_ms: None,
                reports_logins: false,
                keeps_shells: false,
            },
            AgentMessage::Heartbeat { facts: None },
        ];
        let mut wire = BytesMut::new();
        let mut enc = AgentSide::new();
        for m in &msgs {
            enc.encode(m, &mut wire).unwrap();
        }
        // Feed one byte at a time: partial headers and bodies must wait, not fail.
        let mut dec = ServerSide::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(item) = dec.decode(&mut buf).unwrap() {
                out.push(item.unwrap());
            }
        }
        assert_eq!(out, msgs);
    }

    #[test]
    fn malformed_frames_are_reported_and_the_stream_goes_on() {
        let mut dec = ServerSide::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(b"not json"));
        buf.extend_from_slice(&frame(br#"{"type":"exec","command":"id"}"#));
        buf.extend_from_slice(&frame(br#"{"type":"heartbeat"}"#));
        assert!(matches!(
            dec.decode(&mut buf),
            Ok(Some(Err(FrameError::Malformed(_))))
        ));
        assert!(matches!(
            dec.decode(&mut buf),
            Ok(Some(Err(FrameError::Malformed(_))))
        ));
        assert_eq!(
            dec.decode(&mut buf).unwrap().unwrap(),
            Ok(AgentMessage::Heartbeat { facts: None })
        );
    }

    #[test]
    fn oversized_frames_are_skipped_without_buffering_them() {
        let mut dec = ServerSide::with_max(32);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(1000u32).to_be_bytes());
        buf.extend_from_slice(&[b'x'; 10]);
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Err(FrameError::TooLarge { len: 1000, max: 32 }))
        );
        assert!(buf.is_empty());
        // The rest of the oversized body arrives, then a good frame.
        buf.extend_from_slice(&[b'x'; 990]);
        buf.extend_from_slice(&frame(br#"{"type":"heartbeat"}"#));
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Ok(AgentMessage::Heartbeat { facts: None }))
        );
    }

    #[test]
    fn refuses_to_send_oversized_messages() {
        let mut enc = ControlCodec::<ServerMessage, AgentMessage>::with_max(8);
        let mut buf = BytesMut::new();
        assert!(
            enc.encode(&AgentMessage::Heartbeat { facts: None }, &mut buf)
                .is_err()
        );
        assert!(buf.is_empty());
    }
}
