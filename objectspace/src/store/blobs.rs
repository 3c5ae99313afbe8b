//! Blobs in the store: their entries (manifest and local reference count),
//! chunk reference counts, the least-recently-used cache of blobs no local
//! record uses, pins that keep a blob from eviction while it is in use, and
//! the writer that receives a blob chunk by chunk.

use std::collections::{BTreeMap, HashMap};

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::{encode, Store, CF_BLOBS, CF_CHUNKS, CF_CHUNK_REFS};
use crate::{
    blob::{BlobHash, Manifest},
    error::{Result, SpaceError},
};

/// A blob the node holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobEntry {
    /// Its chunks.
    pub manifest: Manifest,
    /// Local object records pointing at it; 0 means it is only cached.
    pub refs: u64,
}

/// Least-recently-used order of the cached (unreferenced) blobs.
#[derive(Default)]
pub(super) struct Cache {
    tick: u64,
    order: BTreeMap<u64, BlobHash>,
    entries: HashMap<BlobHash, (u64, u64)>,
    bytes: u64,
    pins: HashMap<BlobHash, usize>,
    evicted: Vec<BlobHash>,
}

impl Cache {
    pub(super) fn touch(&mut self, hash: BlobHash, size: u64) {
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
    pub(super) fn add_ref(
        &self,
        batch: &mut WriteBatch,
        cache: &mut Cache,
        hash: BlobHash,
        delta: i64,
    ) -> Result<()> {
        let entry: BlobEntry = self.get(CF_BLOBS, &hash.0)?.ok_or_else(|| {
            SpaceError::Storage(format!("record points at blob {hash}, which is not stored"))
        })?;
        self.count_ref(batch, cache, hash, entry, delta)
    }

    /// [`Store::add_ref`] of a new reference to a small value, `bytes` (one
    /// chunk at most, checked against `hash` by the caller), storing the
    /// value first if it is not here: in the batch of the record that points
    /// at it, so value, counts and record reach the log in one write and
    /// the value is never an unreferenced cache entry in between.
    pub(super) fn add_ref_storing(
        &self,
        batch: &mut WriteBatch,
        cache: &mut Cache,
        hash: BlobHash,
        bytes: &[u8],
    ) -> Result<()> {
        if let Some(entry) = self.get::<BlobEntry>(CF_BLOBS, &hash.0)? {
            return self.count_ref(batch, cache, hash, entry, 1);
        }
        let manifest = Manifest::of_small(hash, bytes)?;
        for chunk in manifest.chunks() {
            self.hold_chunk(batch, chunk, bytes)?;
        }
        let entry = BlobEntry { manifest, refs: 1 };
        batch.put_cf(self.cf(CF_BLOBS)?, hash.0, encode(&entry)?);
        Ok(())
    }

    fn count_ref(
        &self,
        batch: &mut WriteBatch,
        cache: &mut Cache,
        hash: BlobHash,
        mut entry: BlobEntry,
        delta: i64,
    ) -> Result<()> {
        entry.refs = entry.refs.saturating_add_signed(delta);
        if entry.refs == 0 {
            cache.touch(hash, entry.manifest.size());
        } else {
            cache.forget(&hash);
        }
        batch.put_cf(self.cf(CF_BLOBS)?, hash.0, encode(&entry)?);
        Ok(())
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

    /// Reclaims the disk space of deleted chunks where enough has
    /// accumulated to be worth rewriting the rest (blocking; see
    /// [`p3_dht::db::Database::collect_blob_garbage`]).
    pub fn collect_garbage(&self) -> Result<()> {
        let collected = self
            .inner
            .db
            .collect_blob_garbage()
            .map_err(|e| SpaceError::Storage(e.to_string()))?;
        for c in collected {
            tracing::info!(column_family = %c.column_family, before = c.before, after = c.after, "blob garbage collected");
        }
        Ok(())
    }

    /// Bytes of cached (unreferenced) blobs.
    pub fn cached_bytes(&self) -> u64 {
        self.lock().bytes
    }

    pub(super) fn evict(&self, cache: &mut Cache) -> Result<()> {
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
        let next = self.chunk_refs(chunk)?.saturating_add_signed(delta);
        if next == 0 {
            batch.delete_cf(refs_cf, chunk.0);
            batch.delete_cf(self.cf(CF_CHUNKS)?, chunk.0);
        } else {
            batch.put_cf(refs_cf, chunk.0, next.to_be_bytes());
        }
        Ok(())
    }

    /// Counts one more user of chunk `hash` in `batch`, with its bytes if it
    /// is new here. Callers hold the cache lock: counts are read, then set.
    fn hold_chunk(&self, batch: &mut WriteBatch, hash: &BlobHash, bytes: &[u8]) -> Result<()> {
        let current = self.chunk_refs(hash)?;
        if current == 0 {
            batch.put_cf(self.cf(CF_CHUNKS)?, hash.0, bytes);
        }
        batch.put_cf(self.cf(CF_CHUNK_REFS)?, hash.0, (current + 1).to_be_bytes());
        Ok(())
    }

    /// How many blobs and uploads use a chunk.
    fn chunk_refs(&self, chunk: &BlobHash) -> Result<u64> {
        let refs_cf = self.cf(CF_CHUNK_REFS)?;
        Ok(match self.inner.db.raw().get_pinned_cf(refs_cf, chunk.0)? {
            Some(b) => u64::from_be_bytes(b.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        })
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
        let mut batch = WriteBatch::default();
        store.hold_chunk(&mut batch, &hash, bytes)?;
        store.inner.db.raw().write(batch)?;
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
        // One line for the upload, not one per chunk: when the store fails
        // (a full disk) every chunk fails alike, thousands for a large value.
        let (mut kept, mut first) = (0usize, None);
        for chunk in std::mem::take(&mut self.staged) {
            if let Err(e) = self.store.apply_chunk_ref(&chunk, -1) {
                kept += 1;
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            tracing::warn!(error = %e, chunks = kept, "cannot release the chunks of an abandoned upload");
        }
    }
}
