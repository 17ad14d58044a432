//! What an agent reports about its device.

use serde::{Deserialize, Serialize};

use crate::text::{clean_line, is_login_name};

/// Longest text fact kept; a device's name or OS string is far shorter.
const MAX_FACT_LEN: usize = 128;
/// Most logins kept: an agent offering more is not describing a real device.
const MAX_LOGINS: usize = 64;

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
    /// What the server keeps of an agent's report: every text field one line without control
    /// characters, capped (a hostile agent can store neither megabytes nor terminal escapes),
    /// and only logins that are POSIX user names (a login may become a certificate principal).
    pub fn sanitized(mut self) -> Self {
        for field in [
            &mut self.hostname,
            &mut self.os,
            &mut self.kernel,
            &mut self.arch,
            &mut self.agent_version,
        ] {
            *field = clean_line(field, MAX_FACT_LEN);
        }
        self.logins.retain(|login| is_login_name(login));
        self.logins.truncate(MAX_LOGINS);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_facts_are_cleaned_and_bad_logins_dropped() {
        let facts = AgentFacts {
            hostname: "box\u{1b}[2J\nforged line".into(),
            os: "x".repeat(1000),
            logins: vec![
                "alice".into(),
                "\u{1b}]0;evil\u{7}".into(),
                "root,admin".into(),
                "bob".into(),
            ],
            ..Default::default()
        }
        .sanitized();
        assert_eq!(facts.hostname, "box[2J forged line");
        assert_eq!(facts.os.len(), MAX_FACT_LEN);
        assert_eq!(facts.logins, ["alice", "bob"]);
    }
}
