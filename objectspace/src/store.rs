//! The node's local part of the space, on its RocksDB database: the object
//! records it owns, the blobs they point to, and the blobs it keeps as a cache.
//!
//! Column families:
//! - `objects`: `namespace ‖ 0 ‖ name` → [`ObjectRecord`] (CBOR). The key order
//!   makes a namespace, and a name prefix inside it, one contiguous range.
//! - `blobs`: blob hash → [`BlobEntry`] (manifest and how many local records use it).
//! - `chunks`: chunk hash → chunk bytes (in RocksDB blob files, see `p3_dht::db`).
//! - `chunk_refs`: chunk hash → how many blobs (and uploads in progress) use it.
//! - `locks`: object key → its lock state.
//! - `index`: the rows of the index shards this node owns ([`index`]).
//!
//! Volatile records and their values live beside these, in memory only
//! ([`volatile`]); lookups see both, a volatile record shadowing nothing (a
//! name is either volatile or durable at one time).
//!
//! A blob no local record uses is a cache entry: it stays until the least
//! recently used ones are evicted to keep the cache under its byte limit
//! ([`blobs`]). Methods block on disk: async callers run large reads and
//! writes on the blocking pool and small ones (a record, a lock state, a
//! value of a few KiB) in place; durable writes from async callers wait for
//! their log sync without a thread ([`Store::put_record_async`]).

use std::sync::{Arc, Mutex, MutexGuard};

mod blobs;
mod commit;
mod index;
mod terms;
mod volatile;

use p3_dht::Database;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    blob::BlobHash,
    error::{Result, SpaceError},
    lock::LockState,
    name::{Namespace, ObjectName},
    object::ObjectRecord,
};

use blobs::Cache;
pub use blobs::{BlobEntry, BlobWriter, Pin};
pub use index::CF_INDEX;
pub use terms::CF_TERMS;
use volatile::Volatile;
pub use volatile::{Entry as VolatileEntry, VOLATILE_BYTES};

/// Column family of object records.
pub const CF_OBJECTS: &str = "objects";
/// Column family of blob manifests and reference counts.
pub const CF_BLOBS: &str = "blobs";
/// Column family of chunk bytes.
pub const CF_CHUNKS: &str = "chunks";
/// Column family of chunk reference counts.
pub const CF_CHUNK_REFS: &str = "chunk_refs";
/// Column family of lock states (object key → [`crate::lock::LockState`]).
pub const CF_LOCKS: &str = "locks";
/// Every column family this crate owns.
pub const COLUMN_FAMILIES: &[&str] = &[
    CF_OBJECTS,
    CF_BLOBS,
    CF_CHUNKS,
    CF_CHUNK_REFS,
    CF_LOCKS,
    CF_INDEX,
    CF_TERMS,
];

/// Every column family a node's database holds: the DHT's, the membership
/// log's and this crate's. A node process and a simulated node open the same.
pub fn node_column_families() -> Vec<&'static str> {
    p3_dht::db::COLUMN_FAMILIES
        .iter()
        .chain(p3_membership::COLUMN_FAMILIES)
        .chain(COLUMN_FAMILIES)
        .copied()
        .collect()
}

/// The storage key of an object record.
pub fn record_key(ns: &Namespace, name: &ObjectName) -> Vec<u8> {
    let mut key = Vec::with_capacity(ns.as_str().len() + 1 + name.as_str().len());
    key.extend_from_slice(ns.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_str().as_bytes());
    key
}

struct Inner {
    db: Database,
    cache_limit: u64,
    /// Serialises every read-modify-write of reference counts and records.
    state: Mutex<Cache>,
    /// Volatile records and values.
    volatile: Volatile,
    /// Serialises the read-merge-writes of index rows.
    index: Mutex<()>,
    /// Shares log syncs among durable writes.
    group: commit::GroupSync,
}

/// Handle on the local store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    ciborium::into_writer(value, &mut buf).map_err(|e| SpaceError::Storage(e.to_string()))?;
    Ok(buf)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    ciborium::from_reader(bytes).map_err(|e| SpaceError::Storage(format!("corrupt entry: {e}")))
}

impl Store {
    /// Opens the store on the node's database (whose column families must
    /// include [`COLUMN_FAMILIES`]) and rebuilds the cache index.
    pub fn open(db: Database, cache_limit: u64) -> Result<Self> {
        let store = Self {
            inner: Arc::new(Inner {
                db,
                cache_limit,
                state: Mutex::new(Cache::default()),
                volatile: Volatile::default(),
                index: Mutex::new(()),
                group: commit::GroupSync::default(),
            }),
        };
        {
            let db = store.inner.db.raw();
            let mut cache = store.lock();
            for item in db.iterator_cf(store.cf(CF_BLOBS)?, IteratorMode::Start) {
                let (key, value) = item?;
                let entry: BlobEntry = decode(&value)?;
                if entry.refs == 0 {
                    if let Ok(hash) = <[u8; 32]>::try_from(&key[..]) {
                        cache.touch(BlobHash(hash), entry.manifest.size());
                    }
                }
            }
        }
        store.rebuild_terms()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves counts that are still consistent
        // on disk (every change is one write batch), so the guard stays usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.inner
            .db
            .raw()
            .cf_handle(name)
            .ok_or_else(|| SpaceError::Storage(format!("column family {name} is missing")))
    }

    fn get<T: DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>> {
        match self.inner.db.raw().get_pinned_cf(self.cf(cf)?, key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The record of `ns/name`, tombstones included.
    pub fn record(&self, ns: &Namespace, name: &ObjectName) -> Result<Option<ObjectRecord>> {
        let key = record_key(ns, name);
        if let Some(entry) = self.inner.volatile.get(&key) {
            return Ok(Some(entry.record));
        }
        self.get(CF_OBJECTS, &key)
    }

    /// The volatile record of `ns/name` and its value, if it is volatile here.
    pub fn volatile(&self, ns: &Namespace, name: &ObjectName) -> Option<VolatileEntry> {
        self.inner.volatile.get(&record_key(ns, name))
    }

    /// Holds a volatile record (and its value) in memory, replacing whatever
    /// this node had for the name, durable or not.
    pub fn put_volatile(&self, record: ObjectRecord, value: Vec<u8>) -> Result<()> {
        let key = record_key(&record.ns, &record.name);
        if self.get::<ObjectRecord>(CF_OBJECTS, &key)?.is_some() {
            self.delete_durable(&key)?;
        }
        let entry = VolatileEntry {
            record,
            value: Arc::new(value),
        };
        self.inner.volatile.put(key, entry)
    }

    /// Every volatile entry held here.
    pub fn volatile_entries(&self) -> Vec<VolatileEntry> {
        self.inner.volatile.all()
    }

    /// Bytes of volatile values and records held here.
    pub fn volatile_bytes(&self) -> u64 {
        self.inner.volatile.bytes()
    }

    /// The lock state of an object key.
    pub fn lock_state(&self, key: &[u8; 32]) -> Result<Option<LockState>> {
        self.get(CF_LOCKS, key)
    }

    /// Stores a lock state durably.
    pub fn put_lock_state(&self, key: &[u8; 32], state: &LockState) -> Result<()> {
        self.apply_lock_state(key, state)?;
        self.durable()
    }

    /// [`Store::put_lock_state`] for async callers (see
    /// [`Store::put_record_async`]).
    pub async fn put_lock_state_async(&self, key: &[u8; 32], state: &LockState) -> Result<()> {
        self.apply_lock_state(key, state)?;
        self.durable_async().await
    }

    /// Applies a lock state without waiting for it to be on disk: it is
    /// synced with the next durable write, and lost if the process dies
    /// first (for changes that may be lost, see
    /// [`LockState::only_removes_from`]).
    pub fn apply_lock_state(&self, key: &[u8; 32], state: &LockState) -> Result<()> {
        let cf = self.cf(CF_LOCKS)?;
        Ok(self.inner.db.raw().put_cf(cf, key, encode(state)?)?)
    }

    /// Hands the writes applied so far to the OS without syncing them: they
    /// survive this process, not the machine (the index, repaired anyway).
    fn to_os(&self) -> Result<()> {
        self.inner
            .db
            .to_os()
            .map_err(|e| SpaceError::Storage(e.to_string()))
    }

    /// Returns once every write applied so far is on disk, sharing the log
    /// sync with the writers that wait at the same time.
    fn durable(&self) -> Result<()> {
        Ok(self
            .inner
            .group
            .sync(|| self.inner.db.raw().flush_wal(true))?)
    }

    /// [`Store::durable`] without holding a thread while others sync.
    ///
    /// The sync this caller runs for its group runs on this thread, which
    /// hands its runtime worker's other tasks to another thread meanwhile
    /// (`block_in_place`), so the node goes on serving and the write goes on
    /// without being woken from the blocking pool afterwards: at sixteen
    /// clients 20 % fewer context switches per write and 8–30 % more puts/s
    /// than with `spawn_blocking` (docs/benchmarks.md). Running it on the
    /// worker without the hand-off was slower: the tasks queued behind it
    /// waited. A current-thread runtime (tests) cannot hand off, so there it
    /// goes to the blocking pool.
    pub(crate) async fn durable_async(&self) -> Result<()> {
        let sync = || {
            let store = self.clone();
            async move {
                let flavor = tokio::runtime::Handle::current().runtime_flavor();
                if flavor == tokio::runtime::RuntimeFlavor::MultiThread {
                    return Ok(tokio::task::block_in_place(|| {
                        store.inner.db.raw().flush_wal(true)
                    })?);
                }
                tokio::task::spawn_blocking(move || store.inner.db.raw().flush_wal(true))
                    .await
                    .map_err(|e| SpaceError::Storage(format!("log sync failed: {e}")))?
                    .map_err(SpaceError::from)
            }
        };
        self.inner.group.sync_async(sync).await
    }

    /// Stores `record` durably (on disk before returning), replacing the
    /// one for its name, and moves blob reference counts accordingly. The record's
    /// blob must be in the store.
    pub fn put_record(&self, record: &ObjectRecord) -> Result<()> {
        self.apply_record(record, None)?;
        self.durable()
    }

    /// [`Store::put_record`] for async callers: the record is applied at once
    /// (a small write, without a sync), and the wait for the log sync it
    /// shares with concurrent writers holds no thread.
    pub async fn put_record_async(&self, record: &ObjectRecord) -> Result<()> {
        self.apply_record(record, None)?;
        self.durable_async().await
    }

    /// [`Store::put_record_async`] of a record whose value, `value` (one
    /// chunk at most), need not be here yet: it is stored with the record,
    /// in one write. The caller has checked it against the record's blob.
    /// How an owner stores a small write that came with its value: one log
    /// write where storing the value first took three.
    pub async fn put_record_with_value(&self, record: &ObjectRecord, value: &[u8]) -> Result<()> {
        self.apply_record(record, Some(value))?;
        self.durable_async().await
    }

    /// Applies `record` without waiting for it to be on disk, storing its
    /// value from `value` if that is given and the value is not here.
    fn apply_record(&self, record: &ObjectRecord, value: Option<&[u8]>) -> Result<()> {
        let key = record_key(&record.ns, &record.name);
        self.inner.volatile.remove(&key);
        let mut cache = self.lock();
        let old: Option<ObjectRecord> = self.get(CF_OBJECTS, &key)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_OBJECTS)?, &key, encode(record)?);
        let old_blob = old.and_then(|o| o.blob);
        if old_blob != record.blob {
            match (record.blob, value) {
                (Some(new), Some(bytes)) => {
                    self.add_ref_storing(&mut batch, &mut cache, new, bytes)?
                }
                (Some(new), None) => self.add_ref(&mut batch, &mut cache, new, 1)?,
                (None, _) => {}
            }
            if let Some(old) = old_blob {
                self.add_ref(&mut batch, &mut cache, old, -1)?;
            }
        }
        self.inner.db.raw().write(batch)?;
        self.evict(&mut cache)
    }

    /// Removes the record of `ns/name` (the node no longer owns it).
    pub fn delete_record(&self, ns: &Namespace, name: &ObjectName) -> Result<()> {
        let key = record_key(ns, name);
        self.inner.volatile.remove(&key);
        self.delete_durable(&key)
    }

    fn delete_durable(&self, key: &[u8]) -> Result<()> {
        let mut cache = self.lock();
        let Some(old) = self.get::<ObjectRecord>(CF_OBJECTS, key)? else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_OBJECTS)?, key);
        if let Some(blob) = old.blob {
            self.add_ref(&mut batch, &mut cache, blob, -1)?;
        }
        self.inner.db.raw().write(batch)?;
        self.evict(&mut cache)?;
        drop(cache);
        self.durable()
    }

    /// Records in key order starting after `after` (or at `start`), at most
    /// `limit`, while `keep(key)` holds.
    fn scan(
        &self,
        start: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<ObjectRecord>> {
        let from = after.unwrap_or(start);
        let mode = IteratorMode::From(from, Direction::Forward);
        let mut out = Vec::new();
        for item in self.inner.db.raw().iterator_cf(self.cf(CF_OBJECTS)?, mode) {
            let (key, value) = item?;
            if after == Some(&key[..]) {
                continue;
            }
            if !keep(&key) || out.len() >= limit {
                break;
            }
            out.push(decode(&value)?);
        }
        Ok(out)
    }

    /// Records of namespace `ns` whose names start with `prefix`, in name order,
    /// after the name `after`, at most `limit`.
    pub fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&ObjectName>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>> {
        let mut start = ns.as_str().as_bytes().to_vec();
        start.push(0);
        start.extend_from_slice(prefix.as_bytes());
        let after = after.map(|a| record_key(ns, a));
        let mut records = self.scan(&start, after.as_deref(), limit, |key| {
            key.starts_with(&start)
        })?;
        let volatile = self.inner.volatile.range(&start, after.as_deref(), limit);
        if !volatile.is_empty() {
            // Both are the first `limit` names of their kind: so is the merge.
            records.extend(volatile);
            records.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
            records.truncate(limit);
        }
        Ok(records)
    }

    /// Every record, volatile ones included, in batches: those after `after`
    /// (a record key), at most `limit`.
    pub fn all_records(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<ObjectRecord>> {
        let mut records = self.scan(&[], after, limit, |_| true)?;
        let volatile = self.inner.volatile.range(&[], after, limit);
        if !volatile.is_empty() {
            records.extend(volatile);
            records.sort_by_cached_key(|r| record_key(&r.ns, &r.name));
            records.truncate(limit);
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests;
