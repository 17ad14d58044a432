//! The node-to-node stream's frames and its mutual challenge–response.
//!
//! A frame is a 2-byte big-endian length and that many bytes of JSON, at most
//! [`MAX_FRAME`]. A stream carries, in order: the listener's `challenge`, the dialer's
//! `proof`, the listener's `proof`, one `request`, one `reply` — then, for `connect`, raw
//! bytes both ways. Each proof is HMAC-SHA256, keyed with the cluster's node secret, over a
//! label saying who proves, both nonces and both node ids: fresh nonces on both sides make a
//! recorded proof useless on another stream, and the labels keep a listener's proof from
//! being reflected as a dialer's.

use hmac::{Hmac, KeyInit, Mac};
use postern_protocol::SessionId;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A frame's largest body: requests and replies are a few ids; anything bigger is not ours.
pub const MAX_FRAME: usize = 4096;

/// Bytes in a nonce (sent as hex).
const NONCE_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("node stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("node stream: a frame of {0} bytes (at most {MAX_FRAME})")]
    TooLong(usize),
    #[error("node stream: unreadable frame: {0}")]
    Malformed(String),
    #[error("node stream: expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("node stream: the other node's proof is wrong (a different node secret?)")]
    BadProof,
    #[error("node stream: no randomness: {0}")]
    Random(String),
}

/// What one node asks another, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// "If you hold the link of this session's agent, send it `start_ssh` and time the
    /// start": the session is stored already (the store decided it).
    Start { session: SessionId },
    /// "Splice this stream to a new channel of the running session whose tunnel you hold."
    Connect {
        session: SessionId,
        /// The user's address as the user's node saw it, for the agent's logs.
        originator: std::net::SocketAddr,
    },
    /// "Free what you hold for this ended session: the agent's forward, tunnel, port."
    Release { session: SessionId },
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    /// Done; for `connect`, raw bytes follow.
    Ok,
    /// `start`: this node does not hold the agent's link.
    NotHere,
    /// Refused or failed, with why (shown to the user, as a single node would).
    Error { code: ErrorCode, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    WrongState,
    Channel,
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    Challenge {
        node: String,
        nonce: String,
    },
    Proof {
        /// The dialer's id and nonce; the listener's proof leaves both empty.
        #[serde(default)]
        node: String,
        #[serde(default)]
        nonce: String,
        mac: String,
    },
    Request(Request),
    Reply(Reply),
}

impl Frame {
    fn name(&self) -> &'static str {
        match self {
            Frame::Challenge { .. } => "challenge",
            Frame::Proof { .. } => "proof",
            Frame::Request(_) => "request",
            Frame::Reply(_) => "reply",
        }
    }
}

pub async fn write_frame(
    io: &mut (impl AsyncWrite + Unpin),
    frame: &Frame,
) -> Result<(), WireError> {
    let body = serde_json::to_vec(frame).map_err(|e| WireError::Malformed(e.to_string()))?;
    let len = u16::try_from(body.len())
        .ok()
        .filter(|n| usize::from(*n) <= MAX_FRAME)
        .ok_or(WireError::TooLong(body.len()))?;
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    io.write_all(&out).await?;
    io.flush().await?;
    Ok(())
}

pub async fn read_frame(io: &mut (impl AsyncRead + Unpin)) -> Result<Frame, WireError> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_FRAME {
        return Err(WireError::TooLong(len));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Reads a frame that must be of one kind.
pub async fn expect<T>(
    io: &mut (impl AsyncRead + Unpin),
    expected: &'static str,
    pick: impl FnOnce(Frame) -> Result<T, Frame>,
) -> Result<T, WireError> {
    let frame = read_frame(io).await?;
    pick(frame).map_err(|other| WireError::Unexpected {
        expected,
        got: other.name(),
    })
}

/// A fresh nonce, in hex.
pub fn nonce() -> Result<String, WireError> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| WireError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// Who proves: the one who dialed, or the one who listens.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    Dialer,
    Listener,
}

/// Everything both proofs of one stream are over.
pub struct Transcript<'a> {
    pub listener: &'a str,
    pub listener_nonce: &'a str,
    pub dialer: &'a str,
    pub dialer_nonce: &'a str,
}

impl Transcript<'_> {
    fn mac(&self, secret: &[u8], side: Side) -> Result<Hmac<Sha256>, WireError> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        let label: &[u8] = match side {
            Side::Dialer => b"postern node dialer v1",
            Side::Listener => b"postern node listener v1",
        };
        // Each part with its length: no two different transcripts read the same.
        for part in [
            label,
            self.listener.as_bytes(),
            self.listener_nonce.as_bytes(),
            self.dialer.as_bytes(),
            self.dialer_nonce.as_bytes(),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        Ok(mac)
    }

    /// The proof `side` sends, in hex.
    pub fn prove(&self, secret: &[u8], side: Side) -> Result<String, WireError> {
        Ok(hex::encode(self.mac(secret, side)?.finalize().into_bytes()))
    }

    /// Checks the proof `side` sent, in constant time.
    pub fn verify(&self, secret: &[u8], side: Side, proof: &str) -> Result<(), WireError> {
        let tag = hex::decode(proof).map_err(|_| WireError::BadProof)?;
        self.mac(secret, side)?
            .verify_slice(&tag)
            .map_err(|_| WireError::BadProof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript<'a>(dialer_nonce: &'a str) -> Transcript<'a> {
        Transcript {
            listener: "a",
            listener_nonce: "n1",
            dialer: "b",
            dialer_nonce,
        }
    }

    #[test]
    fn a_proof_holds_only_for_its_secret_its_side_and_its_nonces() {
        let t = transcript("n2");
        let proof = t.prove(b"secret", Side::Dialer).unwrap();
        t.verify(b"secret", Side::Dialer, &proof).unwrap();
        assert!(t.verify(b"other", Side::Dialer, &proof).is_err());
        assert!(t.verify(b"secret", Side::Listener, &proof).is_err());
        assert!(
            transcript("n3")
                .verify(b"secret", Side::Dialer, &proof)
                .is_err()
        );
        assert!(t.verify(b"secret", Side::Dialer, "not hex").is_err());
        assert!(t.verify(b"secret", Side::Dialer, "").is_err());
    }

    #[tokio::test]
    async fn frames_round_trip_and_an_oversized_one_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let frame = Frame::Request(Request::Release {
            session: SessionId::parse(&"a".repeat(32)).unwrap(),
        });
        write_frame(&mut a, &frame).await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap(), frame);
        a.write_all(&u16::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame(&mut b).await,
            Err(WireError::TooLong(_))
        ));
        a.write_all(&3u16.to_be_bytes()).await.unwrap();
        a.write_all(b"{{{").await.unwrap();
        assert!(matches!(
            read_frame(&mut b).await,
            Err(WireError::Malformed(_))
        ));
    }
}
