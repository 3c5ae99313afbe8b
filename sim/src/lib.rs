//! # p3-sim — many P³ nodes in one process, to measure what grows with N
//!
//! `p3sim` starts N nodes of the shipped code — the `dht` swarm, the
//! `membership` group and the `objectspace` engine, each on RocksDB in its
//! own directory — in one process, connected over libp2p's in-process memory
//! transport instead of TCP, each node on a Tokio runtime of its own so
//! that failing a node stops everything it runs, every node's timers
//! optionally slowed down alike ([`clock`]) so that large N fits the
//! machine's CPU. It then plays the
//! scenarios of [`scenarios`] (join, lookups, owner agreement, churn,
//! resources) and reports what each cost ([`report`]).
//!
//! What it must never do: replace the code under test with a model of it
//! (a figure from `p3sim` is a figure of the real nodes), open a socket
//! (nodes reach each other only through in-process memory addresses), or
//! leave a node running or its data behind when it ends.

pub mod clock;
pub mod cluster;
pub mod config;
pub mod hops;
pub mod limits;
pub mod node;
pub mod report;
pub mod resources;
pub mod scenarios;

pub use cluster::Cluster;
pub use config::SimConfig;
pub use report::Report;

use std::time::Duration;

/// What can stop a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The settings do not make a simulation.
    #[error("invalid settings: {0}")]
    Invalid(String),
    /// A node's runtime could not be built (threads, timers).
    #[error("cannot build a node's runtime: {0}")]
    Runtime(std::io::Error),
    /// A node's database could not be opened.
    #[error(transparent)]
    Db(#[from] p3_dht::db::DbError),
    /// A node's network layer failed.
    #[error(transparent)]
    Network(#[from] p3_dht::DhtError),
    /// A node's membership layer failed.
    #[error(transparent)]
    Membership(#[from] p3_membership::MembershipError),
    /// A node's object space failed.
    #[error(transparent)]
    Space(#[from] p3_objectspace::SpaceError),
    /// A node did not become a member in time.
    #[error("a node did not join within {0:?} ({1})")]
    NotJoined(Duration, String),
    /// An operation was sent to a node that is down.
    #[error("node {0} is down")]
    Down(usize),
    /// The data directory could not be made.
    #[error("cannot make the data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The process's limit on open files could not be read or raised.
    #[error("cannot read or raise the open-file limit: {0}")]
    FileLimit(std::io::Error),
}
