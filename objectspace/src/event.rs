//! What watchers are told: one change to one object.

use serde::{Deserialize, Serialize};

use crate::{
    name::{Namespace, ObjectName},
    object::{now_ms, Metadata, ObjectRecord},
};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A new version was written.
    Put,
    /// It was removed (or taken).
    Remove,
    /// Its TTL ran out.
    Expire,
}

/// One change to one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Namespace.
    pub namespace: Namespace,
    /// Name.
    pub name: ObjectName,
    /// The version the change produced (for an expiry: the version that expired).
    pub version: u64,
    /// blake3 of the value (hex), empty for removals.
    pub hash: String,
    /// Value size.
    pub size: u64,
    /// When it happened, ms since the Unix epoch.
    pub at_ms: u64,
    /// The metadata of the version written (empty for removals), so a
    /// watcher that keeps a view of small records needs no read.
    #[serde(default)]
    pub meta: Metadata,
    /// The type tag of the version written (empty for removals), so a
    /// template take can match a write without reading it.
    #[serde(default)]
    pub type_tag: String,
}

impl Event {
    /// The event of `record` changing by `kind`.
    pub(crate) fn of(record: &ObjectRecord, kind: EventKind) -> Self {
        Event {
            kind,
            namespace: record.ns.clone(),
            name: record.name.clone(),
            version: record.version,
            hash: record.blob.map(|b| b.to_string()).unwrap_or_default(),
            size: record.size,
            at_ms: now_ms(),
            meta: if kind == EventKind::Put {
                record.meta.clone()
            } else {
                Metadata::new()
            },
            type_tag: if kind == EventKind::Put {
                record.type_tag.clone()
            } else {
                String::new()
            },
        }
    }
}
