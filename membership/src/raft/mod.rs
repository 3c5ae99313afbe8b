//! The glue between openraft and P³: the type configuration, storage in the
//! node's RocksDB, and the network over the node's libp2p streams. Raft itself
//! (elections, replication, membership changes) is openraft's.

pub mod network;
pub mod store;

use std::{fmt, io::Cursor};

use p3_dht::PeerId;
use serde::{Deserialize, Serialize};

use crate::map::Change;

/// A Raft node id: the first eight bytes of the BLAKE3 hash of the peer id.
/// openraft wants a small `Copy` id; peer ids are neither.
pub type NodeId = u64;

/// The Raft node id of `peer`.
pub fn node_id(peer: &PeerId) -> NodeId {
    let hash = blake3::hash(&peer.to_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// What openraft keeps about a node in its membership: how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftPeer {
    /// The node's peer id, as text.
    pub peer: String,
}

impl fmt::Display for RaftPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.peer)
    }
}

/// What applying a change answers: the map's epoch after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The epoch of the map once the entry is applied.
    pub epoch: u64,
}

openraft::declare_raft_types!(
    /// openraft's types for P³'s membership group.
    pub TypeConfig:
        D = Change,
        R = Applied,
        NodeId = NodeId,
        Node = RaftPeer,
);

/// The membership group's Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
