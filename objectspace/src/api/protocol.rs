//! The messages of the local API.
//!
//! Most requests get exactly one [`Response`]; a value of at most
//! [`WHOLE_MAX`] bytes travels inside its [`Request::PutWhole`], answered by
//! [`Response::Written`] in one round trip. Two stream bytes:
//! - [`Request::Put`] is answered by [`Response::Ready`] (or an error: bad path,
//!   unknown namespace, too large) before any byte of the value moves; then the
//!   client sends [`Request::Data`] frames (at most [`DATA_FRAME`] bytes each)
//!   and one [`Request::End`] (or [`Request::EndWith`]), and the node answers
//!   [`Response::Written`] (or an error, after reading the value to its end so
//!   the connection stays usable). A client that abandons a value closes the
//!   connection before its end: nothing is written.
//! - [`Request::Get`] is answered by [`Response::Object`], then [`Response::Data`]
//!   frames, then [`Response::End`] (or a [`Response::Error`] at any point).

use p3_dht::{NodeStatus, PeerInfo};
use serde::{Deserialize, Serialize};

use crate::{
    error::SpaceError,
    index::Entry,
    lock::{Grant, LockMode},
    object::{PutOptions, Stat},
    watch::Event,
};

/// Largest payload of one data frame.
pub const DATA_FRAME: usize = 1 << 20;

/// Largest value a client sends inside its [`Request::PutWhole`]. A streamed
/// put waits for the node's [`Response::Ready`] before its bytes move: for a
/// small value that round trip was as long as the rest of the write.
pub const WHOLE_MAX: usize = 64 << 10;

/// First frame of every connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The token from `api.json`.
    pub token: String,
}

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Write `NS/NAME`; the value follows as [`Request::Data`] frames.
    Put {
        /// `NS/NAME`.
        path: String,
        /// Type, metadata, TTL, condition.
        options: PutOptions,
        /// The value's size if known up front (checked against the node's limit
        /// before any byte moves).
        size: Option<u64>,
    },
    /// Write `NS/NAME` with `value` (at most [`WHOLE_MAX`] bytes), carried
    /// here: answered by [`Response::Written`] or an error.
    PutWhole {
        /// `NS/NAME`.
        path: String,
        /// Type, metadata, TTL, condition, volatility.
        options: PutOptions,
        /// The whole value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// A piece of the value of a [`Request::Put`].
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The value of a [`Request::Put`] is complete.
    End,
    /// The value of a [`Request::Put`] is complete, and the version takes
    /// these options instead of the ones the put began with: a value sent
    /// while it is being written (a file written through a mount) gets its
    /// modification time and attributes when it is closed. Whether it is
    /// volatile cannot change.
    EndWith(PutOptions),
    /// Read the value of `NS/NAME`.
    Get {
        /// `NS/NAME`.
        path: String,
        /// Wait for the object to exist (or to pass a version) first.
        wait: Option<Wait>,
    },
    /// Take `NS/NAME`: read and remove it in one step. Answered like
    /// [`Request::Get`].
    Take {
        /// `NS/NAME`.
        path: String,
        /// Wait up to this many milliseconds for it to exist.
        wait_ms: Option<u64>,
    },
    /// Take any one object of a namespace that matches a query (see
    /// [`crate::query`]). Answered like [`Request::Get`].
    TakeMatch {
        /// The namespace.
        namespace: String,
        /// The query.
        query: String,
        /// Wait up to this many milliseconds for a match.
        wait_ms: Option<u64>,
    },
    /// The objects of a namespace that match a query.
    Search {
        /// The namespace.
        namespace: String,
        /// The query.
        query: String,
    },
    /// Acquire a lock on `NS/NAME`: answered by [`Response::Locked`] once
    /// granted. The node renews the lease while the connection stays open,
    /// sending [`Response::Locked`] again after each renewal, or
    /// [`Response::LockLost`] once when the lock is lost; it releases the lock
    /// on [`Request::Unlock`] or when the connection closes.
    Lock {
        /// `NS/NAME`.
        path: String,
        /// Read or write.
        mode: LockMode,
        /// Lease length.
        lease_ms: u64,
        /// Give up after this long in line (`None`: wait as long as it takes).
        timeout_ms: Option<u64>,
    },
    /// Release the lock of this connection (answered by [`Response::Done`]).
    Unlock,
    /// Stream the events of a namespace's objects whose names start with a
    /// prefix: answered by [`Response::Watching`], then [`Response::Event`]s
    /// until the client closes the connection.
    Watch {
        /// The namespace.
        namespace: String,
        /// Name prefix ("" for all).
        prefix: String,
        /// Only the object named exactly `prefix`.
        exact: bool,
    },
    /// Metadata of `NS/NAME` and which owners hold it.
    Stat {
        /// `NS/NAME`.
        path: String,
        /// Only this node's own copy, without asking the owners.
        local: bool,
    },
    /// Remove `NS/NAME`.
    Remove {
        /// `NS/NAME`.
        path: String,
        /// Remove only if the current version is this.
        if_version: Option<u64>,
        /// Fencing token of the write lock held.
        token: Option<u64>,
    },
    /// Write `to` with the value `from` has now (no data frames: the node
    /// already has or fetches the value); answered by `Written`.
    Copy {
        /// `NS/NAME` to copy.
        from: String,
        /// `NS/NAME` to write.
        to: String,
        /// Type, metadata and conditions of the new version.
        options: PutOptions,
    },
    /// Objects of a namespace whose names start with a prefix.
    List {
        /// The namespace.
        namespace: String,
        /// Name prefix ("" for all).
        prefix: String,
    },
    /// Create a namespace.
    CreateNamespace(String),
    /// Remove a namespace and its objects.
    RemoveNamespace(String),
    /// The namespaces that exist.
    ListNamespaces,
    /// Create a writer-only namespace: only `writers` (PeerIds, the node
    /// asked among them) may change it.
    CreateWriterOnly {
        /// The namespace.
        name: String,
        /// Its writers.
        writers: Vec<String>,
        /// Only its writers may read it.
        #[serde(default)]
        private: bool,
    },
    /// Change the writers of a writer-only namespace (the node asked must
    /// be one); answered with [`Response::Writers`].
    ChangeWriters {
        /// The namespace.
        name: String,
        /// PeerIds to add.
        grant: Vec<String>,
        /// PeerIds to remove.
        revoke: Vec<String>,
    },
    /// The writers of a namespace (none: open to every node).
    Writers(String),
}

/// How long a blocking get waits, and for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    /// At most this long, in milliseconds.
    pub ms: u64,
    /// For a version greater than this one (`None`: for any version).
    pub after_version: Option<u64>,
}

/// The result of a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// `NS/NAME`.
    pub path: String,
    /// The new version.
    pub version: u64,
    /// blake3 hash of the value (hex); empty for a removal.
    pub hash: String,
    /// Value size in bytes.
    pub size: u64,
    /// Owners that held it when it was acknowledged: a majority of the R
    /// owners at least (the others receive it right after).
    pub acked_by: usize,
}

/// What `Request::Status` tells: the network node's state and the object
/// space's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceStatus {
    /// The network node.
    #[serde(flatten)]
    pub node: NodeStatus,
    /// Watch events received from other nodes since the node started.
    pub events_received: u64,
    /// Bytes of volatile objects held in this node's memory.
    pub volatile_bytes: u64,
}

/// The node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(SpaceStatus),
    /// Answer to [`Request::Peers`].
    Peers(Vec<PeerInfo>),
    /// Answer to [`Request::Closest`]: PeerIds, nearest first.
    Closest(Vec<String>),
    /// Send the value of the [`Request::Put`].
    Ready,
    /// A write or removal is acknowledged.
    Written(Written),
    /// The object about to be streamed, or the answer to [`Request::Stat`].
    Object(Stat),
    /// A piece of a value being read.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The value is complete.
    End,
    /// Answer to [`Request::List`], in name order.
    Objects(Vec<Stat>),
    /// Answer to [`Request::ListNamespaces`].
    Namespaces(Vec<String>),
    /// A namespace operation succeeded.
    Done,
    /// The writers of a namespace, as PeerIds (empty: open to every node).
    Writers(Vec<String>),
    /// Answer to [`Request::Search`], in name order (without content).
    Matches(Vec<Entry>),
    /// The lock is held, for at least `valid_ms` more as the node measures
    /// it (sent when granted and after every renewal).
    Locked {
        /// The grant, with its fencing token.
        grant: Grant,
        /// How long the lease holds from now.
        valid_ms: u64,
    },
    /// The lock is lost (its lease ran out before a renewal got through, or
    /// the primary fenced it); the node has stopped renewing it.
    LockLost(SpaceError),
    /// The watch is established.
    Watching,
    /// One event of a watch.
    Event(Event),
    /// The request failed.
    Error(SpaceError),
}
