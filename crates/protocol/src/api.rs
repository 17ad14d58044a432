//! The HTTP API's request and response bodies, shared by the server (which serves them and
//! describes them in its OpenAPI document) and the CLI (which reads them).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::facts::AgentFacts;
use crate::session::{AgentId, SessionId, SessionState};
use crate::status::AgentStatus;

mod fleet;
pub use fleet::{AgentCounts, AgentPresence, Liveness, PresenceChange, PresenceChanges};

/// What a user may do. Each role includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads agents, sessions and events.
    Viewer,
    /// A viewer who may also open SSH sessions on approved agents and manage their own.
    Operator,
    /// Everything: approvals, users, enrollment tokens, every session.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?} (expected admin, operator or viewer)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// Every error response: a stable machine code and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ApiError {
    pub error: String,
    pub message: String,
}

#[derive(Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginResponse {
    /// Opaque bearer token; browsers get the same token as an HttpOnly cookie.
    pub token: String,
    /// Unix milliseconds.
    pub expires_at: i64,
    pub user: Me,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Me {
    pub name: String,
    pub role: Role,
    /// The newest event id this user marked as read in the app's notifications.
    #[serde(default)]
    pub notifications_read_up_to: i64,
}

/// `PUT /api/v1/me/notifications`: everything up to this event id has been read.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NotificationsRead {
    #[serde(deserialize_with = "crate::integer::whole")]
    pub read_up_to: i64,
}

/// A user as administrators see it (never the password hash).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UserView {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
}

#[derive(Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateUserRequest {
    /// 1 to 64 letters, digits, '.', '_' or '-' (the server's `valid_user_name`).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9._-]+$", min_length = 1, max_length = 64)
    )]
    pub name: String,
    pub role: Role,
    /// At least 8 characters (the server's `MIN_PASSWORD_CHARS`).
    #[cfg_attr(feature = "openapi", schema(min_length = 8))]
    pub password: String,
}

impl fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UpdateUserRequest {
    pub role: Role,
}

#[derive(Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PasswordRequest {
    /// At least 8 characters (the server's `MIN_PASSWORD_CHARS`).
    #[cfg_attr(feature = "openapi", schema(min_length = 8))]
    pub password: String,
}

impl fmt::Debug for PasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordRequest").finish_non_exhaustive()
    }
}

/// An agent as the API shows it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AgentView {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: AgentId,
    pub name: String,
    pub did: String,
    pub status: AgentStatus,
    /// A link is registered (the agent is connected, though maybe not responding).
    pub online: bool,
    /// Whether the agent answers: see `Liveness`.
    pub liveness: Liveness,
    /// Unix milliseconds of the last sign of life, if the agent was ever connected.
    pub last_seen: Option<i64>,
    pub facts: AgentFacts,
    /// Unix milliseconds.
    pub enrolled_at: i64,
    /// OpenSSH public key of the agent's link and of its built-in SSH server.
    pub ssh_public_key: String,
    /// The address the agent's link came from. Only administrators see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateTokenRequest {
    /// Lifetime in seconds, 1 s to 365 days (default one hour).
    #[serde(default, deserialize_with = "crate::integer::optional_whole")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31536000))]
    pub ttl_secs: Option<u64>,
    /// How many enrollments it approves, 1 to 100000 (default 1).
    #[serde(default, deserialize_with = "crate::integer::optional_whole")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100000))]
    pub uses: Option<u32>,
}

/// An enrollment token as listed; the secret itself is shown only once, at creation.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenView {
    pub id: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: u32,
    pub uses: u32,
    pub revoked: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedToken {
    /// What to give to `postern agent --token`: the secret, then `@` and the server's host
    /// key fingerprint, which the agent requires of the server it first connects to.
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

/// What happened, as stored in the audit log and streamed live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum EventKind {
    #[serde(rename = "agent.enrolled")]
    AgentEnrolled,
    #[serde(rename = "agent.approved")]
    AgentApproved,
    #[serde(rename = "agent.rejected")]
    AgentRejected,
    #[serde(rename = "agent.revoked")]
    AgentRevoked,
    #[serde(rename = "agent.online")]
    AgentOnline,
    #[serde(rename = "agent.offline")]
    AgentOffline,
    /// As many agents wait for approval as the server allows: new agents without a valid
    /// enrollment token are refused until an administrator decides on some. Published once
    /// each time the limit is reached, not for every refusal.
    #[serde(rename = "agent.pending_limit")]
    AgentPendingLimit,
    /// Still connected, but it missed its heartbeats; `agent.online` follows if it recovers,
    /// `agent.offline` if its link is dropped.
    #[serde(rename = "agent.not_responding")]
    AgentNotResponding,
    #[serde(rename = "user.login")]
    UserLogin,
    #[serde(rename = "user.login_failed")]
    UserLoginFailed,
    #[serde(rename = "user.logout")]
    UserLogout,
    #[serde(rename = "user.created")]
    UserCreated,
    #[serde(rename = "user.updated")]
    UserUpdated,
    #[serde(rename = "user.deleted")]
    UserDeleted,
    #[serde(rename = "token.created")]
    TokenCreated,
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    /// A session moved to a new state; `session` says which and why.
    #[serde(rename = "session.state")]
    SessionState,
    #[serde(rename = "certificate.issued")]
    CertificateIssued,
}

impl EventKind {
    pub const ALL: [EventKind; 18] = [
        EventKind::AgentEnrolled,
        EventKind::AgentApproved,
        EventKind::AgentRejected,
        EventKind::AgentRevoked,
        EventKind::AgentOnline,
        EventKind::AgentOffline,
        EventKind::AgentPendingLimit,
        EventKind::AgentNotResponding,
        EventKind::UserLogin,
        EventKind::UserLoginFailed,
        EventKind::UserLogout,
        EventKind::UserCreated,
        EventKind::UserUpdated,
        EventKind::UserDeleted,
        EventKind::TokenCreated,
        EventKind::TokenRevoked,
        EventKind::SessionState,
        EventKind::CertificateIssued,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AgentEnrolled => "agent.enrolled",
            EventKind::AgentApproved => "agent.approved",
            EventKind::AgentRejected => "agent.rejected",
            EventKind::AgentRevoked => "agent.revoked",
            EventKind::AgentOnline => "agent.online",
            EventKind::AgentOffline => "agent.offline",
            EventKind::AgentPendingLimit => "agent.pending_limit",
            EventKind::AgentNotResponding => "agent.not_responding",
            EventKind::UserLogin => "user.login",
            EventKind::UserLoginFailed => "user.login_failed",
            EventKind::UserLogout => "user.logout",
            EventKind::UserCreated => "user.created",
            EventKind::UserUpdated => "user.updated",
            EventKind::UserDeleted => "user.deleted",
            EventKind::TokenCreated => "token.created",
            EventKind::TokenRevoked => "token.revoked",
            EventKind::SessionState => "session.state",
            EventKind::CertificateIssued => "certificate.issued",
        }
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind {s:?}"))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The agent an event is about, named as it was when the event happened.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventAgent {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: AgentId,
    pub name: String,
    pub did: String,
}

/// One audit event. Never carries a device address.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventView {
    /// Increasing; resume a stream after the last one seen.
    pub id: i64,
    /// Unix milliseconds.
    pub time: i64,
    pub kind: EventKind,
    /// Who did it: a user name, or "system".
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<EventAgent>,
    /// For session events: the session and the state it reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<EventSession>,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventSession {
    pub id: SessionId,
    pub state: SessionState,
}

/// One step in a session's life.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SessionStep {
    pub state: SessionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub time: i64,
}

/// An SSH session as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SessionView {
    pub id: SessionId,
    pub agent: EventAgent,
    pub user: String,
    pub state: SessionState,
    /// The tunnel port on the server, while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Why the session ended (or is ending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// Every state so far, oldest first (only in single-session responses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<SessionStep>,
}

/// Ask the server's CA to certify a public key for one session.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CertificateRequest {
    /// OpenSSH public key to certify (the client keeps the private key).
    pub public_key: String,
    /// The login on the device; the agent's default login when absent.
    #[serde(default)]
    pub login: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CertificateResponse {
    /// OpenSSH user certificate (`…-cert-v01@openssh.com …`).
    pub certificate: String,
    pub login: String,
    /// Unix seconds after which the certificate is refused.
    pub valid_before: u64,
    /// The agent's SSH host key as registered at enrollment, to check the device against.
    pub host_key: String,
    pub agent_name: String,
}

/// Text frames the server sends on a web terminal's WebSocket (terminal output travels in
/// binary frames, contiguous from the offset announced by `Attached`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TerminalServerFrame {
    /// The binary output that follows starts at byte `offset` of the shell's output; `reset`:
    /// what was asked for is gone (or belongs to an earlier shell), clear the screen first.
    Attached {
        offset: u64,
        reset: bool,
        /// The shell's name on the device: a socket opened with it (`shell=`) and an offset
        /// re-attaches to this shell, through any server, while the device keeps it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shell: Option<String>,
        /// The shell's input, counted in bytes from its start, that this server has: taken
        /// by the shell, or on its way to it. The browser's input on this socket is numbered
        /// from here; on its first `Attached`, a socket's browser sends again what it typed
        /// past this count (a server that died before passing it on lost it), once.
        #[serde(default)]
        input: u64,
    },
    /// The browser's oldest input frame on this socket not yet acknowledged is this
    /// server's now, ending at byte `end` of the shell's input (see `Attached::input`).
    Input {
        end: u64,
    },
    /// The session moved on (stopping, stopped, failed).
    State {
        state: SessionState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The shell ended; the socket closes after this.
    Exit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },
    /// The device no longer has the shell (its grace ran out while nobody was attached, or
    /// it restarted); the socket closes after this. Opening one without `shell=` starts a
    /// new shell.
    Gone {
        reason: String,
    },
    Error {
        message: String,
    },
}

/// Text frames the browser sends (its keystrokes travel in binary frames).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TerminalClientFrame {
    Resize { cols: u16, rows: u16 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_frames_are_small_tagged_json() {
        let attached = TerminalServerFrame::Attached {
            offset: 42,
            reset: false,
            shell: None,
            input: 7,
        };
        assert_eq!(
            serde_json::to_string(&attached).unwrap(),
            r#"{"type":"attached","offset":42,"reset":false,"input":7}"#
        );
        assert_eq!(
            serde_json::to_string(&TerminalServerFrame::Input { end: 9 }).unwrap(),
            r#"{"type":"input","end":9}"#
        );
        let exit = TerminalServerFrame::Exit {
            status: Some(0),
            signal: None,
        };
        assert_eq!(
            serde_json::to_string(&exit).unwrap(),
            r#"{"type":"exit","status":0}"#
        );
        let resize: TerminalClientFrame =
            serde_json::from_str(r#"{"type":"resize","cols":120,"rows":40}"#).unwrap();
        assert_eq!(
            resize,
            TerminalClientFrame::Resize {
                cols: 120,
                rows: 40
            }
        );
        assert!(
            serde_json::from_str::<TerminalClientFrame>(r#"{"type":"resize","cols":-1}"#).is_err()
        );
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn event_kinds_round_trip_through_their_names() {
        for kind in EventKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(kind.as_str().parse::<EventKind>().unwrap(), kind);
        }
    }

    #[test]
    fn login_request_debug_hides_the_password() {
        let req = LoginRequest {
            user: "a".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{req:?}").contains("hunter2"));
    }
}
