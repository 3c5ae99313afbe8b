//! Messages between nodes (request-response, CBOR, size-limited by the network
//! layer). Every field from a peer is validated on decode ([`crate::name`] types
//! refuse bad names) or checked before use; a bad message gets an error answer.

use serde::{Deserialize, Serialize};

use crate::{
    blob::BlobHash,
    error::SpaceError,
    event::Event,
    lock::{Grant, LockRequest, LockState},
    name::{Namespace, ObjectName},
    object::{Metadata, ObjectRecord},
};

/// Most entries one [`PeerRequest::Sync`] carries. Answers may carry as many
/// records, each up to ~66 KiB (name, type and metadata), and must stay under
/// the network's 16 MiB response limit.
pub const SYNC_BATCH: usize = 128;
/// Most records one [`PeerResponse::Records`] carries (same bound).
pub const LIST_BATCH: usize = 128;
/// Longest name prefix a peer may register an interest in.
pub const MAX_PREFIX: usize = 1024;

/// A change to an object, as the node that took it from a client asks the
/// primary to apply it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Point the name at a blob.
    Put {
        /// The value's blob.
        blob: BlobHash,
        /// Its size.
        size: u64,
        /// Type tag.
        type_tag: String,
        /// User metadata.
        meta: Metadata,
        /// Time to live.
        ttl_ms: Option<u64>,
        /// Held in memory only; the value must come inline.
        #[serde(default)]
        volatile: bool,
    },
    /// Remove the name (leaves a tombstone).
    Remove,
}

/// A write for the primary to order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// Namespace.
    pub ns: Namespace,
    /// Name.
    pub name: ObjectName,
    /// Incarnation of the namespace the writer saw.
    pub ns_incarnation: u64,
    /// What to do.
    pub op: WriteOp,
    /// Apply only at this version (0: only if absent).
    pub if_version: Option<u64>,
    /// Small values, so no stream is needed.
    #[serde(with = "serde_bytes")]
    pub inline: Option<Vec<u8>>,
    /// A peer holding the blob (the node the client wrote through).
    pub origin: String,
    /// How many times the write was redirected to another primary already.
    pub hops: u8,
    /// Fencing token of the write lock the writer holds.
    pub token: Option<u64>,
    /// In a writer-only namespace, the primary asks the origin to sign the
    /// record it made of this write, quoting this ([`PeerRequest::Sign`]).
    #[serde(default)]
    pub ticket: Option<u64>,
    /// The origin is one of the key's owners and stores the ordered record
    /// itself before it answers its client: the primary sends it no replica
    /// and answers [`PeerResponse::Ordered`] (two messages fewer a write).
    #[serde(default)]
    pub origin_stores: bool,
}

/// A request from one node to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Order and replicate a write (to the primary).
    Write(WriteRequest),
    /// Hold this version (from the primary, repair, or a reader that saw an old
    /// copy). The blob comes inline or from `sources`.
    Replicate {
        /// The record.
        record: ObjectRecord,
        /// The value, if small.
        #[serde(with = "serde_bytes")]
        inline: Option<Vec<u8>>,
        /// Peers that hold the blob.
        sources: Vec<String>,
        /// Sent by the key's primary for a write it ordered (not by repair):
        /// the receiver holds it only if the sender is the primary in its map.
        #[serde(default)]
        ordered: bool,
    },
    /// Send the record of a name (and its value, if small and `inline`).
    Head {
        /// Namespace.
        ns: Namespace,
        /// Name.
        name: ObjectName,
        /// Whether to include a small value.
        inline: bool,
        /// The asker's map epoch when a new primary peers (0 for a read): the
        /// receiver first applies that map, and answers after the writes to
        /// the key it is ordering, so no write it orders later goes unseen.
        #[serde(default)]
        epoch: u64,
    },
    /// Send the record of a name (and its value, if small and `inline`) as
    /// its primary: answered from this node alone, or with
    /// [`PeerResponse::NotPrimary`].
    Read {
        /// Namespace.
        ns: Namespace,
        /// Name.
        name: ObjectName,
        /// Whether to include a small value.
        inline: bool,
    },
    /// Repair: which of these versions do you lack, and which do you have newer?
    Sync(Vec<SyncEntry>),
    /// Records of a namespace with a name prefix, after a name, in name order.
    List {
        /// Namespace.
        ns: Namespace,
        /// Name prefix.
        prefix: String,
        /// Continue after this name.
        after: Option<ObjectName>,
    },
    /// Drop every record of a namespace that was removed.
    DropNamespace(Namespace),
    /// Updates for index shards the receiver keeps, to merge into its rows
    /// (see `docs/index.md`): written records and, for small ones, their
    /// content; at most [`MAX_INDEX_UPDATES`] in all.
    Index(Vec<ShardUpdates>),
    /// The index audit: which of these names does your copy of the shard
    /// lack at this (incarnation, order)?
    IndexHave {
        /// Namespace.
        ns: Namespace,
        /// Shard number.
        shard: u8,
        /// Names with the incarnation and order of their newest record.
        held: Vec<(ObjectName, u64, crate::object::Order)>,
    },
    /// Search one index shard held here.
    Search {
        /// Namespace.
        ns: Namespace,
        /// Shard number.
        shard: u8,
        /// The namespace incarnation the searcher sees.
        incarnation: u64,
        /// The query's text.
        query: String,
        /// Continue after this name.
        after: Option<String>,
    },
    /// A lock request, renewal or release, for the key's primary.
    Lock(LockRequest),
    /// Hold this lock state (from the primary).
    LockState {
        /// Namespace.
        ns: Namespace,
        /// Name.
        name: ObjectName,
        /// The state.
        state: LockState,
    },
    /// What lock state of this key do you hold? (Asked by a primary that
    /// holds none, e.g. one that just became primary.)
    LockStateOf {
        /// Namespace.
        ns: Namespace,
        /// Name.
        name: ObjectName,
        /// The asker's membership epoch: the owner applies it first, and
        /// from then on refuses states from primaries of earlier epochs.
        epoch: u64,
    },
    /// Send me the events of names in each namespace starting with its
    /// prefix for `lease_ms` (renewed by asking again; 0 cancels).
    Interest {
        /// (namespace, name prefix of at most [`MAX_PREFIX`] bytes) pairs.
        interests: Vec<(Namespace, String)>,
        /// How long the interests last.
        lease_ms: u64,
    },
    /// Events of names the receiver registered an interest in, in the order
    /// the sender ordered the writes.
    Events(Vec<Event>),
    /// From a primary to the node a write came through: sign the record made
    /// of the write with this ticket (writer-only namespaces). Signed only if
    /// it is exactly what the writer asked for.
    Sign {
        /// The write's [`WriteRequest::ticket`].
        ticket: u64,
        /// The record the primary made of it.
        record: ObjectRecord,
    },
    /// Answer once a live version newer than `after` is acknowledged here (as
    /// primary), or after `wait_ms`.
    WaitNewer {
        /// Namespace.
        ns: Namespace,
        /// Name.
        name: ObjectName,
        /// The version the reader has seen (0: none).
        after: u64,
        /// How long to wait.
        wait_ms: u64,
    },
}

impl PeerRequest {
    /// The request's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerRequest::Write(_) => "write",
            PeerRequest::Replicate { .. } => "replicate",
            PeerRequest::Head { .. } => "head",
            PeerRequest::Read { .. } => "read",
            PeerRequest::Sync(_) => "sync",
            PeerRequest::List { .. } => "list",
            PeerRequest::DropNamespace(_) => "drop-namespace",
            PeerRequest::Index(_) => "index",
            PeerRequest::IndexHave { .. } => "index-have",
            PeerRequest::Search { .. } => "search",
            PeerRequest::Lock(_) => "lock",
            PeerRequest::LockState { .. } => "lock-state",
            PeerRequest::LockStateOf { .. } => "lock-state-of",
            PeerRequest::Interest { .. } => "interest",
            PeerRequest::Events(_) => "events",
            PeerRequest::WaitNewer { .. } => "wait-newer",
            PeerRequest::Sign { .. } => "sign",
        }
    }
}

/// Most records one [`PeerRequest::Index`] carries.
pub const MAX_INDEX_UPDATES: usize = 1024;

/// Updates for one index shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardUpdates {
    /// Namespace.
    pub ns: Namespace,
    /// Shard number.
    pub shard: u8,
    /// Records with their searchable content, if small.
    pub updates: Vec<(ObjectRecord, Option<serde_bytes::ByteBuf>)>,
}

/// One record's identity and version, for repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncEntry {
    /// Namespace.
    pub ns: Namespace,
    /// Name.
    pub name: ObjectName,
    /// [`ObjectRecord::order`] of the sender's copy.
    pub order: crate::object::Order,
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The write is ordered and held by `acked` owners.
    Written {
        /// The record as written.
        record: ObjectRecord,
        /// Owners that hold it.
        acked: usize,
    },
    /// The answer to a write whose origin stores it (`origin_stores`): it
    /// is ordered and held by every owner but the origin, which completes it
    /// by storing `record` as a replica of this primary's.
    Ordered {
        /// The record as ordered.
        record: ObjectRecord,
        /// Owners that hold it (the origin not counted).
        acked: usize,
    },
    /// Send the write to this peer instead: it is closer to the key.
    NotPrimary(String),
    /// Answer to [`PeerRequest::Sign`].
    Signed(crate::writers::Signature),
    /// The replica holds the version.
    Replicated,
    /// The replica holds a newer version than the one sent.
    Stale(Box<ObjectRecord>),
    /// Answer to [`PeerRequest::Head`].
    Head {
        /// The record, if any (tombstones included).
        record: Option<Box<ObjectRecord>>,
        /// The value, if asked for and small.
        #[serde(with = "serde_bytes")]
        inline: Option<Vec<u8>>,
    },
    /// Answer to [`PeerRequest::Sync`].
    Sync {
        /// Indices of the entries the sender should push here.
        want: Vec<u32>,
        /// Records held here that are newer than the sender's.
        newer: Vec<ObjectRecord>,
    },
    /// Answer to [`PeerRequest::List`]; fewer than [`LIST_BATCH`] means the end.
    Records(Vec<ObjectRecord>),
    /// Answer to [`PeerRequest::IndexHave`]: indices of the names to send.
    IndexWant(Vec<u32>),
    /// Answer to [`PeerRequest::Search`]: matches (at most [`LIST_BATCH`]),
    /// and the name to continue after, unless the shard ends here.
    Found {
        /// Entries found.
        entries: Vec<crate::index::Entry>,
        /// Where the next page starts.
        next: Option<String>,
    },
    /// Answer to [`PeerRequest::WaitNewer`]: the newer version, or `None` if
    /// the wait ended first.
    Newer(Option<u64>),
    /// A lock was granted (or renewed).
    Granted {
        /// The grant.
        grant: Grant,
        /// How long after the request arrived the grant's lease began (its
        /// wait in line): the holder counts the lease from when it sent the
        /// request plus this, which no delay of this answer can stretch.
        waited_ms: u64,
    },
    /// Answer to [`PeerRequest::LockStateOf`].
    HeldLockState(LockState),
    /// Done.
    Done,
    /// The request failed.
    Error(SpaceError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::MetaValue;
    use proptest::prelude::*;

    fn round_trip<T: Serialize + for<'de> Deserialize<'de>>(value: &T) -> T {
        let mut buf = Vec::new();
        ciborium::into_writer(value, &mut buf).unwrap();
        ciborium::from_reader(buf.as_slice()).unwrap()
    }

    fn meta_value() -> impl Strategy<Value = MetaValue> {
        prop_oneof![
            (-1e12f64..1e12).prop_map(MetaValue::Num),
            "[a-zA-Z0-9 ]{0,20}".prop_map(MetaValue::Str),
        ]
    }

    prop_compose! {
        fn record()(
            ns in "[a-z0-9][a-z0-9._-]{0,20}",
            name in "[^\u{0}]{1,60}",
            version in any::<u64>(),
            blob in proptest::option::of(any::<[u8; 32]>()),
            size in any::<u64>(),
            type_tag in ".{0,20}",
            meta in proptest::collection::btree_map("[a-z]{1,8}", meta_value(), 0..5),
            times in any::<(u64, u64)>(),
            expires in proptest::option::of(any::<u64>()),
        ) -> ObjectRecord {
            ObjectRecord {
                ns: Namespace::new(&ns).unwrap(),
                name: ObjectName::new(&name).unwrap(),
                version,
                ns_incarnation: version ^ 7,
                blob: blob.map(BlobHash),
                size,
                type_tag,
                meta,
                created_ms: times.0,
                modified_ms: times.1,
                expires_ms: expires,
                volatile: size % 2 == 0,
                epoch: times.0 ^ version,
                signature: None,
            }
        }
    }

    proptest! {
        #[test]
        fn records_round_trip(record in record()) {
            prop_assert_eq!(round_trip(&record), record.clone());
            let ordered = record.version % 2 == 1;
            let msg = PeerRequest::Replicate { record, inline: Some(vec![1, 2, 3]), sources: vec!["x".into()], ordered };
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn answers_round_trip(record in record(), want in proptest::collection::vec(any::<u32>(), 0..20)) {
            for msg in [
                PeerResponse::Sync { want: want.clone(), newer: vec![record.clone()] },
                PeerResponse::Stale(Box::new(record.clone())),
                PeerResponse::Head { record: Some(Box::new(record.clone())), inline: None },
                PeerResponse::Error(SpaceError::VersionConflict { path: "a/b".into(), expected: 1, current: 2 }),
            ] {
                prop_assert_eq!(round_trip(&msg), msg);
            }
        }

        #[test]
        fn garbage_never_panics_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ciborium::from_reader::<PeerRequest, _>(bytes.as_slice());
        }
    }

    #[test]
    fn invalid_names_from_a_peer_are_refused_on_decode() {
        #[derive(Serialize)]
        enum Raw {
            DropNamespace(String),
        }
        let mut buf = Vec::new();
        ciborium::into_writer(&Raw::DropNamespace("Bad Name".into()), &mut buf).unwrap();
        assert!(ciborium::from_reader::<PeerRequest, _>(buf.as_slice()).is_err());
    }
}
