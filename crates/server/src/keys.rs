//! The server's own keys in its data dir: the gateway's SSH host key and the user CA.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")]
    Permissions { path: String, mode: u32 },
    #[error("cannot make a new key: {reason}")]
    Generate { reason: String },
    #[error(
        "{path} is not a valid OpenSSH private key ({reason}); restore it from a backup — it is never replaced automatically"
    )]
    Corrupt { path: String, reason: String },
}

/// Loads an Ed25519 key, or creates it (mode 0600) if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<PrivateKey, KeyError> {
    let shown = path.display().to_string();
    let io = |source| KeyError::Io {
        path: shown.clone(),
        source,
    };
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions { path: shown, mode });
            }
            let text = fs::read_to_string(path).map_err(io)?;
            PrivateKey::from_openssh(text.trim()).map_err(|e| KeyError::Corrupt {
                path: shown.clone(),
                reason: e.to_string(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (key, text) = generate().map_err(|e| io(std::io::Error::other(e.to_string())))?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// A new Ed25519 key and its OpenSSH text.
pub fn generate() -> Result<(PrivateKey, String), KeyError> {
    let failed = |reason: String| KeyError::Generate { reason };
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| failed(e.to_string()))?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| failed(e.to_string()))?;
    Ok((key, text.to_string()))
}

/// The key stored in the database under `name` (see `ClusterKeyStore`), made by whichever node
/// asks first: every node of one database holds the same.
pub async fn shared(
    store: &dyn crate::store::Store,
    name: &str,
) -> Result<PrivateKey, crate::ServerError> {
    let (_, candidate) = generate()?;
    let text = store
        .cluster_key(name, &candidate, crate::clock::now_ms())
        .await?;
    Ok(
        PrivateKey::from_openssh(text.trim()).map_err(|e| KeyError::Corrupt {
            path: format!("the database's cluster key {name:?}"),
            reason: e.to_string(),
        })?,
    )
}

pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_kept_and_never_silently_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let first = load_or_create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.public_key(), again.public_key());

        fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyError::Corrupt { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyError::Permissions { .. })
        ));
    }
}
