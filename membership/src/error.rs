//! Errors of the membership layer.

use thiserror::Error;

/// What can go wrong in the membership layer.
#[derive(Debug, Error)]
pub enum MembershipError {
    /// A peer could not be reached or did not answer in time.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// A peer broke the protocol (oversized or malformed message).
    #[error("membership protocol: {0}")]
    Protocol(String),
    /// The node's own storage failed.
    #[error("membership storage: {0}")]
    Storage(String),
    /// openraft refused or failed.
    #[error("membership group: {0}")]
    Raft(String),
    /// The membership layer has stopped.
    #[error("the membership layer has stopped")]
    Stopped,
}

/// Result of the membership layer.
pub type Result<T> = std::result::Result<T, MembershipError>;
