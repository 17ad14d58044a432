//! SSH sessions: identifiers, states, and the one state machine that decides every transition.
//! Pure: the server feeds it events and stores what it returns.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Certificate extension that binds a user certificate to one agent: its value is the DID.
pub const CERT_AGENT_EXTENSION: &str = "postern-agent@postern";

/// Certificate extension that binds a user certificate to one session: its value is the
/// session id. The agent's SSH server accepts the certificate only on that session's
/// forwarded channels. An extension, not a critical option: a device's own sshd
/// (`--local-ssh`) must still accept the certificate, and OpenSSH refuses any critical
/// option it does not know.
pub const CERT_SESSION_EXTENSION: &str = "postern-session@postern";

/// How the agent names a session in its `tcpip-forward` request: this prefix + the session id.
pub const FORWARD_ADDRESS_PREFIX: &str = "postern-session-";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// Session ids are 32 lowercase hex digits (made by the server).
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address an agent puts in its `tcpip-forward` for this session.
    pub fn forward_address(&self) -> String {
        format!("{FORWARD_ADDRESS_PREFIX}{}", self.0)
    }

    pub fn from_forward_address(address: &str) -> Option<Self> {
        Self::parse(address.strip_prefix(FORWARD_ADDRESS_PREFIX)?)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An agent's id: made by the server at enrollment (32 lowercase hex digits), it names the
/// agent in sessions, events and the fleet's views, and never changes (its name may). Not
/// checked when read: ids come from the store as the server made them, and the API names an
/// agent by a reference (id, name or DID prefix) that the server resolves to its record.
/// Serialized as the bare string; schemas show it as one (`schema(value_type = String)` on
/// each field), so the API document reads as it did when ids were strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(String);

impl AgentId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Ids as stored or sent (the server makes random ones; tests name agents freely).
impl From<String> for AgentId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for AgentId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Requested,
    Starting,
    Running,
    /// The path to the agent is broken (a server restart, a lost link) while the agent may
    /// still keep the session's shells: neither running nor ended until the agent re-links
    /// (back to running) or says the shells are gone (ended).
    Detached,
    Stopping,
    Stopped,
    Failed,
}

impl SessionState {
    pub const ALL: [SessionState; 7] = [
        SessionState::Requested,
        SessionState::Starting,
        SessionState::Running,
        SessionState::Detached,
        SessionState::Stopping,
        SessionState::Stopped,
        SessionState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Requested => "requested",
            SessionState::Starting => "starting",
            SessionState::Running => "running",
            SessionState::Detached => "detached",
            SessionState::Stopping => "stopping",
            SessionState::Stopped => "stopped",
            SessionState::Failed => "failed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, SessionState::Stopped | SessionState::Failed)
    }

    /// Open sessions are returned when the same user asks again for the same agent.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            SessionState::Requested
                | SessionState::Starting
                | SessionState::Running
                | SessionState::Detached
        )
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SessionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown session state {s:?}"))
    }
}

/// What can happen to a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The agent accepted `StartSsh`.
    Accepted,
    /// The server bound the tunnel port for the agent's forward: running, for the first
    /// time or again after a detach (the re-attach).
    Forwarded,
    /// The path to the agent broke while it keeps the session's shells (why, for the record).
    Detach(String),
    /// Orderly end: a user's stop, revocation, idle timeout, loss of the link.
    Stop(String),
    /// Channels closed, forward cancelled, port released.
    Released,
    /// Something went wrong: refused, timed out, no free port, agent offline.
    Fail(String),
    /// The server started and found the session open from before: a running one may still
    /// have its shells on the agent (detached); a detached one stays as it is (not an
    /// event for it); any other ends.
    ServerRestarted,
    /// The node that held the session stopped heartbeating, and the agent keeps none of its
    /// shells (a session whose shells it keeps detaches instead: `Detach`); another node ends
    /// it (nothing of it is left to release: its tunnel died with the node). A detached one
    /// waits on for its agent, whichever node it links to next.
    NodeLost,
}

impl SessionEvent {
    pub const SAMPLES: [fn() -> SessionEvent; 8] = [
        || SessionEvent::Accepted,
        || SessionEvent::Forwarded,
        || SessionEvent::Detach("agent link lost".into()),
        || SessionEvent::Stop("stopped by a user".into()),
        || SessionEvent::Released,
        || SessionEvent::Fail("agent offline".into()),
        || SessionEvent::ServerRestarted,
        || SessionEvent::NodeLost,
    ];
}

/// Why a session detached when the server restarted (the text of its history step).
pub const DETACHED_BY_RESTART: &str = "server restarted";
/// Why a session detached when the node holding it was lost (the text of its history step).
pub const DETACHED_BY_NODE_LOSS: &str = "node lost";

/// The outcome of an allowed event: the new state and, for endings and detaches, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub to: SessionState,
    pub reason: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a {state} session cannot take {event}")]
pub struct InvalidTransition {
    pub state: SessionState,
    pub event: String,
}

/// The session state machine. Every (state, event) pair is decided here and nowhere else.
pub fn transition(
    state: SessionState,
    event: &SessionEvent,
) -> Result<Transition, InvalidTransition> {
    use SessionEvent as E;
    use SessionState as S;
    let to = |to: S, reason: Option<&str>| {
        Ok(Transition {
            to,
            reason: reason.map(str::to_owned),
        })
    };
    match (state, event) {
        (S::Requested, E::Accepted) => to(S::Starting, None),
        (S::Starting | S::Detached, E::Forwarded) => to(S::Running, None),
        (S::Running, E::Detach(why)) => to(S::Detached, Some(why)),
        (S::Requested | S::Starting | S::Running | S::Detached, E::Stop(why)) => {
            to(S::Stopping, Some(why))
        }
        (S::Stopping, E::Released) => to(S::Stopped, None),
        (S::Requested | S::Starting | S::Running | S::Detached | S::Stopping, E::Fail(why)) => {
            to(S::Failed, Some(why))
        }
        (S::Running, E::ServerRestarted) => to(S::Detached, Some(DETACHED_BY_RESTART)),
        (S::Requested | S::Starting | S::Stopping, E::ServerRestarted) => {
            to(S::Stopped, Some("server restarted"))
        }
        // A detached session's wait for its agent is not the lost node's: the agent may link
        // to any node, and a survivor takes the wait over. Not an event for it.
        (S::Requested | S::Starting | S::Running | S::Stopping, E::NodeLost) => {
            to(S::Stopped, Some("node lost"))
        }
        (state, event) => Err(InvalidTransition {
            state,
            event: format!("{event:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionState as S;

    /// Typed ids change no message: an agent's id reads and writes as the bare string it was.
    #[test]
    fn agent_ids_travel_as_bare_strings() {
        let agent = crate::api::EventAgent {
            id: AgentId::from("0123abcd"),
            name: "pi".into(),
            did: "did:key:z6Mk".into(),
        };
        let json = r#"{"id":"0123abcd","name":"pi","did":"did:key:z6Mk"}"#;
        assert_eq!(serde_json::to_string(&agent).unwrap(), json);
        let back: crate::api::EventAgent = serde_json::from_str(json).unwrap();
        assert_eq!(back, agent);
        assert_eq!(back.id.as_str(), "0123abcd");
        assert_eq!(back.id.to_string(), "0123abcd");
    }

    /// The full table: every state against every event.
    #[test]
    fn every_state_and_event_pair_is_decided() {
        let expected = |state: S, event: &SessionEvent| -> Option<S> {
            match (state, event) {
                (S::Requested, SessionEvent::Accepted) => Some(S::Starting),
                (S::Starting | S::Detached, SessionEvent::Forwarded) => Some(S::Running),
                (S::Running, SessionEvent::Detach(_)) => Some(S::Detached),
                (s, SessionEvent::Stop(_)) if s.is_open() => Some(S::Stopping),
                (S::Stopping, SessionEvent::Released) => Some(S::Stopped),
                (s, SessionEvent::Fail(_)) if !s.is_final() => Some(S::Failed),
                (S::Running, SessionEvent::ServerRestarted) => Some(S::Detached),
                // Still detached: the agent's word (or the wait for it) decides, as before.
                (S::Detached, SessionEvent::ServerRestarted | SessionEvent::NodeLost) => None,
                (s, SessionEvent::ServerRestarted | SessionEvent::NodeLost) if !s.is_final() => {
                    Some(S::Stopped)
                }
                _ => None,
            }
        };
        let mut decided = 0;
        for state in S::ALL {
            for make in SessionEvent::SAMPLES {
                let event = make();
                let got = transition(state, &event).ok().map(|t| t.to);
                assert_eq!(got, expected(state, &event), "{state} × {event:?}");
                decided += 1;
            }
        }
        assert_eq!(decided, 56);
    }

    #[test]
    fn endings_carry_their_reason() {
        let t = transition(S::Running, &SessionEvent::Stop("idle timeout".into())).unwrap();
        assert_eq!(t.reason.as_deref(), Some("idle timeout"));
        let t = transition(S::Requested, &SessionEvent::Fail("agent offline".into())).unwrap();
        assert_eq!(
            (t.to, t.reason.as_deref()),
            (S::Failed, Some("agent offline"))
        );
        let t = transition(S::Starting, &SessionEvent::ServerRestarted).unwrap();
        assert_eq!(
            (t.to, t.reason.as_deref()),
            (S::Stopped, Some("server restarted"))
        );
        let t = transition(S::Running, &SessionEvent::NodeLost).unwrap();
        assert_eq!((t.to, t.reason.as_deref()), (S::Stopped, Some("node lost")));
        let t = transition(
            S::Running,
            &SessionEvent::Detach(DETACHED_BY_NODE_LOSS.into()),
        )
        .unwrap();
        assert_eq!(
            (t.to, t.reason.as_deref()),
            (S::Detached, Some("node lost"))
        );
        assert!(transition(S::Detached, &SessionEvent::NodeLost).is_err());
    }

    /// A running session's shells may outlive the server and the link: it detaches, and the
    /// agent's forward makes it running again; it never falls to stopped by itself.
    #[test]
    fn a_running_session_detaches_and_re_attaches() {
        let t = transition(S::Running, &SessionEvent::ServerRestarted).unwrap();
        assert_eq!(
            (t.to, t.reason.as_deref()),
            (S::Detached, Some(DETACHED_BY_RESTART))
        );
        let t = transition(S::Running, &SessionEvent::Detach("agent link lost".into())).unwrap();
        assert_eq!(
            (t.to, t.reason.as_deref()),
            (S::Detached, Some("agent link lost"))
        );
        assert!(S::Detached.is_open() && !S::Detached.is_final());
        assert_eq!(
            transition(S::Detached, &SessionEvent::Forwarded)
                .unwrap()
                .to,
            S::Running
        );
        let t = transition(S::Detached, &SessionEvent::Stop("grace expired".into())).unwrap();
        assert_eq!(
            (t.to, t.reason.as_deref()),
            (S::Stopping, Some("grace expired"))
        );
        assert_eq!("detached".parse::<S>(), Ok(S::Detached));
    }

    #[test]
    fn final_states_take_nothing() {
        for state in [S::Stopped, S::Failed] {
            for make in SessionEvent::SAMPLES {
                assert!(transition(state, &make()).is_err());
            }
        }
    }

    #[test]
    fn session_ids_and_forward_addresses() {
        let id = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            SessionId::from_forward_address(&id.forward_address()),
            Some(id)
        );
        assert!(SessionId::parse("../etc/passwd").is_none());
        assert!(SessionId::from_forward_address("0.0.0.0").is_none());
    }
}
