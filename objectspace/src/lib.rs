//! # p3-objectspace — namespaces, objects, blobs, owners, replication
//!
//! The data model of P³ on top of [`p3_dht`]:
//! - [`blob`]: immutable values addressed by their blake3 hash, chunked and
//!   verified chunk by chunk; [`transfer`] moves them over libp2p streams,
//!   received into [`buffers`] that are reused rather than zeroed anew.
//! - [`object`]: mutable names `(namespace, name)` pointing at blobs, with a
//!   version, type, metadata and TTL.
//! - [`space`]: the engine — the R nodes closest to an object's key own it; the
//!   closest live one (the primary) orders writes and has the others store them
//!   before it acknowledges ([`write`] sends them, [`service`] runs them); reads
//!   ask every owner and take the newest version ([`read`]); [`repair`] brings
//!   every object back to R copies when owners change.
//! - [`store`]: the node's RocksDB-backed share of all this, with an LRU cache of
//!   fetched blobs.
//! - [`namespaces`]: the namespace registry; [`api`]: the local client API and
//!   its Rust client, [`api::Space`]; [`local`]: the same operations for code
//!   inside the node's process.
//! - [`watch`] and [`interest`]: events sent by the primary to the nodes that
//!   watch a name, and blocking reads.
//!
//! What it must never do: touch the libp2p swarm except through [`p3_dht::Node`];
//! know about jobs and schedulers; hold a whole value in memory (values move a
//! chunk at a time); trust a byte from a peer before checking it.

mod admission;
pub mod api;
pub mod blob;
pub mod buffers;
pub mod error;
pub mod event;
pub mod index;
pub mod interest;
pub mod key;
pub mod local;
pub mod lock;
mod metrics;
pub mod name;
pub mod namespaces;
pub mod object;
mod ordering;
mod peering;
pub mod protocol;
pub mod query;
pub mod read;
pub mod repair;
pub mod replica;
pub mod service;
mod shared_read;
mod signing;
pub mod space;
pub mod store;
pub mod take;
pub mod transfer;
pub mod watch;
pub mod write;
pub mod writers;

pub use api::Space;
pub use error::SpaceError;
pub use key::{blob_provider_key, object_key};
pub use local::{Local, LocalLock};
pub use name::{NameError, Namespace, ObjectName, ObjectPath};
pub use read::Found;
pub use space::{ObjectSpace, SpaceConfig};
pub use write::Ingest;
