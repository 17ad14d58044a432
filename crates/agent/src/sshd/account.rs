//! The OS account a session runs as: looked up in the user database when a certificate is
//! accepted, and only among the logins this agent allows.

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Uid, User};

/// Everything needed to start a process as a login.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// Supplementary groups, resolved in the agent (not in the child, where only
    /// async-signal-safe calls are allowed).
    pub groups: Vec<Gid>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    #[error("login {0:?} is not allowed on this agent")]
    NotAllowed(String),
    #[error("login {0:?} does not exist on this device")]
    Unknown(String),
    #[error("cannot look up login {0:?}: {1}")]
    Lookup(String, String),
}

impl Account {
    /// Resolves `login` if `allowed` (the agent's logins, see `facts::logins`) names it.
    pub fn resolve(login: &str, allowed: &[String]) -> Result<Self, AccountError> {
        if !allowed.iter().any(|a| a == login) {
            return Err(AccountError::NotAllowed(login.to_owned()));
        }
        let lookup = |e: nix::Error| AccountError::Lookup(login.to_owned(), e.to_string());
        let user = User::from_name(login)
            .map_err(lookup)?
            .ok_or_else(|| AccountError::Unknown(login.to_owned()))?;
        let groups = if user.uid == nix::unistd::geteuid() {
            Vec::new() // no switch: the process keeps the agent's own groups
        } else {
            let name = CString::new(login)
                .map_err(|e| AccountError::Lookup(login.to_owned(), e.to_string()))?;
            nix::unistd::getgrouplist(&name, user.gid).map_err(lookup)?
        };
        let shell = if user.shell.as_os_str().is_empty() {
            PathBuf::from("/bin/sh")
        } else {
            user.shell
        };
        Ok(Self {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.dir,
            shell,
        })
    }

    /// Whether processes for this account need the agent to change user (it runs as root).
    pub fn switches_user(&self) -> bool {
        self.uid != nix::unistd::geteuid()
    }

    /// The search path a login shell starts with, as OpenSSH sets it.
    pub fn default_path(&self) -> &'static str {
        if self.uid.is_root() {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        } else {
            "/usr/local/bin:/usr/bin:/bin:/usr/games"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts;

    #[test]
    fn the_agents_own_login_resolves_without_a_user_switch() {
        let own = facts::own_login();
        let account = Account::resolve(&own, &facts::logins(&[])).unwrap();
        assert_eq!(account.name, own);
        assert_eq!(account.uid, nix::unistd::geteuid());
        assert!(!account.switches_user());
        assert!(account.shell.is_absolute());
    }

    #[test]
    fn logins_outside_the_allowed_list_are_refused_even_if_they_exist() {
        let err = Account::resolve("root", &["pi".to_owned()]).unwrap_err();
        assert_eq!(err, AccountError::NotAllowed("root".into()));
    }

    #[test]
    fn allowed_logins_that_do_not_exist_are_reported() {
        let name = "no-such-user-postern";
        let err = Account::resolve(name, &[name.to_owned()]).unwrap_err();
        assert_eq!(err, AccountError::Unknown(name.into()));
    }
}
