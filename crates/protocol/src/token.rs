//! An enrollment token as an agent is given it: the secret that approves the agent, and the
//! fingerprint of the server's host key after an `@`, so that not even the agent's first
//! connection trusts a server blindly. A token without the fingerprint still enrolls; the
//! agent then pins whatever key the server shows first.

use std::fmt;
use std::str::FromStr;

const FINGERPRINT_PREFIX: &str = "SHA256:";
/// Unpadded base64 of a 32-byte digest.
const FINGERPRINT_DIGITS: usize = 43;

#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    secret: String,
    server_fingerprint: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the enrollment token is empty")]
    Empty,
    #[error("the server fingerprint in the enrollment token ({0:?}) is not a SHA256:… fingerprint")]
    BadFingerprint(String),
}

impl EnrollmentToken {
    pub fn new(secret: impl Into<String>, server_fingerprint: Option<String>) -> Self {
        Self {
            secret: secret.into(),
            server_fingerprint,
        }
    }

    /// What the server checks; the only part the agent sends.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The SHA-256 fingerprint (`SHA256:…`) the server's host key must have, if given.
    pub fn server_fingerprint(&self) -> Option<&str> {
        self.server_fingerprint.as_deref()
    }
}

fn is_fingerprint(text: &str) -> bool {
    text.strip_prefix(FINGERPRINT_PREFIX).is_some_and(|digits| {
        digits.len() == FINGERPRINT_DIGITS
            && digits
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    })
}

impl FromStr for EnrollmentToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (secret, fingerprint) = match text.split_once('@') {
            Some((secret, fingerprint)) => (secret, Some(fingerprint)),
            None => (text, None),
        };
        if secret.is_empty() {
            return Err(TokenError::Empty);
        }
        if let Some(fingerprint) = fingerprint
            && !is_fingerprint(fingerprint)
        {
            return Err(TokenError::BadFingerprint(fingerprint.to_owned()));
        }
        Ok(Self::new(secret, fingerprint.map(str::to_owned)))
    }
}

/// The text handed to whoever installs an agent (it contains the secret).
impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.server_fingerprint {
            Some(fingerprint) => write!(f, "{}@{fingerprint}", self.secret),
            None => f.write_str(&self.secret),
        }
    }
}

/// Written and read as its text, in a config file.
impl serde::Serialize for EnrollmentToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EnrollmentToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// The secret is never logged.
impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("secret", &"***")
            .field("server_fingerprint", &self.server_fingerprint)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";

    #[test]
    fn a_token_carries_the_servers_fingerprint_after_an_at_sign() {
        let text = format!("pet_abc@{FP}");
        let token: EnrollmentToken = text.parse().unwrap();
        assert_eq!(token.secret(), "pet_abc");
        assert_eq!(token.server_fingerprint(), Some(FP));
        assert_eq!(token.to_string(), text);
    }

    #[test]
    fn a_token_without_a_fingerprint_is_only_its_secret() {
        let token: EnrollmentToken = " pet_abc\n".parse().unwrap();
        assert_eq!(token.secret(), "pet_abc");
        assert_eq!(token.server_fingerprint(), None);
        assert_eq!(token.to_string(), "pet_abc");
    }

    #[test]
    fn malformed_tokens_are_refused_with_the_reason() {
        assert_eq!("".parse::<EnrollmentToken>(), Err(TokenError::Empty));
        assert_eq!(
            format!("@{FP}").parse::<EnrollmentToken>(),
            Err(TokenError::Empty)
        );
        for bad in [
            "SHA256:short",
            "MD5:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuF!",
            "",
        ] {
            assert_eq!(
                format!("pet_abc@{bad}").parse::<EnrollmentToken>(),
                Err(TokenError::BadFingerprint(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let token: EnrollmentToken = format!("pet_abc@{FP}").parse().unwrap();
        let printed = format!("{token:?}");
        assert!(!printed.contains("pet_abc"), "{printed}");
        assert!(printed.contains(FP));
    }
}
