//! The errors of the object space. They cross the wire (between nodes and from a
//! node to its API clients), so they are plain data; each message says what was
//! wrong and, where there is something to do, what to do.

use serde::{Deserialize, Serialize};

/// Everything an object-space operation can fail with.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum SpaceError {
    /// A namespace, object name or path that does not validate.
    #[error("{0}")]
    InvalidName(String),
    /// The namespace has not been created (or was removed).
    #[error("namespace {0} does not exist; create it with `p3ctl ns create {0}`")]
    NoSuchNamespace(String),
    /// `ns create` of a namespace that exists.
    #[error("namespace {0} already exists")]
    NamespaceExists(String),
    /// The object does not exist (never written, removed, or expired).
    #[error("{0} does not exist")]
    NotFound(String),
    /// `--if-version` did not match the current version (0 means "absent").
    #[error(
        "version conflict on {path}: expected version {expected}, current version is {current}"
    )]
    VersionConflict {
        /// The object.
        path: String,
        /// The version the writer expected.
        expected: u64,
        /// The version it found (0 if the object does not exist).
        current: u64,
    },
    /// A value over the configured maximum object size.
    #[error("value of {size} bytes is over the {max}-byte limit (max_object_bytes in the node's config.toml)")]
    TooLarge {
        /// The value's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A volatile value over [`crate::object::VOLATILE_MAX`]: it travels
    /// inside messages, so it is refused whatever the node's size limit.
    #[error("a volatile value holds at most {max} bytes; this one has {size} (write it without --volatile)")]
    VolatileTooLarge {
        /// The value's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Too few owners confirmed a write for it to count as acknowledged.
    #[error("only {acked} of the {needed} owners needed acknowledged the write to {path}; it may or may not be visible later — retry")]
    NotEnoughOwners {
        /// The object.
        path: String,
        /// Owners that hold it now.
        acked: usize,
        /// Owners that had to hold it.
        needed: usize,
    },
    /// No peer that should have an answer gave one.
    #[error("{0}")]
    Unavailable(String),
    /// Whether a request took effect is not known: it was sent (or may have
    /// been) and its answer never came, or a write reached some owners but
    /// not all. The caller must read before it retries a conditional write.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// A request that makes no sense (reserved namespace, bad option, ...).
    #[error("{0}")]
    Invalid(String),
    /// Received bytes did not match their hash, or a peer sent garbage.
    #[error("integrity check failed: {0}")]
    Corrupt(String),
    /// The local database failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// A write to an object locked by someone else, or with a token that is no
    /// longer valid.
    #[error("{0}")]
    Fenced(String),
    /// A change to a writer-only namespace that no writer of it signed.
    #[error("{0}")]
    Forbidden(String),
    /// A wait ended before what it waited for happened.
    #[error("{0}")]
    TimedOut(String),
    /// A lock request that ended without a grant: others hold the lock.
    #[error("{path} is still locked after waiting {waited_ms} ms (held by {})", held_by(.by))]
    Locked {
        /// The object.
        path: String,
        /// How long the request waited in line.
        waited_ms: u64,
        /// The nodes the holders asked through, as the key's primary saw
        /// them: whom to ask for the work behind the lock (empty if none is
        /// known, e.g. grants made by an older version).
        by: Vec<String>,
    },
    /// The node is shutting down or its network task is gone.
    #[error("the node is shutting down")]
    Stopped,
}

fn held_by(nodes: &[String]) -> String {
    if nodes.is_empty() {
        "another holder".to_owned()
    } else {
        format!("node {}", nodes.join(", "))
    }
}

impl From<crate::name::NameError> for SpaceError {
    fn from(e: crate::name::NameError) -> Self {
        SpaceError::InvalidName(e.to_string())
    }
}

impl From<rocksdb::Error> for SpaceError {
    fn from(e: rocksdb::Error) -> Self {
        SpaceError::Storage(e.to_string())
    }
}

impl From<p3_dht::DhtError> for SpaceError {
    fn from(e: p3_dht::DhtError) -> Self {
        match e {
            p3_dht::DhtError::Stopped => SpaceError::Stopped,
            e => SpaceError::Unavailable(e.to_string()),
        }
    }
}

/// Result of object-space operations.
pub type Result<T, E = SpaceError> = std::result::Result<T, E>;
