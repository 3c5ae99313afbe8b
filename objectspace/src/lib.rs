//! # p3-objectspace — namespaces, objects, blobs, owners, locks
//!
//! The data model of P³ on top of [`p3_dht`]: content-addressed blobs, mutable
//! named objects owned by the nodes closest to their key, replication, locks, take,
//! watch and search. Its contents arrive with the object-space issue; the crate
//! exists now so the workspace already has the shape of the architecture.
//!
//! What it must never do: touch the libp2p swarm except through [`p3_dht::Node`],
//! or know about jobs and schedulers.
