//! Private swarms: a pre-shared key that every connection of a private network
//! is encrypted with before anything else is said (libp2p's `pnet`, the same
//! key file format as go-libp2p and IPFS). A node without the key, or with
//! another one, cannot complete a handshake with the network's nodes, so it
//! cannot join, store, read or ask for anything.
//!
//! The key is a shared secret, not an identity: it keeps outsiders out of the
//! network as a whole; who may change a namespace is a separate question.

use std::{fmt, str::FromStr};

use libp2p::pnet::{KeyParseError, PreSharedKey};

/// A network's 32-byte pre-shared key.
#[derive(Clone, Copy)]
pub struct SwarmKey(PreSharedKey);

/// Why a swarm key file was refused, worded for the person who wrote it.
#[derive(Debug, thiserror::Error)]
#[error("not a swarm key: {0} (generate one with `p3ctl swarm-key new > FILE`)")]
pub struct SwarmKeyError(&'static str);

impl SwarmKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(PreSharedKey::new(rand::random()))
    }

    /// Parses the text of a key file: `/key/swarm/psk/1.0.0/`, `/base16/` and
    /// 64 hex digits, one per line.
    pub fn parse(text: &str) -> Result<Self, SwarmKeyError> {
        // libp2p slices the key line by byte offsets, which panics inside a
        // multi-byte character: refuse those before it looks.
        if !text.is_ascii() {
            return Err(SwarmKeyError("the file has a character that is not ASCII"));
        }
        PreSharedKey::from_str(text).map(Self).map_err(|e| {
            SwarmKeyError(match e {
                KeyParseError::InvalidKeyFile => "expected three lines",
                KeyParseError::InvalidKeyType => "the first line is not /key/swarm/psk/1.0.0/",
                KeyParseError::InvalidKeyEncoding => "the second line is not /base16/",
                KeyParseError::InvalidKeyLength => "the key is not 64 hex digits",
                KeyParseError::InvalidKeyChar(_) => "the key has a character that is not hex",
            })
        })
    }

    /// The text of a key file (the secret itself: keep it private).
    pub fn to_file_text(self) -> String {
        self.0.to_key_file()
    }

    /// A fingerprint that names the key without revealing it, for logs and
    /// `node status`.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint().to_string()
    }

    pub(crate) fn psk(self) -> PreSharedKey {
        self.0
    }
}

/// Only the fingerprint: the key must never reach a log.
impl fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwarmKey({})", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_round_trips_through_its_file_text() {
        let key = SwarmKey::generate();
        let parsed = SwarmKey::parse(&key.to_file_text()).unwrap();
        assert_eq!(parsed.fingerprint(), key.fingerprint());
        assert_ne!(SwarmKey::generate().fingerprint(), key.fingerprint());
    }

    #[test]
    fn debug_shows_the_fingerprint_not_the_key() {
        let key = SwarmKey::generate();
        let text = key.to_file_text();
        let hex = text.lines().nth(2).unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains(hex), "{debug}");
        assert!(debug.contains(&key.fingerprint()), "{debug}");
    }

    #[test]
    fn malformed_files_are_named() {
        let good_hex = "ab".repeat(32);
        for (text, says) in [
            ("", "three lines"),
            (
                &format!("/key/swarm/psk/2.0.0/\n/base16/\n{good_hex}\n") as &str,
                "/key/swarm/psk/1.0.0/",
            ),
            (
                &format!("/key/swarm/psk/1.0.0/\n/base64/\n{good_hex}\n"),
                "/base16/",
            ),
            ("/key/swarm/psk/1.0.0/\n/base16/\nabcd\n", "64 hex digits"),
            (
                &format!("/key/swarm/psk/1.0.0/\n/base16/\n{}zz\n", "ab".repeat(31)),
                "not hex",
            ),
            (
                &format!("/key/swarm/psk/1.0.0/\n/base16/\n{}é\n", "ab".repeat(31)),
                "not ASCII",
            ),
        ] {
            let err = SwarmKey::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
