//! The CLI's login, kept in the user's config dir (`POSTERN_HOME` overrides it).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

const FILE: &str = "credentials.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub user: String,
    pub token: String,
    /// For an HTTPS server no system CA vouches for: its pinned certificate or CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<crate::tls::Trust>,
}

pub fn home() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("POSTERN_HOME") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(dir).join("postern"));
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| anyhow!("neither POSTERN_HOME nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".config").join("postern"))
}

pub fn load() -> Result<Option<Credentials>> {
    let path = home()?.join(FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{} is corrupt; run postern login", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub fn save(credentials: &Credentials) -> Result<()> {
    let dir = home()?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(credentials)?)?;
    file.sync_all()?;
    fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn remove() -> Result<()> {
    let path = home()?.join(FILE);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}
