//! This server node's identity: a random id made on the first start and kept in the data
//! directory, so that a restarted node is the same node. The store records it on what the
//! node holds (a session's tunnel), so that recovery after a crash ends that node's sessions
//! and no other node's.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::auth::secret;

/// The node's id file in the data directory.
pub const NODE_ID_FILE: &str = "node_id";

/// A server node's id: 32 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| Self(text.to_owned()))
    }

    /// A fresh id (tests, and the first start).
    pub fn random() -> Self {
        Self(secret::new_id())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    #[error("cannot read or create the node id file {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no node id (32 lowercase hex digits); remove it to make a new one")]
    Corrupt { path: String },
}

/// Reads the node id of `data_dir`, or makes and keeps one on the first start.
pub fn load_or_create(data_dir: &Path) -> Result<NodeId, NodeIdError> {
    let path = data_dir.join(NODE_ID_FILE);
    let shown = path.display().to_string();
    let io = |source| NodeIdError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeId::parse(text.trim()).ok_or(NodeIdError::Corrupt {
            path: shown.clone(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId::random();
            // create_new: the data directory is locked by this server, so nobody races us;
            // a file appearing anyway is an error rather than silently replaced.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            file.write_all(format!("{id}\n").as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_its_id_across_starts_and_a_bad_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        std::fs::write(dir.path().join(NODE_ID_FILE), "not an id").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(NodeIdError::Corrupt { .. })
        ));
    }
}
