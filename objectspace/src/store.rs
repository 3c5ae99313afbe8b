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
//! recently used ones are evicted to keep the cache under its byte limit. Every
//! method blocks on disk; async callers run them on the blocking pool.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

mod commit;
mod index;
mod volatile;

use p3_dht::Database;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    blob::{BlobHash, Manifest},
    error::{Result, SpaceError},
    lock::LockState,
    name::{Namespace, ObjectName},
    object::ObjectRecord,
};

pub use index::CF_INDEX;
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
];

/// A blob the node holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobEntry {
    /// Its chunks.
    pub manifest: Manifest,
    /// Local object records pointing at it; 0 means it is only cached.
    pub refs: u64,
}

/// The storage key of an object record.
pub fn record_key(ns: &Namespace, name: &ObjectName) -> Vec<u8> {
    let mut key = Vec::with_capacity(ns.as_str().len() + 1 + name.as_str().len());
    key.extend_from_slice(ns.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_str().as_bytes());
    key
}

/// Least-recently-used order of the cached (unreferenced) blobs.
#[derive(Default)]
struct Cache {
    tick: u64,
    order: BTreeMap<u64, BlobHash>,
    entries: HashMap<BlobHash, (u64, u64)>,
    bytes: u64,
    pins: HashMap<BlobHash, usize>,
    evicted: Vec<BlobHash>,
}

impl Cache {
    fn touch(&mut self, hash: BlobHash, size: u64) {
        self.tick += 1;
        if let Some((old, _)) = self.entries.insert(hash, (self.tick, size)) {
            self.order.remove(&old);
        } else {
            self.bytes += size;
        }
        self.order.insert(self.tick, hash);
    }

    fn forget(&mut self, hash: &BlobHash) {
        if let Some((tick, size)) = self.entries.remove(hash) {
            self.order.remove(&tick);
            self.bytes -= size;
        }
    }
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

/// Keeps a blob from being evicted while an operation uses it.
pub struct Pin {
    store: Store,
    hash: BlobHash,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut cache = self.store.lock();
        if let Some(n) = cache.pins.get_mut(&self.hash) {
            *n -= 1;
            if *n == 0 {
                cache.pins.remove(&self.hash);
            }
        }
    }
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
        let cf = self.cf(CF_LOCKS)?;
        self.inner.db.raw().put_cf(cf, key, encode(state)?)?;
        self.durable()
    }

    /// [`Store::put_lock_state`] for async callers (see
    /// [`Store::put_record_async`]).
    pub async fn put_lock_state_async(&self, key: &[u8; 32], state: &LockState) -> Result<()> {
        let cf = self.cf(CF_LOCKS)?;
        self.inner.db.raw().put_cf(cf, key, encode(state)?)?;
        self.durable_async().await
    }

    /// Returns once every write applied so far is on disk, sharing the log
    /// sync with the writers that wait at the same time.
    fn durable(&self) -> Result<()> {
        Ok(self
            .inner
            .group
            .sync(|| self.inner.db.raw().flush_wal(true))?)
    }

    /// [`Store::durable`] without holding a thread while others sync; a sync
    /// this caller runs goes to the blocking pool.
    async fn durable_async(&self) -> Result<()> {
        let sync = || {
            let store = self.clone();
            async move {
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
        self.apply_record(record)?;
        self.durable()
    }

    /// [`Store::put_record`] for async callers: the record is applied at once
    /// (a small write, without a sync), and the wait for the log sync it
    /// shares with concurrent writers holds no thread.
    pub async fn put_record_async(&self, record: &ObjectRecord) -> Result<()> {
        self.apply_record(record)?;
        self.durable_async().await
    }

    /// Applies `record` without waiting for it to be on disk.
    fn apply_record(&self, record: &ObjectRecord) -> Result<()> {
        let key = record_key(&record.ns, &record.name);
        self.inner.volatile.remove(&key);
        let mut cache = self.lock();
        let old: Option<ObjectRecord> = self.get(CF_OBJECTS, &key)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_OBJECTS)?, &key, encode(record)?);
        let old_blob = old.and_then(|o| o.blob);
        if old_blob != record.blob {
            if let Some(new) = record.blob {
                self.add_ref(&mut batch, &mut cache, new, 1)?;
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

    fn add_ref(
        &self,
        batch: &mut WriteBatch,
        cache: &mut Cache,
        hash: BlobHash,
        delta: i64,
    ) -> Result<()> {
        let mut entry: BlobEntry = self.get(CF_BLOBS, &hash.0)?.ok_or_else(|| {
            SpaceError::Storage(format!("record points at blob {hash}, which is not stored"))
        })?;
        entry.refs = entry.refs.saturating_add_signed(delta);
        if entry.refs == 0 {
            cache.touch(hash, entry.manifest.size());
        } else {
            cache.forget(&hash);
        }
        batch.put_cf(self.cf(CF_BLOBS)?, hash.0, encode(&entry)?);
        Ok(())
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

    /// The manifest of a blob held here.
    pub fn manifest(&self, hash: &BlobHash) -> Result<Option<Manifest>> {
        Ok(self
            .get::<BlobEntry>(CF_BLOBS, &hash.0)?
            .map(|entry| entry.manifest))
    }

    /// Whether the whole blob is here.
    pub fn has_blob(&self, hash: &BlobHash) -> Result<bool> {
        Ok(self
            .inner
            .db
            .raw()
            .get_pinned_cf(self.cf(CF_BLOBS)?, hash.0)?
            .is_some())
    }

    /// The bytes of one chunk, if held.
    pub fn chunk(&self, hash: &BlobHash) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.db.raw().get_cf(self.cf(CF_CHUNKS)?, hash.0)?)
    }

    /// Marks a cached blob as just used.
    pub fn touch(&self, hash: &BlobHash) {
        let mut cache = self.lock();
        if let Some(&(_, size)) = cache.entries.get(hash) {
            cache.touch(*hash, size);
        }
    }

    /// Keeps `hash` from eviction until the returned guard drops.
    pub fn pin(&self, hash: BlobHash) -> Pin {
        *self.lock().pins.entry(hash).or_insert(0) += 1;
        Pin {
            store: self.clone(),
            hash,
        }
    }

    /// Starts receiving a blob's chunks.
    pub fn writer(&self) -> BlobWriter {
        BlobWriter {
            store: self.clone(),
            staged: Vec::new(),
        }
    }

    /// Blobs evicted from the cache since the last call (their provider records
    /// should be withdrawn).
    pub fn take_evicted(&self) -> Vec<BlobHash> {
        std::mem::take(&mut self.lock().evicted)
    }

    /// Bytes of cached (unreferenced) blobs.
    pub fn cached_bytes(&self) -> u64 {
        self.lock().bytes
    }

    fn evict(&self, cache: &mut Cache) -> Result<()> {
        while cache.bytes > self.inner.cache_limit {
            let victim = cache
                .order
                .values()
                .find(|h| !cache.pins.contains_key(h))
                .copied();
            let Some(hash) = victim else { break };
            cache.forget(&hash);
            if let Some(entry) = self.get::<BlobEntry>(CF_BLOBS, &hash.0)? {
                let mut batch = WriteBatch::default();
                batch.delete_cf(self.cf(CF_BLOBS)?, hash.0);
                for chunk in entry.manifest.chunks() {
                    self.chunk_ref(&mut batch, chunk, -1)?;
                }
                self.inner.db.raw().write(batch)?;
            }
            cache.evicted.push(hash);
        }
        Ok(())
    }

    /// Adjusts a chunk's count in `batch`, deleting the chunk when it reaches 0.
    /// Counts of one chunk must not change twice in one batch (reads see the
    /// database, not the batch), so callers apply batches chunk by chunk.
    fn chunk_ref(&self, batch: &mut WriteBatch, chunk: &BlobHash, delta: i64) -> Result<()> {
        let refs_cf = self.cf(CF_CHUNK_REFS)?;
        let current = match self.inner.db.raw().get_pinned_cf(refs_cf, chunk.0)? {
            Some(b) => u64::from_be_bytes(b.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        };
        let next = current.saturating_add_signed(delta);
        if next == 0 {
            batch.delete_cf(refs_cf, chunk.0);
            batch.delete_cf(self.cf(CF_CHUNKS)?, chunk.0);
        } else {
            batch.put_cf(refs_cf, chunk.0, next.to_be_bytes());
        }
        Ok(())
    }

    fn apply_chunk_ref(&self, chunk: &BlobHash, delta: i64) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.chunk_ref(&mut batch, chunk, delta)?;
        Ok(self.inner.db.raw().write(batch)?)
    }
}

/// Receives a blob chunk by chunk. Every chunk written holds a reference from
/// the moment it is written, so concurrent uploads sharing chunks never delete
/// each other's; [`BlobWriter::commit`] hands the references to the blob, and
/// dropping an uncommitted writer gives them back.
pub struct BlobWriter {
    store: Store,
    staged: Vec<BlobHash>,
}

impl BlobWriter {
    /// Stores one chunk (already verified by the caller).
    pub fn write_chunk(&mut self, hash: BlobHash, bytes: &[u8]) -> Result<()> {
        let store = &self.store;
        let _cache = store.lock();
        let refs_cf = store.cf(CF_CHUNK_REFS)?;
        let db = store.inner.db.raw();
        let current = match db.get_pinned_cf(refs_cf, hash.0)? {
            Some(b) => u64::from_be_bytes(b.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        };
        let mut batch = WriteBatch::default();
        if current == 0 {
            batch.put_cf(store.cf(CF_CHUNKS)?, hash.0, bytes);
        }
        batch.put_cf(refs_cf, hash.0, (current + 1).to_be_bytes());
        db.write(batch)?;
        self.staged.push(hash);
        Ok(())
    }

    /// Makes the blob visible as a cached blob, pinned by the returned guard
    /// until a record references it. If the store already had it, the staged
    /// chunks are released.
    pub fn commit(mut self, hash: BlobHash, manifest: Manifest) -> Result<Pin> {
        let store = self.store.clone();
        let pin = store.pin(hash);
        let mut cache = store.lock();
        if store.get::<BlobEntry>(CF_BLOBS, &hash.0)?.is_some() {
            drop(cache);
            return Ok(pin); // `self` drops here and releases the staged chunks
        }
        let size = manifest.size();
        let entry = BlobEntry { manifest, refs: 0 };
        // Not synced: no record points at it yet. The synced write of the
        // record that will (`put_record`) syncs the write-ahead log up to
        // itself, this entry and its chunks included.
        store
            .inner
            .db
            .raw()
            .put_cf(store.cf(CF_BLOBS)?, hash.0, encode(&entry)?)?;
        self.staged.clear();
        cache.touch(hash, size);
        store.evict(&mut cache)?;
        Ok(pin)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let _cache = self.store.lock();
        for chunk in std::mem::take(&mut self.staged) {
            if let Err(e) = self.store.apply_chunk_ref(&chunk, -1) {
                tracing::warn!(error = %e, "cannot release a chunk of an abandoned upload");
            }
        }
    }
}

#[cfg(test)]
mod tests;
