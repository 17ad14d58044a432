//! The approval status of an agent.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an agent stands with the server. `revoked` is final: the agent's keys are refused
/// from then on and it must enroll again as a new agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Pending,
    Approved,
    Rejected,
    Revoked,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 4] = [
        AgentStatus::Pending,
        AgentStatus::Approved,
        AgentStatus::Rejected,
        AgentStatus::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Pending => "pending",
            AgentStatus::Approved => "approved",
            AgentStatus::Rejected => "rejected",
            AgentStatus::Revoked => "revoked",
        }
    }

    /// Whether an administrator may move an agent from `self` to `to`.
    /// Approval undoes a rejection; nothing undoes a revocation.
    pub fn can_become(self, to: AgentStatus) -> bool {
        use AgentStatus::*;
        matches!(
            (self, to),
            (Pending, Approved)
                | (Pending, Rejected)
                | (Rejected, Approved)
                | (Pending, Revoked)
                | (Approved, Revoked)
                | (Rejected, Revoked)
        )
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown agent status {0:?} (expected pending, approved, rejected or revoked)")]
pub struct UnknownStatus(pub String);

impl FromStr for AgentStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AgentStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transition_is_decided() {
        use AgentStatus::*;
        for from in AgentStatus::ALL {
            for to in AgentStatus::ALL {
                let allowed = from.can_become(to);
                let expected = match (from, to) {
                    (Revoked, _) => false,
                    (_, Revoked) => true,
                    (Pending | Rejected, Approved) => true,
                    (Pending, Rejected) => true,
                    _ => false,
                };
                assert_eq!(allowed, expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn parses_its_own_names() {
        for st in AgentStatus::ALL {
            assert_eq!(st.as_str().parse::<AgentStatus>().unwrap(), st);
        }
        assert!("online".parse::<AgentStatus>().is_err());
    }
}
