//! What the agent remembers between starts besides its keys: the server it enrolled with
//! (pinned host key) and the server's last word on its status.

use std::fs;
use std::path::{Path, PathBuf};

use postern_protocol::control::StatusUpdate;
use russh::keys::PublicKey;

use crate::identity::{IdentityError, write_private};

pub const SERVER_KEY_FILE: &str = "server_host_key.pub";
pub const STATUS_FILE: &str = "status.json";

pub struct AgentState {
    dir: PathBuf,
}

impl AgentState {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The server host key pinned at first enrollment, if any.
    pub fn pinned_server_key(&self) -> Result<Option<PublicKey>, IdentityError> {
        let path = self.dir.join(SERVER_KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                PublicKey::from_openssh(text.trim())
                    .map(Some)
                    .map_err(|e| IdentityError::Corrupt {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(cause) => Err(IdentityError::Io {
                path: path.display().to_string(),
                cause,
            }),
        }
    }

    pub fn pin_server_key(&self, key: &PublicKey) -> Result<(), IdentityError> {
        let text = key.to_openssh().unwrap_or_default();
        write_private(
            &self.dir.join(SERVER_KEY_FILE),
            format!("{text}\n").as_bytes(),
        )
    }

    pub fn last_status(&self) -> Option<StatusUpdate> {
        let text = fs::read_to_string(self.dir.join(STATUS_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save_status(&self, update: &StatusUpdate) -> Result<(), IdentityError> {
        let json = serde_json::to_vec_pretty(update).unwrap_or_default();
        write_private(&self.dir.join(STATUS_FILE), &json)
    }
}
