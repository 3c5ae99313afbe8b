//! The node's RocksDB database: one per node, one column family per kind of record.
//! Each layer names the column families it owns; the node opens them all at once.

use std::{path::Path, sync::Arc};

use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, InfoLogger, LogLevel, Options, DB};

mod blob_gc;

pub use blob_gc::Collected;

/// The write-ahead logs a node keeps at most.
const MAX_LOG_BYTES: u64 = 256 << 20;
/// The size of one memtable of every family.
const WRITE_BUFFER_BYTES: usize = 16 << 20;

/// Column families owned by this crate (the Kademlia record and provider store).
pub const COLUMN_FAMILIES: &[&str] = &[crate::store::CF_RECORDS, crate::store::CF_PROVIDERS];

/// Why the database could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Another process (most likely another node) has the database open.
    #[error(
        "database {path} is in use by another process; is a node already running on this data dir?"
    )]
    Locked {
        /// The database directory.
        path: String,
    },
    /// Any other RocksDB failure.
    #[error("database {path}: {source}")]
    Rocks {
        /// The database directory.
        path: String,
        /// What RocksDB said.
        source: rocksdb::Error,
    },
}

/// A cheap-to-clone handle on the node's RocksDB database.
#[derive(Clone)]
pub struct Database {
    db: Arc<DB>,
    path: String,
    /// The column families it was opened with (none is made later), so
    /// walking them costs no read of the manifest.
    families: Arc<[String]>,
}

impl Database {
    /// Opens (creating if needed) the database at `path` with the given column
    /// families plus any that already exist on disk, so a newer layer's data is
    /// never refused by an older binary.
    pub fn open(path: &Path, column_families: &[&str]) -> Result<Self, DbError> {
        let display = path.display().to_string();
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Writes stay in RocksDB's log buffer until a sync (or
        // `Database::to_os`) writes them out: a durable write's one sync
        // carries every write before it, and the writes no one syncs (blob
        // chunks before their record, cached blobs) cost no system call each.
        // What is lost in a crash is always a suffix of the log.
        options.set_manual_wal_flush(true);
        // A log file is deleted only once every family with writes in it has
        // flushed them. Without a cap, families that write little (records,
        // locks) kept every log of a large value's chunks alive: 2 GiB of
        // logs per node after a few 1 GiB puts. Past the cap, RocksDB
        // flushes the families that hold the oldest log.
        options.set_max_total_wal_size(MAX_LOG_BYTES);
        options.set_info_logger(rocksdb_to_tracing());
        let mut names: Vec<String> = DB::list_cf(&options, path).unwrap_or_default();
        // The default family, unused, opened with the others' options: the
        // binding would give it RocksDB's defaults, whose 64 MiB memtables
        // made RocksDB preallocate every log at 70 MB (1.1 times the largest
        // memtable of any family) — 15 GB of disk for `p3sim`'s 200 nodes.
        for cf in std::iter::once(&rocksdb::DEFAULT_COLUMN_FAMILY_NAME).chain(column_families) {
            if !names.iter().any(|n| n == cf) {
                names.push((*cf).to_owned());
            }
        }
        let descriptors = names
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options()));
        let db = DB::open_cf_descriptors(&options, path, descriptors).map_err(|source| {
            if source.to_string().contains("lock") {
                DbError::Locked {
                    path: display.clone(),
                }
            } else {
                DbError::Rocks {
                    path: display.clone(),
                    source,
                }
            }
        })?;
        Ok(Self {
            db: Arc::new(db),
            path: display,
            families: names.into(),
        })
    }

    /// The raw RocksDB handle, for the layers' own stores.
    pub fn raw(&self) -> &DB {
        &self.db
    }

    /// Hands the log buffer to the operating system without syncing it: for
    /// writes that need not survive a machine's crash but should survive the
    /// process's (index rows, Kademlia records), as they would without
    /// manual log flushes.
    pub fn to_os(&self) -> Result<(), DbError> {
        self.db.flush_wal(false).map_err(|source| DbError::Rocks {
            path: self.path.clone(),
            source,
        })
    }

    /// Flushes memtables and the WAL to disk; called on clean shutdown.
    pub fn flush(&self) -> Result<(), DbError> {
        let err = |source| DbError::Rocks {
            path: self.path.clone(),
            source,
        };
        self.db.flush_wal(true).map_err(err)?;
        for name in self.families.iter() {
            if let Some(cf) = self.db.cf_handle(name) {
                self.db.flush_cf(cf).map_err(err)?;
            }
        }
        Ok(())
    }
}

/// RocksDB's own messages go to the node's log like every other layer's,
/// under the target `rocksdb`, instead of to a `LOG` file in each database:
/// that file was read by no one, and held one descriptor a node open —
/// `p3sim` at N = 1,000 needs every one under a 20,000 open-file limit
/// (`docs/scale.md`). Its errors are logged as errors; its warnings (write
/// stalls, a failed open that the node reports in its own words) at debug
/// level, so that a user's error stays one line; its header (the options
/// dump at every open) at trace level.
fn rocksdb_to_tracing() -> InfoLogger {
    InfoLogger::new_callback_logger(LogLevel::Warn, |level, message| {
        let message = message.trim_end();
        match level {
            LogLevel::Error | LogLevel::Fatal => tracing::error!(target: "rocksdb", "{message}"),
            LogLevel::Warn => tracing::debug!(target: "rocksdb", "{message}"),
            LogLevel::Header | LogLevel::Info | LogLevel::Debug => {
                tracing::trace!(target: "rocksdb", "{message}")
            }
        }
    })
}

/// Options of every column family. Large values (blob chunks) go to RocksDB's
/// blob files, so compaction never rewrites them; small memtables keep a node's
/// memory flat however large the values written through it.
///
/// Blob garbage collection is off: with it on, every compaction rewrites the
/// live blobs of the oldest quarter of blob files, and since each flush of
/// the chunk family compacts into its single level, a 1 GiB put made every
/// node write 6.4 GiB instead of 2. A blob file whose blobs are all deleted is
/// dropped without it; the rest is reclaimed by
/// [`Database::collect_blob_garbage`] once garbage is worth a rewrite.
///
/// Every family's tables carry a Bloom filter (10 bits a key, about 1 % false
/// positives): most point lookups of a write miss (is this blob, chunk or name
/// new?), and without a filter each miss searched the index and a data block
/// of every table file that might hold the key: 10–15 % of a node's CPU under
/// small puts (`perf`, docs/benchmarks.md).
fn cf_options() -> Options {
    let mut tables = BlockBasedOptions::default();
    tables.set_bloom_filter(10.0, false);
    let mut options = Options::default();
    options.set_block_based_table_factory(&tables);
    options.set_enable_blob_files(true);
    options.set_min_blob_size(16 << 10);
    options.set_enable_blob_gc(false);
    options.set_write_buffer_size(WRITE_BUFFER_BYTES);
    options.set_max_write_buffer_number(2);
    options
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry"))
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| e.metadata().expect("metadata").len())
            .sum()
    }

    #[test]
    fn a_family_that_writes_little_does_not_keep_the_logs_of_one_that_writes_much() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Database::open(dir.path(), &["little", "much"]).expect("open");
        let raw = db.raw();
        let (little, much) = (
            raw.cf_handle("little").expect("family"),
            raw.cf_handle("much").expect("family"),
        );
        raw.put_cf(little, b"k", b"v").expect("put");
        let written = 2 * MAX_LOG_BYTES;
        for i in 0..written >> 20 {
            raw.put_cf(much, i.to_be_bytes(), vec![1; 1 << 20])
                .expect("put");
            db.to_os().expect("to the OS");
        }
        let logs = log_bytes(dir.path());
        // Some slack: the cap is checked when a log is switched, and the
        // memtables in flight each have a log of their own.
        assert!(
            logs <= MAX_LOG_BYTES + (64 << 20),
            "{} MiB of logs after {} MiB written",
            logs >> 20,
            written >> 20
        );
        assert_eq!(raw.get_cf(little, b"k").expect("get"), Some(b"v".to_vec()));
    }

    #[test]
    fn a_new_database_allocates_a_log_the_size_of_one_memtable_not_more() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("dir");
        let db = Database::open(dir.path(), &["family"]).expect("open");
        let raw = db.raw();
        raw.put_cf(raw.cf_handle("family").expect("family"), b"k", b"v")
            .expect("put");
        // Written and synced: the log has its preallocated extent now.
        raw.flush_wal(true).expect("sync");
        let allocated: u64 = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").metadata().expect("metadata"))
            .filter(|m| m.is_file())
            .map(|m| m.blocks() * 512)
            .sum();
        // RocksDB preallocates a log at 1.1 memtables; the manifest takes
        // up to 4 MiB more. The default family's 64 MiB memtables made it
        // 74 MB.
        let bound = WRITE_BUFFER_BYTES as u64 * 11 / 10 + (6 << 20);
        assert!(
            allocated <= bound,
            "{} MiB allocated on disk (bound {} MiB)",
            allocated >> 20,
            bound >> 20
        );
    }

    #[test]
    fn a_lookup_of_an_absent_key_is_answered_by_the_filter() {
        use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};
        let dir = tempfile::tempdir().expect("dir");
        let db = Database::open(dir.path(), &["family"]).expect("open");
        let raw = db.raw();
        let family = raw.cf_handle("family").expect("family");
        // Even keys on disk, odd ones looked up: inside the table's key
        // range, so only a filter can rule the table out.
        for i in (0u32..2_000).step_by(2) {
            raw.put_cf(family, i.to_be_bytes(), b"v").expect("put");
        }
        raw.flush_cf(family).expect("flush");
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut context = PerfContext::default();
        context.reset();
        let absent = (1u32..2_000).step_by(20);
        let lookups = absent.len() as u64;
        for i in absent {
            assert_eq!(raw.get_cf(family, i.to_be_bytes()).expect("get"), None);
        }
        let ruled_out = context.metric(PerfMetric::BloomSstMissCount);
        set_perf_stats(PerfStatsLevel::Disable);
        // About 1 % of absent keys pass a 10-bit filter.
        assert!(
            ruled_out >= lookups * 9 / 10,
            "the filter ruled out {ruled_out} of {lookups} absent keys"
        );
        assert_eq!(
            raw.get_cf(family, 1_000u32.to_be_bytes()).expect("get"),
            Some(b"v".to_vec())
        );
    }
}
