//! Which host key the agent accepts from the server: the pinned one, the one its enrollment
//! token names, or (with neither) the first one seen.

use russh::keys::{HashAlg, PublicKey};

/// Which host key the agent accepts from the server.
#[derive(Clone)]
pub enum TrustedServer {
    /// The key pinned on the first connection: only it, ever after.
    Pinned(PublicKey),
    /// Not connected yet, with a token naming the server's fingerprint: only a key with it.
    Fingerprint(String),
    /// Not connected yet, with nothing to go by: the first key seen (then pinned).
    FirstSeen,
}

impl TrustedServer {
    pub fn accepts(&self, key: &PublicKey) -> bool {
        match self {
            Self::Pinned(pinned) => pinned.key_data() == key.key_data(),
            Self::Fingerprint(expected) => fingerprint(key) == *expected,
            Self::FirstSeen => true,
        }
    }

    /// Why `offered` is refused, if it is.
    pub fn refusal(&self, offered: &PublicKey) -> Option<String> {
        if self.accepts(offered) {
            return None;
        }
        let offered = fingerprint(offered);
        match self {
            Self::Pinned(pinned) => Some(format!(
                "the server's host key changed (pinned {}, offered {offered}); refusing to connect",
                fingerprint(pinned)
            )),
            Self::Fingerprint(expected) => Some(format!(
                "the server's host key {offered} is not the one the enrollment token names \
                 ({expected}); refusing to connect"
            )),
            Self::FirstSeen => None,
        }
    }
}

pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}
