//! # p3-dht — the network layer of P³
//!
//! This crate owns the libp2p swarm of a P³ node: TCP (+ a pre-shared key in a
//! private swarm, [`swarm_key`]) + noise + yamux transport,
//! Kademlia under the protocol id [`KAD_PROTOCOL`] (standard wire protocol, so any
//! libp2p implementation configured with that id can join as a DHT peer), identify,
//! ping, gossipsub, and requests whose bodies are size-limited CBOR: framed on
//! one long-lived stream per peer ([`rpc`]), or through libp2p's
//! request-response for peers without those streams. Upper layers reach the network only through the cloneable [`Node`] handle,
//! backed by one task that owns the `Swarm`.
//!
//! It also owns the node's on-disk foundations that the swarm needs at start-up: the
//! persistent ed25519 identity ([`identity`]) and the RocksDB [`Database`], whose
//! Kademlia record and provider store lives in [`store`].
//!
//! What it must never do: know about namespaces, objects, locks or jobs (those are
//! `p3-objectspace` and `p3-scheduler`); hand the `Swarm` to anyone; block the swarm
//! task on disk I/O beyond the record store or on upper-layer work; panic or grow
//! without bound on anything a peer sends.

pub mod config;
pub mod db;
pub mod error;
pub mod identity;
pub mod memory;
pub mod store;
pub mod swarm_key;

mod address_book;
mod addresses;
mod behaviour;
mod cbor;
mod channel;
mod codec;
mod event_loop;
mod node;
mod redial;
mod rpc;
mod silence;
mod transport;

pub use address_book::{MemberAddrs, MemberChanges};
pub use addresses::by_distance;
pub use channel::Channel;
pub use config::{Connections, NetworkConfig, MIN_FAILURE_TIMEOUT};
pub use db::Database;
pub use error::DhtError;
pub use libp2p::{
    identity::{Keypair, PublicKey},
    Multiaddr, PeerId,
};
pub use node::{
    GossipMessage, Inbound, InboundRequest, IncomingStreams, Lookup, Node, NodeStatus, PeerInfo,
    Stream,
};
pub use rpc::read_frames as read_request_frames;
pub use swarm_key::SwarmKey;
/// Stream protocol id for blob transfer between nodes.
pub const BLOB_PROTOCOL: &str = "/p3/blob/1.0.0";

/// Kademlia protocol id of P³ networks. Peers of other networks (e.g. IPFS's
/// `/ipfs/kad/1.0.0`) never mix with ours.
pub const KAD_PROTOCOL: &str = "/p3/kad/1.0.0";
/// Request-response protocol id for object-space RPC between nodes: the
/// fallback for peers without request streams.
pub const RPC_PROTOCOL: &str = "/p3/rpc/1.0.0";
/// Stream protocol id for object-space requests between nodes: one stream per
/// peer and direction, many requests in flight on it.
pub const REQUEST_STREAM_PROTOCOL: &str = "/p3/requests/1.0.0";
/// Protocol version announced through identify.
pub const IDENTIFY_PROTOCOL: &str = "/p3/1.0.0";
