//! The agent's keys on disk: its Ed25519 identity (named by a `did:key`) and the SSH key that
//! authenticates its link. Generated on first start with mode 0600; afterwards reused, and a
//! missing half, a corrupt file or loose permissions are errors — never silently replaced,
//! because a new key would make this device a different agent.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use postern_protocol::AgentDid;
use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};

pub const IDENTITY_FILE: &str = "identity_ed25519_key";
pub const SSH_KEY_FILE: &str = "ssh_ed25519_key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The cause is in the message, not a `source()` (one cause, once): the agent logs these
    /// with `%error`, which shows only the message.
    #[error("cannot read or write {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error(
        "{path} has mode {mode:o}; keys must be readable by their owner only: chmod 600 {path}"
    )]
    Permissions { path: String, mode: u32 },
    #[error(
        "{path} is corrupt or not an Ed25519 OpenSSH private key ({reason}); restore it from a backup, or remove the data directory to enroll as a new agent"
    )]
    Corrupt { path: String, reason: String },
    #[error(
        "{present} exists but {missing} does not; restore the missing file, or remove the data directory to enroll as a new agent"
    )]
    Incomplete { present: String, missing: String },
}

pub struct Identity {
    pub did: AgentDid,
    pub signing_key: SigningKey,
    pub ssh_key: PrivateKey,
}

impl Identity {
    /// Loads the identity from `dir`, creating the directory and both keys on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        ensure_dir(dir)?;
        let id_path = dir.join(IDENTITY_FILE);
        let ssh_path = dir.join(SSH_KEY_FILE);
        let (identity, ssh_key) = match (id_path.exists(), ssh_path.exists()) {
            (true, true) => (read_key(&id_path)?, read_key(&ssh_path)?),
            (false, false) => (create_key(&id_path)?, create_key(&ssh_path)?),
            (true, false) => return Err(incomplete(&id_path, &ssh_path)),
            (false, true) => return Err(incomplete(&ssh_path, &id_path)),
        };
        let seed = match identity.key_data() {
            KeypairData::Ed25519(pair) => pair.private.to_bytes(),
            _ => {
                return Err(IdentityError::Corrupt {
                    path: shown(&id_path),
                    reason: "not an Ed25519 key".into(),
                });
            }
        };
        let signing_key = SigningKey::from_bytes(&seed);
        let did = AgentDid::from_public_key(signing_key.verifying_key().as_bytes());
        Ok(Self {
            did,
            signing_key,
            ssh_key,
        })
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn incomplete(present: &Path, missing: &Path) -> IdentityError {
    IdentityError::Incomplete {
        present: shown(present),
        missing: shown(missing),
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> IdentityError + '_ {
    move |cause| IdentityError::Io {
        path: shown(path),
        cause,
    }
}

fn ensure_dir(dir: &Path) -> Result<(), IdentityError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
    }
    let mode = fs::metadata(dir)
        .map_err(io_error(dir))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "the agent's data directory is open to other users; chmod 700 is advised");
    }
    Ok(())
}

fn check_private(path: &Path) -> Result<(), IdentityError> {
    let mode = fs::metadata(path)
        .map_err(io_error(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Permissions {
            path: shown(path),
            mode,
        });
    }
    Ok(())
}

fn read_key(path: &Path) -> Result<PrivateKey, IdentityError> {
    check_private(path)?;
    let text = fs::read_to_string(path).map_err(|e| IdentityError::Corrupt {
        path: shown(path),
        reason: e.to_string(),
    })?;
    let key = PrivateKey::from_openssh(text.trim()).map_err(|e| IdentityError::Corrupt {
        path: shown(path),
        reason: e.to_string(),
    })?;
    if !matches!(key.key_data(), KeypairData::Ed25519(_)) {
        return Err(IdentityError::Corrupt {
            path: shown(path),
            reason: "not an Ed25519 key".into(),
        });
    }
    Ok(key)
}

fn create_key(path: &Path) -> Result<PrivateKey, IdentityError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| IdentityError::Io {
        path: shown(path),
        cause: std::io::Error::other(e.to_string()),
    })?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| IdentityError::Corrupt {
            path: shown(path),
            reason: e.to_string(),
        })?;
    write_private(path, text.as_bytes())?;
    Ok(key)
}

/// Writes a file only its owner can read, atomically (temp file + rename).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let tmp: PathBuf = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(contents).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_private_keys_and_later_starts_reuse_them() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("agent");
        let first = Identity::load_or_create(&data).unwrap();
        for file in [IDENTITY_FILE, SSH_KEY_FILE] {
            let mode = fs::metadata(data.join(file)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let again = Identity::load_or_create(&data).unwrap();
        assert_eq!(first.did, again.did);
        assert_eq!(first.ssh_key.public_key(), again.ssh_key.public_key());
        assert!(first.did.as_str().starts_with("did:key:z6Mk"));
    }

    #[test]
    fn loose_permissions_are_reported_not_fixed() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(SSH_KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load_or_create(dir.path()).err().unwrap();
        assert!(matches!(
            err,
            IdentityError::Permissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn a_corrupt_or_missing_key_is_an_error_and_nothing_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        let id_path = dir.path().join(IDENTITY_FILE);
        fs::write(&id_path, "not a key").unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::Corrupt { .. })
        ));
        assert_eq!(fs::read_to_string(&id_path).unwrap(), "not a key");

        fs::remove_file(&id_path).unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::Incomplete { .. })
        ));
        assert!(!id_path.exists());
    }
}
