//! What an agent reports about its device.

use serde::{Deserialize, Serialize};

/// Facts about the device, sent at enrollment and whenever they change.
/// Deliberately no network addresses: a device's IP never leaves the server's admin views.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentFacts {
    pub hostname: String,
    /// Distribution or OS name with its version, e.g. "Debian GNU/Linux 12 (bookworm)".
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub agent_version: String,
    /// Logins the agent's SSH server accepts; the first is the default.
    #[serde(default)]
    pub logins: Vec<String>,
}

impl AgentFacts {
    /// Caps every text field so that a hostile agent cannot store megabytes per field.
    pub fn sanitized(mut self) -> Self {
        for field in [
            &mut self.hostname,
            &mut self.os,
            &mut self.kernel,
            &mut self.arch,
            &mut self.agent_version,
        ] {
            let cleaned: String = field
                .chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect();
            *field = cleaned;
        }
        self
    }
}
