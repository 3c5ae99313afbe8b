//! # p3-objectspace — namespaces, objects, blobs, owners, locks
//!
//! The data model of P³ on top of [`p3_dht`]: content-addressed blobs, mutable
//! named objects owned by the nodes closest to their key, replication, locks, take,
//! watch and search. So far it holds the foundations every other part builds on:
//! validated [`name`]s and the DHT [`key`]s derived from them.
//!
//! What it must never do: touch the libp2p swarm except through [`p3_dht::Node`],
//! or know about jobs and schedulers.

pub mod key;
pub mod name;

pub use key::{blob_provider_key, object_key};
pub use name::{NameError, Namespace, ObjectName, ObjectPath};
