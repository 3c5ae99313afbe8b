//! The messages of the local API.

use p3_dht::{NodeStatus, PeerInfo};
use serde::{Deserialize, Serialize};

/// First frame of every connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The token from `api.json`.
    pub token: String,
}

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The node's status.
    Status,
    /// The peers the node knows.
    Peers,
    /// The nodes closest to a key, nearest first.
    Closest {
        /// The key's bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

/// The node's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(NodeStatus),
    /// Answer to [`Request::Peers`].
    Peers(Vec<PeerInfo>),
    /// Answer to [`Request::Closest`]: PeerIds, nearest first.
    Closest(Vec<String>),
    /// The request failed; the text says why and what to do.
    Error(String),
}
