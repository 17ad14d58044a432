//! What the nodes of one database share: keys every node must hold the same, the nodes
//! themselves, and wake-ups that tell every node that a table changed.

use std::path::PathBuf;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::StoreResult;
use crate::node::NodeId;

/// Where the store lives, from the `database` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// No `database` setting: `postern.db` in the data directory, this node's alone.
    DataDir,
    /// `sqlite:///abs/path.db`: a SQLite file at that path. Several nodes on one machine may
    /// share it (development and tests); SQLite has no cross-process wake-ups, so other nodes
    /// learn of changes by their poll only.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`: a PostgreSQL database that any number of nodes
    /// share.
    Postgres(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatabaseUrlError {
    #[error("a SQLite database URL needs an absolute path: sqlite:///var/lib/postern/postern.db")]
    RelativeSqlitePath,
    #[error(
        "unsupported database URL (the part before \"://\" is {0:?}): use postgres://… or sqlite:///path"
    )]
    Scheme(String),
    #[error("not a database URL: use postgres://user@host/db or sqlite:///path")]
    NotUrl,
}

impl Database {
    /// The store named by the `database` setting (`None`: the data directory's).
    pub fn from_setting(url: Option<&str>) -> Result<Self, DatabaseUrlError> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Self::DataDir);
        };
        let (scheme, rest) = url.split_once("://").ok_or(DatabaseUrlError::NotUrl)?;
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(Self::Postgres(url.to_owned())),
            "sqlite" => {
                let path = PathBuf::from(rest);
                if path.is_absolute() {
                    Ok(Self::Sqlite(path))
                } else {
                    Err(DatabaseUrlError::RelativeSqlitePath)
                }
            }
            other => Err(DatabaseUrlError::Scheme(other.to_owned())),
        }
    }

    /// Whether other nodes may share this store: then the keys every node must hold the same
    /// live in it (see [`ClusterKeyStore`]), not in the data directory.
    pub fn is_shared(&self) -> bool {
        !matches!(self, Self::DataDir)
    }
}

#[async_trait]
pub trait ClusterKeyStore: Send + Sync {
    /// The key stored under `name`, storing `candidate` first if there is none: every node
    /// asking gets the same value, whichever asked first.
    async fn cluster_key(&self, name: &str, candidate: &str, now: i64) -> StoreResult<String>;
}

/// A server node as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: NodeId,
    /// Where other nodes reach it, if it takes node-to-node connections.
    pub address: Option<String>,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

#[async_trait]
pub trait NodeStore: Send + Sync {
    /// Records a node starting (again): its address and start time, heartbeat now.
    async fn register_node(&self, id: &NodeId, address: Option<&str>, now: i64) -> StoreResult<()>;
    /// The node is alive at `now`. False when the node has no row (another node removed it).
    async fn node_heartbeat(&self, id: &NodeId, now: i64) -> StoreResult<bool>;
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>>;
}

/// What changed, named by what a node re-reads. Wake-ups carry no data that must not be lost:
/// the tables are the truth and a node re-reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Events,
    Links,
    Sessions,
    Nodes,
}

impl Topic {
    pub const ALL: [Self; 4] = [Self::Events, Self::Links, Self::Sessions, Self::Nodes];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Links => "links",
            Self::Sessions => "sessions",
            Self::Nodes => "nodes",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Something of `topic` changed (on this node or another).
    Changed(Topic),
    /// Wake-ups may have been missed (the listener reconnected, or a receiver lagged):
    /// re-read everything.
    Resync,
}

/// How many wake-ups a slow receiver may fall behind before it lags (and should resync).
pub const WAKE_BUFFER: usize = 256;

pub trait Wakeups: Send + Sync {
    /// Tells every node of this database, this one included, that `topic` changed. Best
    /// effort: a lost wake-up is made up for by the receivers' poll.
    fn wake(&self, topic: Topic);
    /// Wake-ups from every node that this store can hear (on SQLite: this process only).
    fn wakeups(&self) -> broadcast::Receiver<Wake>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_their_store_or_are_refused_clearly() {
        assert_eq!(Database::from_setting(None), Ok(Database::DataDir));
        assert_eq!(Database::from_setting(Some(" ")), Ok(Database::DataDir));
        assert_eq!(
            Database::from_setting(Some("sqlite:///srv/p.db")),
            Ok(Database::Sqlite(PathBuf::from("/srv/p.db")))
        );
        assert_eq!(
            Database::from_setting(Some("postgresql://u:pw@db/postern")),
            Ok(Database::Postgres("postgresql://u:pw@db/postern".into()))
        );
        assert_eq!(
            Database::from_setting(Some("sqlite://p.db")),
            Err(DatabaseUrlError::RelativeSqlitePath)
        );
        assert_eq!(
            Database::from_setting(Some("mysql://db/x")),
            Err(DatabaseUrlError::Scheme("mysql".into()))
        );
        assert_eq!(
            Database::from_setting(Some("/srv/p.db")),
            Err(DatabaseUrlError::NotUrl)
        );
        assert!(!Database::DataDir.is_shared());
        assert!(Database::Sqlite("/x".into()).is_shared());
    }

    #[test]
    fn topics_read_back_from_their_names() {
        for topic in Topic::ALL {
            assert_eq!(Topic::parse(topic.as_str()), Some(topic));
        }
        assert_eq!(Topic::parse("agents"), None);
    }
}
