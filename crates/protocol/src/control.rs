//! The control messages exchanged on an agent's link, one enum per direction.
//!
//! Conversation: the agent opens the `postern-control` subsystem and sends `Hello` with its
//! protocol version; the server answers `Welcome` with a fresh nonce; the agent sends `Enroll`
//! signed over that nonce; the server answers `Status`, and sends `Status` again whenever an
//! administrator decides. An approved agent then sends `Heartbeat` at its sync rate, and
//! `Logins` whenever the number of connections logged in through one of its sessions changes.
//! Either side answers a message it cannot use with `Error` and goes on.
//!
//! Compatibility: a message gains only optional fields, which older peers ignore; a new
//! message is sent only to a peer that said in its first message that it understands it
//! (`Hello::reports_logins`, `Welcome::wants_logins`), since an older peer would answer it
//! with `Error`. `PROTOCOL_VERSION` changes only for what an older peer cannot ignore.

use serde::{Deserialize, Serialize};

use crate::enrollment::Enrollment;
use crate::facts::AgentFacts;
use crate::session::SessionId;
use crate::status::AgentStatus;

/// Version of the control protocol, carried in the first message of each side.
pub const PROTOCOL_VERSION: u32 = 1;

/// Agent → server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    Hello {
        version: u32,
        agent_version: String,
        /// How often this agent will send `Heartbeat`, in milliseconds: the server counts
        /// missed heartbeats against it. Absent from older agents; the server then assumes
        /// its configured interval (and older servers ignore the field).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heartbeat_ms: Option<u64>,
        /// This agent sends `Logins` when the server's `Welcome` asks for them; the server
        /// then counts a session as in use only while someone is logged in through it. Absent
        /// (false) from older agents: the server then counts the session's open channels.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reports_logins: bool,
        /// This agent keeps sessions' shells across a lost link (`--shell-grace`): after
        /// enrolling it sends `Kept` when the server's `Welcome` asks for it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keeps_shells: bool,
    },
    Enroll(Enrollment),
    /// Liveness at the sync rate, with the facts when they changed.
    Heartbeat {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        facts: Option<AgentFacts>,
    },
    /// The agent's answer to `StartSsh`/`StopSsh`.
    Session {
        session: SessionId,
        reply: SessionReply,
    },
    /// How many connections through this session's tunnel are logged in now, sent whenever
    /// it changes (only to a server whose `Welcome` asked for it). A connection that never
    /// logs in is never counted, so it cannot keep the session from going idle.
    Logins {
        session: SessionId,
        count: u32,
    },
    /// The sessions whose shells this agent keeps, alive or waiting for their user (only to
    /// a server whose `Welcome` asked). Right after enrolling, the server answers each with
    /// `Resume` (the session goes on) or `StopSsh` (it has ended); whichever node the agent
    /// reached decides the same way, the sessions being in the shared store. Sent again
    /// whenever the list changes: a session on it detaches when the link is lost, instead of
    /// ending.
    Kept {
        sessions: Vec<SessionId>,
    },
    /// The last kept shell of a session ended because nobody attached within the grace.
    GraceExpired {
        session: SessionId,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum SessionReply {
    /// It will ask for the session's forward next.
    Accepted,
    Refused {
        reason: String,
    },
}

/// Longest refusal reason kept: it becomes part of a session's reason and an event.
pub const MAX_REASON_LEN: usize = 200;

impl SessionReply {
    /// The reply as the server may record and show it: the agent's reason one line, without
    /// control characters, capped.
    pub fn sanitized(self) -> Self {
        match self {
            Self::Refused { reason } => Self::Refused {
                reason: crate::text::clean_line(&reason, MAX_REASON_LEN),
            },
            accepted => accepted,
        }
    }
}

/// Server → agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        version: u32,
        /// Random, single-use; the enrollment signature covers it, so a captured enrollment
        /// cannot be replayed.
        nonce: String,
        /// The server wants `Logins` from an agent that offered them. Absent (false) from
        /// older servers, which would answer each with `Error`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wants_logins: bool,
        /// The server wants `Kept` from an agent that keeps shells. Absent (false) from
        /// older servers.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumes_shells: bool,
    },
    Status(StatusUpdate),
    /// Open a reverse tunnel for this session: answer, then `tcpip-forward` it. May arrive
    /// more than once for one session; the agent answers each and forwards once.
    StartSsh {
        session: SessionId,
    },
    /// Drop the session's forward and its channels.
    StopSsh {
        session: SessionId,
    },
    /// A session the agent listed in `Kept` goes on: forward it again (`tcpip-forward`).
    /// An agent that no longer keeps it has said `GraceExpired`, and ignores this.
    Resume {
        session: SessionId,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// The agent's record as the server sees it, sent after enrollment and on every decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub status: AgentStatus,
    /// The name the server registered (it may carry a suffix if the wanted one was taken).
    pub name: String,
    /// Why the agent is in this status, for its log (e.g. "enrollment token expired").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The certificate authority that signs user certificates for this agent's SSH server,
    /// in OpenSSH public-key format. Present only when approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ca: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    UnsupportedVersion,
    Malformed,
    FrameTooLarge,
    UnexpectedMessage,
    BadSignature,
    NotApproved,
    Refused,
    Internal,
    /// A code from a newer peer.
    #[serde(other)]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let msg = AgentMessage::Heartbeat { facts: None };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"heartbeat"}"#
        );
        let back: ServerMessage =
            serde_json::from_str(r#"{"type":"welcome","version":1,"nonce":"n"}"#).unwrap();
        assert_eq!(
            back,
            ServerMessage::Welcome {
                version: 1,
                nonce: "n".into(),
                wants_logins: false,
                resumes_shells: false,
            }
        );
    }

    #[test]
    fn login_reports_are_offered_and_asked_for_and_old_peers_parse_without_them() {
        let old: AgentMessage =
            serde_json::from_str(r#"{"type":"hello","version":1,"agent_version":"0.1.0"}"#)
                .unwrap();
        assert!(matches!(
            old,
            AgentMessage::Hello {
                reports_logins: false,
                ..
            }
        ));
        let new = AgentMessage::Hello {
            version: 1,
            agent_version: "0.2.0".into(),
            heartbeat_ms: None,
            reports_logins: true,
            keeps_shells: false,
        };
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""reports_logins":true"#), "{text}");
        assert_eq!(serde_json::from_str::<AgentMessage>(&text).unwrap(), new);
        // What makes an optional field safe: a peer that does not know it ignores it.
        let newer: AgentMessage = serde_json::from_str(
            r#"{"type":"hello","version":1,"agent_version":"9.0.0","field_of_the_future":1}"#,
        )
        .unwrap();
        assert!(matches!(newer, AgentMessage::Hello { .. }));

        let welcome = ServerMessage::Welcome {
            version: 1,
            nonce: "n".into(),
            wants_logins: true,
            resumes_shells: false,
        };
        let text = serde_json::to_string(&welcome).unwrap();
        assert_eq!(
            text,
            r#"{"type":"welcome","version":1,"nonce":"n","wants_logins":true}"#
        );
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).unwrap(),
            welcome
        );

        let logins = AgentMessage::Logins {
            session: SessionId::parse(&"ab".repeat(16)).unwrap(),
            count: 2,
        };
        let text = serde_json::to_string(&logins).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"type":"logins","session":"{}","count":2}}"#,
                "ab".repeat(16)
            )
        );
        assert_eq!(serde_json::from_str::<AgentMessage>(&text).unwrap(), logins);
    }

    #[test]
    fn hello_states_its_heartbeat_and_parses_without_it() {
        let old: AgentMessage =
            serde_json::from_str(r#"{"type":"hello","version":1,"agent_version":"0.1.0"}"#)
                .unwrap();
        assert!(matches!(
            old,
            AgentMessage::Hello {
                heartbeat_ms: None,
                ..
            }
        ));
        let new = AgentMessage::Hello {
            version: 1,
            agent_version: "0.2.0".into(),
            heartbeat_ms: Some(10_000),
            reports_logins: false,
            keeps_shells: false,
        };
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""heartbeat_ms":10000"#), "{text}");
        assert_eq!(serde_json::from_str::<AgentMessage>(&text).unwrap(), new);
    }

    #[test]
    fn kept_shells_are_offered_asked_for_and_listed() {
        let hello = AgentMessage::Hello {
            version: 1,
            agent_version: "0.3.0".into(),
            heartbeat_ms: None,
            reports_logins: true,
            keeps_shells: true,
        };
        let text = serde_json::to_string(&hello).unwrap();
        assert!(text.contains(r#""keeps_shells":true"#), "{text}");
        assert_eq!(serde_json::from_str::<AgentMessage>(&text).unwrap(), hello);
        let id = SessionId::parse(&"cd".repeat(16)).unwrap();
        for message in [
            AgentMessage::Kept {
                sessions: vec![id.clone()],
            },
            AgentMessage::GraceExpired {
                session: id.clone(),
            },
        ] {
            let text = serde_json::to_string(&message).unwrap();
            assert_eq!(
                serde_json::from_str::<AgentMessage>(&text).unwrap(),
                message
            );
        }
        let resume = ServerMessage::Resume { session: id };
        let text = serde_json::to_string(&resume).unwrap();
        assert!(text.starts_with(r#"{"type":"resume""#), "{text}");
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).unwrap(),
            resume
        );
    }

    #[test]
    fn unknown_error_codes_from_newer_peers_still_parse() {
        let msg: ServerMessage =
            serde_json::from_str(r#"{"type":"error","code":"brand_new","message":"m"}"#).unwrap();
        assert!(matches!(
            msg,
            ServerMessage::Error {
                code: ErrorCode::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn unknown_message_types_are_errors_not_panics() {
        assert!(serde_json::from_str::<AgentMessage>(r#"{"type":"shell"}"#).is_err());
        assert!(serde_json::from_str::<AgentMessage>(r#"{"version":1}"#).is_err());
    }
}
