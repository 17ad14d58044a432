//! The fleet at a glance: the counts per status and connection, and presence — who is
//! connected and whether each answers — as the app polls it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::session::AgentId;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// How many agents there are, over the whole fleet: by status, by connection, and with a
/// session open. Cheap (one grouped count and the in-memory links), for filter chips kept
/// live by asking again when agents change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AgentCounts {
    pub total: u64,
    pub pending: u64,
    pub approved: u64,
    pub rejected: u64,
    pub revoked: u64,
    /// Connected, answering or not.
    pub online: u64,
    /// Connected but silent past their missed heartbeats (counted in `online` too).
    pub not_responding: u64,
    /// With at least one session requested, starting or running.
    pub with_sessions: u64,
}

/// A connected agent and when it was last heard from (its heartbeats), for live
/// "last seen" figures without fetching every agent again.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AgentPresence {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: AgentId,
    pub last_seen: i64,
    pub liveness: Liveness,
}

/// Whether an agent answers, from its heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Connected, and heard from within its expected heartbeats.
    Online,
    /// Still connected, but it missed its last heartbeats (hung, or its network is down);
    /// the link is dropped if it stays silent.
    NotResponding,
    /// Not connected.
    Offline,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Online => "online",
            Liveness::NotResponding => "not_responding",
            Liveness::Offline => "offline",
        }
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One agent's presence in `GET /api/v1/presence/changes`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PresenceChange {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: AgentId,
    pub online: bool,
    /// Unix milliseconds: when the link came up or was last heard from before it went down.
    pub last_seen: i64,
    /// Whether it answers: a change of liveness (not responding, responding again) is a
    /// presence change too.
    pub liveness: Liveness,
}

/// Presence since a cursor: a poll that finds nothing changed costs a few bytes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PresenceChanges {
    /// Pass it as `since` next time.
    pub cursor: String,
    /// True: `agents` lists every online agent, and every agent not listed is offline (the
    /// first poll, after a server restart, or after more changes than the server keeps).
    /// False: `agents` lists only the agents whose presence changed since the cursor.
    pub full: bool,
    pub agents: Vec<PresenceChange>,
}
