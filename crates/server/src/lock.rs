//! One server per data directory: an exclusive `flock` on `server.lock` in it, held for the
//! server's life, with the holder's pid in the file so that a second server can name it.
//! The kernel drops the lock when the process ends, however it ends: nothing goes stale.
//! `postern admin add-user` does not take it (SQLite serialises its one write).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

pub const LOCK_FILE: &str = "server.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "data directory {dir} is in use by another postern server ({holder}); stop it first, or give this one another data directory"
    )]
    Held { dir: String, holder: String },
    #[error("cannot lock data directory {dir}")]
    Io { dir: String, source: std::io::Error },
}

/// Held while the server runs; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: Flock<File>,
}

impl DataDirLock {
    /// Takes the lock or says who holds it; never waits.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let shown = dir.display().to_string();
        let io = |source| LockError::Io {
            dir: shown.clone(),
            source,
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let holder = match pid.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "its pid unknown".to_owned(),
                };
                return Err(LockError::Held { dir: shown, holder });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_one_frees_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("(pid {})", std::process::id())),
            "{err}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
