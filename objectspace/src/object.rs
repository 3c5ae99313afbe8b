//! What an object is: the record its owners keep, and the view clients get.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    blob::BlobHash,
    name::{Namespace, ObjectName},
};

/// A user metadata value: text or a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetaValue {
    /// A number (compared numerically by search).
    Num(f64),
    /// Text.
    Str(String),
}

impl MetaValue {
    /// Parses the `V` of a `--meta K=V`: a number if it reads as one, else text.
    pub fn parse(text: &str) -> Self {
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => MetaValue::Num(n),
            _ => MetaValue::Str(text.to_owned()),
        }
    }
}

impl std::fmt::Display for MetaValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaValue::Num(n) => write!(f, "{n}"),
            MetaValue::Str(s) => f.write_str(s),
        }
    }
}

/// User metadata: string keys, string or number values.
pub type Metadata = BTreeMap<String, MetaValue>;

/// Largest total size of type tag plus metadata, in bytes of CBOR.
pub const MAX_META_BYTES: usize = 64 << 10;

/// The options of a write, as a client gives them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PutOptions {
    /// Type tag (free text, e.g. `text/plain` or `matrix-row`).
    pub type_tag: String,
    /// User metadata.
    pub meta: Metadata,
    /// Time to live in milliseconds; the object disappears after it.
    pub ttl_ms: Option<u64>,
    /// Write only if the current version is this (0: only if absent).
    pub if_version: Option<u64>,
    /// The fencing token of the write lock this write is made under.
    pub token: Option<u64>,
    /// Held in memory by the owners only: replicated before the write is
    /// acknowledged, never written to disk, not indexed, not announced. Lost
    /// when every owner dies or restarts. Values up to [`VOLATILE_MAX`].
    #[serde(default)]
    pub volatile: bool,
}

/// Largest value of a volatile object: it always travels inside messages,
/// and is held in the owners' memory.
pub const VOLATILE_MAX: u64 = crate::blob::SMALL_MAX;

/// How copies of a record are ordered: see [`ObjectRecord::order`].
pub type Order = (u64, u64, u64, Option<BlobHash>);

/// One version of an object as its owners store it. A removal is stored too, as
/// a tombstone (`blob: None`), so that repair never brings a removed object back
/// and versions keep growing across remove and re-create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Namespace.
    pub ns: Namespace,
    /// Name inside it.
    pub name: ObjectName,
    /// Grows by one with every write (put or remove) of the name.
    pub version: u64,
    /// Which incarnation of the namespace the object belongs to: a namespace that
    /// is removed and created again gets a new one, so stale copies that missed
    /// the removal are recognised and dropped.
    pub ns_incarnation: u64,
    /// The value's blob; `None` for a tombstone.
    pub blob: Option<BlobHash>,
    /// Value size in bytes.
    pub size: u64,
    /// Type tag.
    pub type_tag: String,
    /// User metadata.
    pub meta: Metadata,
    /// When the name was first written (ms since the Unix epoch).
    pub created_ms: u64,
    /// When this version was written.
    pub modified_ms: u64,
    /// When it expires, if it has a TTL.
    pub expires_ms: Option<u64>,
    /// Held in memory only (see [`PutOptions::volatile`]).
    #[serde(default)]
    pub volatile: bool,
    /// The membership epoch in which the primary that ordered this version
    /// served (or re-confirmed it when it took the key over): records of a
    /// later epoch supersede those of an earlier one, and peering finds from
    /// it which owner sets held the key last (see `docs/consistency.md`).
    #[serde(default)]
    pub epoch: u64,
    /// In a writer-only namespace: a writer's signature of every other field
    /// (see [`crate::writers`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::writers::Signature>,
}

impl ObjectRecord {
    /// Whether the record stands for a readable object at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.blob.is_some() && self.expires_ms.is_none_or(|t| t > now_ms)
    }

    /// The version a conditional write compares against: 0 if not live.
    pub fn live_version(&self, now_ms: u64) -> u64 {
        if self.is_live(now_ms) {
            self.version
        } else {
            0
        }
    }

    /// The order in which copies supersede each other: by the epoch of the
    /// primary that wrote them, then by version, then (between two writes
    /// that got the same version, possible only when a primary failed to
    /// reach a majority) by time and blob, so every node picks the same
    /// winner. A primary that took a key over adopted every acknowledged write
    /// first, so what an earlier epoch holds beyond that was never acknowledged.
    pub fn order(&self) -> Order {
        (self.epoch, self.version, self.modified_ms, self.blob)
    }

    /// The client's view of this record.
    pub fn stat(&self) -> Stat {
        Stat {
            path: format!("{}/{}", self.ns, self.name),
            version: self.version,
            hash: self.blob.map(|b| b.to_string()).unwrap_or_default(),
            size: self.size,
            type_tag: self.type_tag.clone(),
            meta: self.meta.clone(),
            created_ms: self.created_ms,
            modified_ms: self.modified_ms,
            expires_ms: self.expires_ms,
            volatile: self.volatile,
            replicas: Vec::new(),
        }
    }
}

/// What a client sees of an object. `Default` is the stat of nothing (empty
/// path, version 0), for tests to fill in the fields they need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// `NAMESPACE/NAME`.
    pub path: String,
    /// Current version.
    pub version: u64,
    /// blake3 hash of the value (hex), as `b3sum` prints it.
    pub hash: String,
    /// Value size in bytes.
    pub size: u64,
    /// Type tag.
    #[serde(rename = "type")]
    pub type_tag: String,
    /// User metadata.
    pub meta: Metadata,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Time of the current version.
    pub modified_ms: u64,
    /// Expiry time, if it has a TTL.
    pub expires_ms: Option<u64>,
    /// Held in memory by its owners only.
    #[serde(default)]
    pub volatile: bool,
    /// The owners asked and the version each holds (filled in by `stat`).
    pub replicas: Vec<Replica>,
}

/// One owner's copy of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The owner's PeerId.
    pub peer: String,
    /// The version it holds (0: none).
    pub version: u64,
    /// Whether it is the primary (the closest live owner).
    pub primary: bool,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
