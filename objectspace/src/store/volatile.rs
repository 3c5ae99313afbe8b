//! The in-memory part of a node's store: volatile records and their values.
//! They live as long as the process; the owners' copies are all there is, so a
//! volatile object is lost exactly when every owner has died or restarted.

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{
    error::{Result, SpaceError},
    object::ObjectRecord,
};

/// Bytes of volatile values (and records) a node holds at most; writes past it
/// are refused rather than letting memory grow without bound.
pub const VOLATILE_BYTES: u64 = 512 << 20;

/// Approximate cost of a record beside its value (names, metadata, map entry).
const RECORD_OVERHEAD: u64 = 256;

/// A volatile record and its value (empty for a tombstone).
#[derive(Clone)]
pub struct Entry {
    /// The record.
    pub record: ObjectRecord,
    /// The value.
    pub value: Arc<Vec<u8>>,
}

impl Entry {
    fn cost(&self) -> u64 {
        self.value.len() as u64 + self.record.name.as_str().len() as u64 + RECORD_OVERHEAD
    }
}

#[derive(Default)]
struct Table {
    /// Keyed like RocksDB's `objects` family, so ranges line up with it.
    entries: BTreeMap<Vec<u8>, Entry>,
    bytes: u64,
}

/// The volatile table; cheap to share behind the store's `Arc`.
#[derive(Default)]
pub struct Volatile {
    table: Mutex<Table>,
}

impl Volatile {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every change below is a whole insert or remove: a panic elsewhere
        // cannot leave the table half-changed.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry at `key`.
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.lock().entries.get(key).cloned()
    }

    /// Holds `entry` at `key`, replacing what was there.
    pub fn put(&self, key: Vec<u8>, entry: Entry) -> Result<()> {
        let mut table = self.lock();
        let old = table.entries.get(&key).map_or(0, Entry::cost);
        let bytes = table.bytes - old + entry.cost();
        if bytes > VOLATILE_BYTES {
            return Err(SpaceError::Unavailable(format!(
                "this node holds {VOLATILE_BYTES} bytes of volatile objects already"
            )));
        }
        table.bytes = bytes;
        table.entries.insert(key, entry);
        Ok(())
    }

    /// Drops the entry at `key`; whether there was one.
    pub fn remove(&self, key: &[u8]) -> bool {
        let mut table = self.lock();
        match table.entries.remove(key) {
            Some(old) => {
                table.bytes -= old.cost();
                true
            }
            None => false,
        }
    }

    /// Records whose keys start with `start`, after `after`, at most `limit`.
    pub fn range(&self, start: &[u8], after: Option<&[u8]>, limit: usize) -> Vec<ObjectRecord> {
        let table = self.lock();
        let from = match after {
            Some(a) if a >= start => Bound::Excluded(a.to_vec()),
            _ => Bound::Included(start.to_vec()),
        };
        table
            .entries
            .range((from, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(start))
            .take(limit)
            .map(|(_, e)| e.record.clone())
            .collect()
    }

    /// A snapshot of every entry (for repair: few and small).
    pub fn all(&self) -> Vec<Entry> {
        self.lock().entries.values().cloned().collect()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}
