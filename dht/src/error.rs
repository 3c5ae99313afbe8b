//! Errors of the network layer.

use libp2p::PeerId;

/// Everything that can go wrong in the network layer, worded for the person who
/// has to act on it.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    /// The node could not listen on an address the user asked for.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address given in `--listen` or the config file.
        addr: String,
        /// What the transport said.
        reason: String,
    },
    /// The transport stack could not be built.
    #[error("cannot set up the libp2p transport: {0}")]
    Transport(String),
    /// The swarm task has stopped (the node is shutting down).
    #[error("the node is shutting down")]
    Stopped,
    /// A request to a peer failed at the transport level.
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer the request went to.
        peer: PeerId,
        /// Dial failure, timeout, closed connection, ...
        reason: String,
    },
    /// A message could not be encoded as CBOR.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// A message from a peer was not valid CBOR of the expected shape.
    #[error("malformed message from {peer}: {reason}")]
    Malformed {
        /// The peer that sent it.
        peer: PeerId,
        /// What the decoder said.
        reason: String,
    },
    /// A Kademlia operation failed.
    #[error("DHT operation failed: {0}")]
    Kademlia(String),
    /// A gossipsub operation failed.
    #[error("gossipsub: {0}")]
    Gossip(String),
}
