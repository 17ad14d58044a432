//! What a server does before it serves: its data directory, its store, its keys (files for a
//! node alone, the database's for nodes sharing one), joining the other nodes, and binding
//! its listeners.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::store::{self, Database, Store};
use crate::{HOST_KEY_FILE, USER_CA_FILE};
use crate::{ServerConfig, ServerError, clock, keys, node, peer};

/// The same keys' names in a shared database.
const HOST_KEY_NAME: &str = "ssh_host_ed25519_key";
const USER_CA_NAME: &str = "user_ca_ed25519_key";

pub(crate) fn ensure_data_dir(dir: &Path) -> Result<(), ServerError> {
    let err = |source| ServerError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let meta = std::fs::metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(std::io::Error::other("not a directory")));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), "data directory is accessible to other users; chmod 700 is advised");
    }
    Ok(())
}

pub(crate) async fn open_store(
    database: &Database,
    data_dir: &Path,
    pool: store::PgPoolSettings,
) -> Result<Arc<dyn Store>, ServerError> {
    if *database == Database::DataDir {
        ensure_data_dir(data_dir)?;
    }
    Ok(store::open_with(database, data_dir, pool).await?)
}

/// The gateway's host key and the user CA: in the data directory for a node alone; in the
/// database when nodes share it, so that every node presents the same host key to agents and
/// signs certificates with the same CA.
pub(crate) async fn server_keys(
    database: &Database,
    store: &dyn Store,
    data_dir: &Path,
) -> Result<(russh::keys::PrivateKey, russh::keys::PrivateKey), ServerError> {
    if database.is_shared() {
        Ok((
            keys::shared(store, HOST_KEY_NAME).await?,
            keys::shared(store, USER_CA_NAME).await?,
        ))
    } else {
        Ok((
            keys::load_or_create(&data_dir.join(HOST_KEY_FILE))?,
            keys::load_or_create(&data_dir.join(USER_CA_FILE))?,
        ))
    }
}

/// With a shared database: the dialer that reaches the other nodes, the secret they share
/// (from the store) and, with `--node-listen`, the node address to record in this node's row.
pub(crate) async fn join_nodes(
    config: &ServerConfig,
    database: &Database,
    store: &Arc<dyn Store>,
    node: &node::NodeId,
    listener: Option<&TcpListener>,
) -> Result<
    (
        Option<Arc<peer::Dialer>>,
        Option<peer::NodeSecret>,
        Option<SocketAddr>,
    ),
    ServerError,
> {
    if !database.is_shared() {
        if listener.is_some() {
            tracing::warn!("--node-listen without a shared --database: no other node can use it");
        }
        return Ok((None, None, None));
    }
    let now = clock::now_ms();
    let secret = peer::NodeSecret::new(
        &store
            .cluster_key(peer::SECRET_KEY, &peer::NodeSecret::candidate(), now)
            .await?,
    );
    let address = match listener {
        Some(l) => Some(match config.node_address {
            Some(a) => a,
            None => l.local_addr().map_err(|source| ServerError::Bind {
                what: "nodes",
                addr: config
                    .node_listen
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                source,
            })?,
        }),
        None => None,
    };
    let dialer = peer::Dialer::new(
        node.clone(),
        secret.clone(),
        peer::StoreDirectory::new(store.clone()),
    );
    Ok((Some(dialer), Some(secret), address))
}

pub(crate) async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}
