//! Reclaiming the space of deleted blobs. RocksDB's blob garbage collection
//! rewrites the live blobs of old blob files during compaction; left on, it
//! runs in every compaction whether or not there is garbage to free. Here it
//! runs only when a column family's blob files hold enough garbage that
//! rewriting what is still live pays for itself.

use rocksdb::{AsColumnFamilyRef, BottommostLevelCompaction, CompactOptions};

use super::{Database, DbError};

/// Below this much garbage in a column family a collection is not worth a
/// full compaction.
const MIN_GARBAGE: u64 = 64 << 20;

/// What one collection did to one column family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// The column family.
    pub column_family: String,
    /// Bytes of its blob files before.
    pub before: u64,
    /// Bytes of its blob files after.
    pub after: u64,
}

/// Whether blob files of `file_bytes`, of which `garbage_bytes` are deleted
/// blobs, should be rewritten: when garbage is at least `min_garbage` and at
/// least half of the files. Then the live bytes a collection rewrites are
/// never more than the bytes it frees, so over time collection costs at most
/// one extra write per byte deleted, and space never exceeds twice the live
/// data plus `min_garbage`.
pub fn due(file_bytes: u64, garbage_bytes: u64, min_garbage: u64) -> bool {
    garbage_bytes >= min_garbage.max(1) && garbage_bytes.saturating_mul(2) >= file_bytes
}

impl Database {
    /// Collects the blob garbage of every column family where [`due`] says
    /// so (blocking: a full compaction of each such family). Returns what
    /// it collected.
    pub fn collect_blob_garbage(&self) -> Result<Vec<Collected>, DbError> {
        self.collect_blob_garbage_above(MIN_GARBAGE)
    }

    pub(super) fn collect_blob_garbage_above(
        &self,
        min_garbage: u64,
    ) -> Result<Vec<Collected>, DbError> {
        let err = |source| DbError::Rocks {
            path: self.path.clone(),
            source,
        };
        let mut collected = Vec::new();
        for name in self.families.iter() {
            let Some(cf) = self.db.cf_handle(name) else {
                continue;
            };
            let before = self.blob_bytes(cf).map_err(err)?;
            let garbage = self
                .db
                .property_int_value_cf(cf, "rocksdb.live-blob-file-garbage-size")
                .map_err(err)?
                .unwrap_or(0);
            if !due(before, garbage, min_garbage) {
                continue;
            }
            tracing::info!(column_family = %name, before, garbage, "collecting blob garbage");
            // An age cutoff of 1 makes every blob file old: the compaction
            // moves every live blob out of files that hold garbage.
            self.db
                .set_options_cf(
                    cf,
                    &[
                        ("enable_blob_garbage_collection", "true"),
                        ("blob_garbage_collection_age_cutoff", "1.0"),
                    ],
                )
                .map_err(err)?;
            let mut options = CompactOptions::default();
            options.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
            self.db
                .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
            self.db
                .set_options_cf(cf, &[("enable_blob_garbage_collection", "false")])
                .map_err(err)?;
            collected.push(Collected {
                column_family: name.clone(),
                before,
                after: self.blob_bytes(cf).map_err(err)?,
            });
        }
        Ok(collected)
    }

    /// Bytes of the blob files of `cf`.
    fn blob_bytes(&self, cf: &impl AsColumnFamilyRef) -> Result<u64, rocksdb::Error> {
        Ok(self
            .db
            .property_int_value_cf(cf, "rocksdb.live-blob-file-size")?
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: usize = 64 << 10;

    fn open(dir: &tempfile::TempDir) -> Database {
        Database::open(dir.path(), &["values"]).expect("open")
    }

    /// Writes `n` blob-sized values to the `values` family, flushing them
    /// to a new blob file every 16 (RocksDB's own collection only moves
    /// blobs out of the oldest quarter of the files).
    fn fill(db: &Database, n: u32) {
        let raw = db.raw();
        let cf = raw.cf_handle("values").expect("family");
        for i in 0..n {
            raw.put_cf(cf, i.to_be_bytes(), vec![i as u8; VALUE])
                .expect("put");
            if i % 16 == 15 {
                raw.flush_cf(cf).expect("flush");
            }
        }
        raw.flush_cf(cf).expect("flush");
    }

    /// Deletes the values `keep` does not want and compacts, so RocksDB
    /// counts their blobs as garbage.
    fn delete(db: &Database, n: u32, keep: impl Fn(u32) -> bool) {
        let raw = db.raw();
        let cf = raw.cf_handle("values").expect("family");
        for i in (0..n).filter(|i| !keep(*i)) {
            raw.delete_cf(cf, i.to_be_bytes()).expect("delete");
        }
        raw.flush_cf(cf).expect("flush");
        let mut options = CompactOptions::default();
        options.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        raw.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
    }

    fn bytes(db: &Database, property: &str) -> u64 {
        let raw = db.raw();
        let cf = raw.cf_handle("values").expect("family");
        raw.property_int_value_cf(cf, property)
            .expect("property")
            .expect("an integer")
    }

    #[test]
    fn collection_is_due_only_when_garbage_outweighs_the_live_bytes() {
        assert!(!due(0, 0, 0), "nothing to collect");
        assert!(!due(1000, 499, 1), "less than half garbage");
        assert!(due(1000, 500, 1));
        assert!(!due(1000, 900, 901), "under the minimum");
        assert!(due(u64::MAX, u64::MAX, 1), "no overflow");
    }

    #[test]
    fn compaction_alone_rewrites_no_live_blob() {
        let dir = tempfile::tempdir().expect("dir");
        let db = open(&dir);
        fill(&db, 64);
        let files = bytes(&db, "rocksdb.live-blob-file-size");
        delete(&db, 64, |i| i % 2 == 0);
        assert!(
            bytes(&db, "rocksdb.live-blob-file-garbage-size") >= 32 * VALUE as u64,
            "half the blobs are garbage, and compaction left them in place"
        );
        assert_eq!(bytes(&db, "rocksdb.live-blob-file-size"), files);
    }

    #[test]
    fn blob_files_of_deleted_values_alone_are_dropped_without_collection() {
        let dir = tempfile::tempdir().expect("dir");
        let db = open(&dir);
        fill(&db, 32);
        assert!(bytes(&db, "rocksdb.live-blob-file-size") >= 32 * VALUE as u64);
        delete(&db, 32, |_| false);
        assert_eq!(bytes(&db, "rocksdb.live-blob-file-size"), 0);
    }

    #[test]
    fn collection_frees_the_garbage_and_keeps_every_live_value() {
        let dir = tempfile::tempdir().expect("dir");
        let db = open(&dir);
        fill(&db, 64);
        delete(&db, 64, |i| i % 4 == 0);
        let before = bytes(&db, "rocksdb.live-blob-file-size");

        assert!(
            db.collect_blob_garbage_above(u64::MAX)
                .expect("collect")
                .is_empty(),
            "not due under the minimum"
        );
        let collected = db.collect_blob_garbage_above(1).expect("collect");
        assert_eq!(collected.len(), 1, "{collected:?}");
        assert_eq!(collected[0].before, before);
        assert!(
            collected[0].after <= before / 3,
            "three quarters were garbage: {collected:?}"
        );
        assert_eq!(bytes(&db, "rocksdb.live-blob-file-garbage-size"), 0);

        let raw = db.raw();
        let cf = raw.cf_handle("values").expect("family");
        for i in 0..64u32 {
            let value = raw.get_cf(cf, i.to_be_bytes()).expect("get");
            assert_eq!(value, (i % 4 == 0).then(|| vec![i as u8; VALUE]), "key {i}");
        }
        drop(db);
        let db = open(&dir);
        let raw = db.raw();
        let cf = raw.cf_handle("values").expect("family");
        assert_eq!(
            raw.get_cf(cf, 4u32.to_be_bytes())
                .expect("get after reopen"),
            Some(vec![4; VALUE])
        );
        let later = db.collect_blob_garbage_above(1).expect("collect again");
        assert!(later.is_empty(), "nothing left to collect: {later:?}");
    }
}
