//! # p3-membership — the nodes P³ agrees on
//!
//! Which nodes are members of the network, at which epoch, agreed through
//! Raft ([`openraft`]) in a small group of voters (at most five, chosen
//! automatically). Every other node follows the map through its lease
//! renewals: the leader answers each with the committed changes the node
//! lacks ([`follow`]), so the group's Raft traffic does not grow with the
//! number of nodes. Owners of a key
//! are computed from this [`Map`] ([`placement`]), not from a node's own
//! connections, so every node that holds the same epoch agrees on them. A
//! node acts as an owner only while it holds a membership [`lease`]; the
//! leader removes a member only after that lease has surely run out.
//!
//! The decisions — the map, placement, leases, voters, a member's heartbeats
//! ([`beats`]), batching leadership confirmations ([`confirm`]), the
//! window of changes members follow ([`follow`]), the members that relay
//! renewals so the leader does not talk to every member ([`relays`]) — are
//! pure
//! modules with
//! deterministic tests; [`raft`] and [`service`] are the glue to openraft, the
//! node's RocksDB and its libp2p swarm. `docs/consistency.md` has the design
//! and the argument why it is safe.
//!
//! What it must never do: decide ownership from anything but the agreed map;
//! extend a lease without a leader that a quorum still follows; keep Raft
//! state anywhere but synced storage; panic or allocate without bound on
//! anything a peer sends.

pub mod beats;
pub mod confirm;
pub mod error;
pub mod follow;
pub mod lease;
pub mod map;
pub mod placement;
pub mod raft;
pub mod relays;
pub mod service;
pub mod voters;
pub mod wire;

pub use error::{MembershipError, Result};
pub use lease::LeaseTimes;
pub use map::{Change, Map, Member};
pub use service::{
    Membership, MembershipConfig, MembershipStatus, DEFAULT_MEMBERS_PER_RELAY,
    DEFAULT_SNAPSHOT_EVERY, MIN_SNAPSHOT_EVERY,
};

/// Column families the membership layer needs in the node's database.
pub const COLUMN_FAMILIES: &[&str] = &[raft::store::COLUMN_FAMILY];
