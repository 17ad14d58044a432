//! Postern's shared language: identifiers, the agent ↔ server control messages and their
//! framing, and the facts an agent reports. Pure data and pure functions — no I/O — so the
//! server, the agent and the CLI agree on one definition of every message. One stream
//! adapter both SSH ends use (`sever`) lives here too; it passes I/O through and does none.

#![forbid(unsafe_code)]

pub mod api;
pub mod codec;
pub mod control;
pub mod did;
pub mod enrollment;
pub mod facts;
pub mod integer;
pub mod session;
pub mod sever;
pub mod shell;
pub mod sse;
pub mod status;
pub mod text;
pub mod token;

pub use codec::{ControlCodec, Frame, FrameError, MAX_FRAME_LEN};
pub use control::{AgentMessage, ErrorCode, PROTOCOL_VERSION, ServerMessage};
pub use did::{AgentDid, DidError};
pub use facts::AgentFacts;
pub use session::{AgentId, SessionEvent, SessionId, SessionState};
pub use status::AgentStatus;
pub use token::EnrollmentToken;

/// Name of the SSH subsystem the agent opens on its link for control messages.
pub const CONTROL_SUBSYSTEM: &str = "postern-control";
