//! Why sessions end: the reasons the server records (shown to people, and read by the CLI),
//! written in one place, and the few labels they fall into for metrics — a recorded reason
//! may carry a name or an agent's text, a label never does.

use std::fmt;

use crate::config::PortRange;

/// Every reason the server gives a session's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// A user's stop, naming them.
    StoppedBy(String),
    AgentRevoked,
    LinkLost,
    IdleTimeout,
    UserDeleted,
    UserDemoted,
    /// Still requested when its time was up, the agent offline.
    AgentOffline,
    /// Still requested when its time was up, the agent online.
    NoAnswer,
    /// Still starting when its time was up.
    NoTunnel,
    /// The agent's own reason, as it gave it.
    Refused(String),
    NoFreePort(PortRange),
    /// Written by the protocol's state machine, which owns this text.
    ServerRestarted,
    /// The node holding the session stopped heartbeating and another node ended it (the
    /// state machine's text, like `ServerRestarted`).
    NodeLost,
    /// The agent ended the session's kept shells: nobody attached within its grace.
    GraceExpired,
    /// The session was detached and the agent, back, no longer has its shells (it was
    /// restarted, or keeps none).
    ShellsLost,
}

const STOPPED_BY: &str = "stopped by ";
const REFUSED: &str = "the agent refused: ";
const NO_FREE_PORT: &str = "no free tunnel port in ";
const SIMPLE: [(EndReason, &str); 10] = [
    (EndReason::GraceExpired, "grace expired"),
    (
        EndReason::ShellsLost,
        "the agent no longer has the session's shells",
    ),
    (EndReason::AgentRevoked, "agent revoked"),
    (EndReason::LinkLost, "agent link lost"),
    (EndReason::IdleTimeout, "idle timeout"),
    (EndReason::UserDeleted, "user deleted"),
    (EndReason::UserDemoted, "user demoted"),
    (EndReason::AgentOffline, "agent offline"),
    (EndReason::NoAnswer, "the agent did not answer in time"),
    (
        EndReason::NoTunnel,
        "the agent did not open its tunnel in time",
    ),
];

impl EndReason {
    /// Every label, for registering the series up front; `other` is for a reason this list
    /// does not know (recorded by an older or newer server).
    pub const LABELS: [&'static str; 16] = [
        "grace_expired",
        "shells_lost",
        "stopped_by_user",
        "agent_revoked",
        "link_lost",
        "idle_timeout",
        "user_deleted",
        "user_demoted",
        "agent_offline",
        "no_answer",
        "no_tunnel",
        "agent_refused",
        "no_free_port",
        "server_restarted",
        "node_lost",
        "other",
    ];

    /// The metric label of this reason.
    pub fn label(&self) -> &'static str {
        match self {
            EndReason::StoppedBy(_) => "stopped_by_user",
            EndReason::AgentRevoked => "agent_revoked",
            EndReason::LinkLost => "link_lost",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::UserDeleted => "user_deleted",
            EndReason::UserDemoted => "user_demoted",
            EndReason::AgentOffline => "agent_offline",
            EndReason::NoAnswer => "no_answer",
            EndReason::NoTunnel => "no_tunnel",
            EndReason::Refused(_) => "agent_refused",
            EndReason::NoFreePort(_) => "no_free_port",
            EndReason::ServerRestarted => "server_restarted",
            EndReason::NodeLost => "node_lost",
            EndReason::GraceExpired => "grace_expired",
            EndReason::ShellsLost => "shells_lost",
        }
    }

    /// The label of a recorded reason (the metric counts a session at its final state, when
    /// only the recorded text is at hand).
    pub fn label_of(recorded: Option<&str>) -> &'static str {
        let Some(text) = recorded else {
            return "other";
        };
        if let Some((reason, _)) = SIMPLE.iter().find(|(_, t)| *t == text) {
            return reason.label();
        }
        if text == SERVER_RESTARTED {
            "server_restarted"
        } else if text == NODE_LOST {
            "node_lost"
        } else if text.starts_with(STOPPED_BY) {
            "stopped_by_user"
        } else if text.starts_with(REFUSED) {
            "agent_refused"
        } else if text.starts_with(NO_FREE_PORT) {
            "no_free_port"
        } else {
            "other"
        }
    }
}

/// The protocol's text for `SessionEvent::ServerRestarted`.
const SERVER_RESTARTED: &str = "server restarted";
/// The protocol's text for `SessionEvent::NodeLost`.
const NODE_LOST: &str = "node lost";

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::StoppedBy(name) => write!(f, "{STOPPED_BY}{name}"),
            EndReason::Refused(reason) => write!(f, "{REFUSED}{reason}"),
            EndReason::NoFreePort(range) => write!(f, "{NO_FREE_PORT}{range}"),
            EndReason::ServerRestarted => f.write_str(SERVER_RESTARTED),
            EndReason::NodeLost => f.write_str(NODE_LOST),
            simple => {
                let text = SIMPLE
                    .iter()
                    .find(|(r, _)| r == simple)
                    .map_or("", |(_, t)| t);
                f.write_str(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use postern_protocol::SessionEvent;
    use postern_protocol::SessionState;
    use postern_protocol::session::transition;

    use super::*;

    #[test]
    fn every_recorded_reason_maps_back_to_its_own_label() {
        let all = [
            EndReason::StoppedBy("otto".into()),
            EndReason::AgentRevoked,
            EndReason::LinkLost,
            EndReason::IdleTimeout,
            EndReason::UserDeleted,
            EndReason::UserDemoted,
            EndReason::AgentOffline,
            EndReason::NoAnswer,
            EndReason::NoTunnel,
            EndReason::Refused("no such login".into()),
            EndReason::NoFreePort(PortRange {
                first: 20000,
                last: 20001,
            }),
            EndReason::ServerRestarted,
            EndReason::NodeLost,
            EndReason::GraceExpired,
            EndReason::ShellsLost,
        ];
        for reason in &all {
            let text = reason.to_string();
            assert!(!text.is_empty(), "{reason:?} has no text");
            assert_eq!(EndReason::label_of(Some(&text)), reason.label(), "{text}");
            assert!(EndReason::LABELS.contains(&reason.label()));
        }
        // A name that looks like a reason stays a user's stop.
        let sneaky = EndReason::StoppedBy("agent revoked".into()).to_string();
        assert_eq!(EndReason::label_of(Some(&sneaky)), "stopped_by_user");
        assert_eq!(EndReason::label_of(Some("something new")), "other");
        assert_eq!(EndReason::label_of(None), "other");
    }

    #[test]
    fn the_restart_text_is_the_state_machines() {
        let step = transition(SessionState::Running, &SessionEvent::ServerRestarted).unwrap();
        assert_eq!(step.reason.as_deref(), Some(SERVER_RESTARTED));
        let step = transition(SessionState::Running, &SessionEvent::NodeLost).unwrap();
        assert_eq!(step.reason.as_deref(), Some(NODE_LOST));
    }
}
