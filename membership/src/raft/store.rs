//! openraft's storage: the log, the vote and snapshots in the node's RocksDB
//! (column family [`COLUMN_FAMILY`], every write synced: Raft's safety rests
//! on them), and the state machine — the [`Map`] — in memory, published to
//! the rest of the node through a `watch` channel, with the [`Window`] of
//! its last changes that members outside the group follow.
//!
//! Writes are few (one per membership change, one per vote), so they run on
//! the calling task rather than the blocking pool.

use std::{
    fmt::Debug,
    io::Cursor,
    ops::{Bound, RangeBounds},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use openraft::{
    storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot},
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use p3_dht::Database;
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::watch;

use super::{Applied, NodeId, RaftPeer, TypeConfig};
use crate::{
    follow::{Catchup, Shared, Window},
    map::Map,
};

/// The column family that holds the membership group's Raft state.
pub const COLUMN_FAMILY: &str = "membership";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";
const SNAPSHOT: &[u8] = b"snapshot";
const LOG: &[u8] = b"log/";

fn log_key(index: u64) -> Vec<u8> {
    let mut key = LOG.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    ciborium::from_reader(bytes).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Raw access to the column family, shared by the log and the state machine.
#[derive(Clone)]
struct Column {
    db: Database,
}

impl Column {
    fn cf(&self) -> Result<&rocksdb::ColumnFamily, std::io::Error> {
        self.db.raw().cf_handle(COLUMN_FAMILY).ok_or_else(|| {
            std::io::Error::other(format!("column family {COLUMN_FAMILY} is missing"))
        })
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, std::io::Error> {
        let cf = self.cf()?;
        match self
            .db
            .raw()
            .get_cf(cf, key)
            .map_err(std::io::Error::other)?
        {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<(), std::io::Error> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .raw()
            .write_opt(batch, &options)
            .map_err(std::io::Error::other)
    }

    fn put<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), std::io::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf()?, key, encode(value)?);
        self.write(batch)
    }
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    column: Column,
}

impl LogStore {
    /// The log in `db` (which must have been opened with [`COLUMN_FAMILY`]).
    pub fn new(db: Database) -> Self {
        LogStore {
            column: Column { db },
        }
    }

    fn last_entry(&self) -> Result<Option<LogId<NodeId>>, std::io::Error> {
        let cf = self.column.cf()?;
        let mut end = log_key(u64::MAX);
        end.push(0);
        let mut iter = self
            .column
            .db
            .raw()
            .iterator_cf(cf, IteratorMode::From(&end, Direction::Reverse));
        match iter.next() {
            Some(Ok((key, value))) if key.starts_with(LOG) => {
                Ok(Some(decode::<Entry<TypeConfig>>(&value)?.log_id))
            }
            Some(Err(e)) => Err(std::io::Error::other(e)),
            _ => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cf = self
            .column
            .cf()
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let mut entries = Vec::new();
        let iter = self
            .column
            .db
            .raw()
            .iterator_cf(cf, IteratorMode::From(&log_key(start), Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            if !key.starts_with(LOG) {
                break;
            }
            let entry: Entry<TypeConfig> =
                decode(&value).map_err(|e| StorageIOError::read_logs(&e))?;
            if !range.contains(&entry.log_id.index) {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let purged: Option<LogId<NodeId>> = self
            .column
            .get(PURGED)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last = self
            .last_entry()
            .map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.column
            .put(VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.column
            .get(VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.column
            .put(COMMITTED, &committed)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .column
            .get::<Option<LogId<NodeId>>>(COMMITTED)
            .map_err(|e| StorageIOError::read(&e))?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self
            .column
            .cf()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(cf, log_key(entry.log_id.index), bytes);
        }
        let written = self.column.write(batch);
        let failed = written
            .as_ref()
            .err()
            .map(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(written);
        match failed {
            Some(e) => Err(StorageIOError::write_logs(&e).into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let cf = self
            .column
            .cf()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut batch = WriteBatch::default();
        let mut end = log_key(u64::MAX);
        end.push(0);
        batch.delete_range_cf(cf, log_key(log_id.index), end);
        self.column
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let cf = self
            .column
            .cf()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf,
            PURGED,
            encode(&log_id).map_err(|e| StorageIOError::write_logs(&e))?,
        );
        batch.delete_range_cf(cf, log_key(0), log_key(log_id.index.saturating_add(1)));
        self.column
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// What a snapshot holds: everything the state machine is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Machine {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, RaftPeer>,
    map: Map,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, RaftPeer>,
    machine: Machine,
}

/// The state machine: the membership map. Each applied change is published.
#[derive(Clone)]
pub struct MapMachine {
    column: Column,
    /// The machine and the window of its last changes, which always ends at
    /// the machine's map: changed together, under this one lock.
    machine: Arc<std::sync::Mutex<(Machine, Window)>>,
    /// The map this node holds.
    published: Arc<watch::Sender<Arc<Map>>>,
    /// Snapshots installed from the leader.
    installed: Arc<AtomicU64>,
}

impl MapMachine {
    /// The state machine of `db`, starting from its last snapshot, keeping
    /// the last `window` changes for members to follow; returns it and a
    /// receiver of the map as it moves.
    pub fn open(
        db: Database,
        window: usize,
    ) -> Result<(Self, watch::Receiver<Arc<Map>>), std::io::Error> {
        let column = Column { db };
        let machine = column
            .get::<StoredSnapshot>(SNAPSHOT)?
            .map(|s| s.machine)
            .unwrap_or_default();
        let window = Window::new(machine.map.epoch(), window);
        let (published, receiver) = watch::channel(Arc::new(machine.map.clone()));
        Ok((
            MapMachine {
                column,
                machine: Arc::new(std::sync::Mutex::new((machine, window))),
                published: Arc::new(published),
                installed: Arc::default(),
            },
            receiver,
        ))
    }

    /// Publishes `map` as the map this node holds if its epoch is above
    /// the one held; whether it did. Whoever moves the map forward offers
    /// it here — this machine on the group's members, lease renewals on
    /// every node — and both hand out committed maps, so two maps at the
    /// same epoch are the same map.
    pub fn offer(&self, map: Arc<Map>) -> bool {
        self.published.send_if_modified(|current| {
            let newer = map.epoch() > current.epoch();
            if newer {
                *current = map;
            }
            newer
        })
    }

    /// What a member whose map is at `epoch` lacks of this machine's
    /// applied map, which is at the returned epoch. Applied means
    /// committed: a deposed leader's answer holds nothing the group can
    /// take back.
    pub fn catchup(&self, epoch: u64) -> (u64, Catchup) {
        let guard = self.lock();
        let (machine, window) = &*guard;
        (machine.map.epoch(), window.catchup(epoch, &machine.map))
    }

    /// What a relay's batch of members at `epochs` lacks of this machine's
    /// applied map, which is at the returned epoch ([`Window::shared`]).
    pub fn shared(&self, epochs: impl IntoIterator<Item = u64>) -> (u64, Shared) {
        let guard = self.lock();
        let (machine, window) = &*guard;
        (machine.map.epoch(), window.shared(epochs, &machine.map))
    }

    /// Counts the snapshots this machine installs from the leader.
    pub fn installed(&self) -> Arc<AtomicU64> {
        self.installed.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Machine, Window)> {
        // The machine is only ever replaced whole; a panic elsewhere leaves it valid.
        self.machine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, map: Map) {
        self.offer(Arc::new(map));
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MapMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let machine = self.lock().0.clone();
        let snapshot_id = match machine.last_applied {
            Some(id) => format!("{}-{}", id.leader_id, id.index),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: machine.last_applied,
            last_membership: machine.membership.clone(),
            snapshot_id,
        };
        let data = encode(&machine).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            machine,
        };
        self.column
            .put(SNAPSHOT, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MapMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, RaftPeer>)> {
        let guard = self.lock();
        Ok((guard.0.last_applied, guard.0.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut answers = Vec::new();
        let map = {
            let mut guard = self.lock();
            let (machine, window) = &mut *guard;
            for entry in entries {
                machine.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(change) => {
                        if machine.map.apply(&change) {
                            window.record(machine.map.epoch(), change);
                        }
                    }
                    EntryPayload::Membership(membership) => {
                        machine.membership = StoredMembership::new(Some(entry.log_id), membership);
                    }
                }
                answers.push(Applied {
                    epoch: machine.map.epoch(),
                });
            }
            machine.map.clone()
        };
        self.publish(map);
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, RaftPeer>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let machine: Machine = decode(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            machine: machine.clone(),
        };
        self.column
            .put(SNAPSHOT, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let map = machine.map.clone();
        {
            let mut guard = self.lock();
            guard.1.reset(map.epoch());
            guard.0 = machine;
        }
        self.publish(map);
        self.installed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored: Option<StoredSnapshot> = self
            .column
            .get(SNAPSHOT)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        match stored {
            Some(stored) => {
                let data =
                    encode(&stored.machine).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                Ok(Some(Snapshot {
                    meta: stored.meta,
                    snapshot: Box::new(Cursor::new(data)),
                }))
            }
            None => Ok(None),
        }
    }
}
