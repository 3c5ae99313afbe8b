//! # p3 — a peer-to-peer object space
//!
//! The umbrella crate: it re-exports the layers so a program that runs P³ jobs or
//! embeds a node depends on one crate. Each layer uses only the ones below it:
//!
//! ```text
//! cli/          p3ctl: the node daemon and every client command   (p3_cli)
//! scheduler/    jobs, work stealing, divide, checkpoint/restart  (p3_scheduler)
//! objectspace/  namespaces, objects, blobs, owners, locks        (p3_objectspace)
//! membership/   the agreed map of members, leases (Raft)         (p3_membership)
//! dht/          the libp2p swarm behind one Node handle          (p3_dht)
//! ```
//!
//! What it must never do: add behaviour of its own; it only re-exports.

pub use p3_cli as cli;
pub use p3_dht as dht;
pub use p3_membership as membership;
pub use p3_objectspace as objectspace;
pub use p3_scheduler as scheduler;
