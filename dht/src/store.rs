//! The Kademlia record and provider store, kept in RocksDB so records and provider
//! announcements survive a restart.
//!
//! Layout: column family [`CF_RECORDS`] maps a record key to its CBOR-encoded
//! record; [`CF_PROVIDERS`] maps `len(key) as u16 ‖ key ‖ provider PeerId` to the
//! CBOR-encoded provider entry, so the providers of one key are one prefix scan.
//! Expiry times are monotonic `Instant`s in libp2p; on disk they are wall-clock
//! milliseconds since the Unix epoch, converted at the boundary.

use std::{
    borrow::Cow,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use libp2p::{
    kad::{
        store::{Error, RecordStore, Result},
        ProviderRecord, Record, RecordKey,
    },
    Multiaddr, PeerId,
};
use rocksdb::{Direction, IteratorMode};
use serde::{Deserialize, Serialize};

use crate::db::Database;

/// Column family of Kademlia value records.
pub const CF_RECORDS: &str = "kad_records";
/// Column family of Kademlia provider records.
pub const CF_PROVIDERS: &str = "kad_providers";

/// Bounds on what peers can make this node store.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Most value records kept.
    pub max_records: usize,
    /// Largest value record, in bytes.
    pub max_value_bytes: usize,
    /// Most providers remembered per key.
    pub max_providers_per_key: usize,
    /// Most distinct keys with provider records.
    pub max_provider_keys: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_records: 65_536,
            max_value_bytes: 64 * 1024,
            max_providers_per_key: 20,
            // Every blob a node holds is announced, so this is large.
            max_provider_keys: 4_000_000,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredRecord {
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    #[serde(with = "serde_bytes")]
    publisher: Option<Vec<u8>>,
    expires_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct StoredProvider {
    expires_ms: Option<u64>,
    addresses: Vec<Vec<u8>>,
}

/// A [`RecordStore`] on the node's RocksDB database.
///
/// RocksDB failures cannot be reported through the `RecordStore` trait; they are
/// logged and the operation behaves as if the record were absent (reads) or the
/// store full (writes), which Kademlia already handles.
pub struct RocksStore {
    db: Database,
    local: PeerId,
    limits: StoreLimits,
    records: usize,
    provider_keys: usize,
}

impl RocksStore {
    /// Opens the store on `db` (which must have been opened with
    /// [`crate::db::COLUMN_FAMILIES`]) for the node `local`.
    pub fn new(db: Database, local: PeerId, limits: StoreLimits) -> Self {
        let mut store = Self {
            db,
            local,
            limits,
            records: 0,
            provider_keys: 0,
        };
        store.records = store.scan(CF_RECORDS, &[]).count();
        let mut last: Option<Vec<u8>> = None;
        let mut provider_keys = 0;
        for (k, _) in store.scan(CF_PROVIDERS, &[]) {
            let key = provider_key_part(&k).map(<[u8]>::to_vec);
            if key.is_some() && key != last {
                provider_keys += 1;
                last = key;
            }
        }
        store.provider_keys = provider_keys;
        store
    }

    fn cf(&self, name: &str) -> Option<&rocksdb::ColumnFamily> {
        let cf = self.db.raw().cf_handle(name);
        if cf.is_none() {
            tracing::error!(cf = name, "column family missing from the database");
        }
        cf
    }

    /// Entries of column family `cf` whose keys start with `prefix`.
    fn scan<'a>(
        &'a self,
        cf: &str,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (Box<[u8]>, Box<[u8]>)> + 'a {
        let iter = self.cf(cf).map(|cf| {
            self.db
                .raw()
                .iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward))
        });
        iter.into_iter()
            .flatten()
            .map_while(|item| match item {
                Ok(kv) => Some(kv),
                Err(e) => {
                    tracing::error!(error = %e, "record store scan failed");
                    None
                }
            })
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    fn write(&self, cf: &str, key: &[u8], value: &[u8]) -> bool {
        let Some(handle) = self.cf(cf) else {
            return false;
        };
        match self.db.raw().put_cf(handle, key, value) {
            Ok(()) => self.to_os(),
            Err(e) => {
                tracing::error!(error = %e, "record store write failed");
                false
            }
        }
    }

    /// Whether a record is stored under `key`, without decoding it (keeps the
    /// record count exact even if a stored value were corrupt).
    fn has_record(&self, key: &RecordKey) -> bool {
        let Some(cf) = self.cf(CF_RECORDS) else {
            return false;
        };
        match self.db.raw().get_pinned_cf(cf, key.as_ref()) {
            Ok(value) => value.is_some(),
            Err(e) => {
                tracing::error!(error = %e, "record store read failed");
                false
            }
        }
    }

    fn delete(&self, cf: &str, key: &[u8]) {
        if let Some(handle) = self.cf(cf) {
            if let Err(e) = self.db.raw().delete_cf(handle, key) {
                tracing::error!(error = %e, "record store delete failed");
            }
            self.to_os();
        }
    }

    /// Hands the write just made to the OS (see [`Database::to_os`]).
    fn to_os(&self) -> bool {
        match self.db.to_os() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "record store log flush failed");
                false
            }
        }
    }

    fn decode_provider(&self, key: &RecordKey, k: &[u8], v: &[u8]) -> Option<ProviderRecord> {
        let peer = PeerId::from_bytes(k.get(prefix_len(key.as_ref())..)?).ok()?;
        let stored: StoredProvider = ciborium::from_reader(v).ok()?;
        Some(ProviderRecord {
            key: key.clone(),
            provider: peer,
            expires: stored.expires_ms.map(instant_from_unix_ms),
            addresses: stored
                .addresses
                .into_iter()
                .filter_map(|a| Multiaddr::try_from(a).ok())
                .collect(),
        })
    }

    fn all_providers(&self) -> Vec<ProviderRecord> {
        self.scan(CF_PROVIDERS, &[])
            .filter_map(|(k, v)| {
                let key = RecordKey::new(&provider_key_part(&k)?);
                self.decode_provider(&key, &k, &v)
            })
            .collect()
    }
}

impl RecordStore for RocksStore {
    type RecordsIter<'a> = std::vec::IntoIter<Cow<'a, Record>>;
    type ProvidedIter<'a> = std::vec::IntoIter<Cow<'a, ProviderRecord>>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        let cf = self.cf(CF_RECORDS)?;
        let bytes = match self.db.raw().get_cf(cf, k.as_ref()) {
            Ok(bytes) => bytes?,
            Err(e) => {
                tracing::error!(error = %e, "record store read failed");
                return None;
            }
        };
        decode_record(k.clone(), &bytes).map(Cow::Owned)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        if r.value.len() >= self.limits.max_value_bytes {
            return Err(Error::ValueTooLarge);
        }
        let exists = self.has_record(&r.key);
        if !exists && self.records >= self.limits.max_records {
            return Err(Error::MaxRecords);
        }
        let stored = StoredRecord {
            value: r.value,
            publisher: r.publisher.map(|p| p.to_bytes()),
            expires_ms: r.expires.map(unix_ms_from_instant),
        };
        let mut buf = Vec::new();
        if ciborium::into_writer(&stored, &mut buf).is_err()
            || !self.write(CF_RECORDS, r.key.as_ref(), &buf)
        {
            return Err(Error::MaxRecords);
        }
        if !exists {
            self.records += 1;
        }
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        if self.has_record(k) {
            self.delete(CF_RECORDS, k.as_ref());
            self.records = self.records.saturating_sub(1);
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.scan(CF_RECORDS, &[])
            .filter_map(|(k, v)| decode_record(RecordKey::new(&k), &v).map(Cow::Owned))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        let existing = self.providers(&record.key);
        let already = existing.iter().any(|p| p.provider == record.provider);
        if existing.is_empty() && self.provider_keys >= self.limits.max_provider_keys {
            return Err(Error::MaxProvidedKeys);
        }
        if !already && existing.len() >= self.limits.max_providers_per_key {
            // Same policy as libp2p's MemoryStore: the first providers are kept.
            return Ok(());
        }
        let stored = StoredProvider {
            expires_ms: record.expires.map(unix_ms_from_instant),
            addresses: record.addresses.iter().map(|a| a.to_vec()).collect(),
        };
        let mut buf = Vec::new();
        let key = provider_db_key(record.key.as_ref(), &record.provider);
        if ciborium::into_writer(&stored, &mut buf).is_err()
            || !self.write(CF_PROVIDERS, &key, &buf)
        {
            return Err(Error::MaxProvidedKeys);
        }
        if existing.is_empty() {
            self.provider_keys += 1;
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let prefix = provider_prefix(key.as_ref());
        self.scan(CF_PROVIDERS, &prefix)
            .filter_map(|(k, v)| self.decode_provider(key, &k, &v))
            .collect()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.all_providers()
            .into_iter()
            .filter(|p| p.provider == self.local)
            .map(Cow::Owned)
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        let before = self.providers(k);
        if before.iter().any(|r| &r.provider == p) {
            self.delete(CF_PROVIDERS, &provider_db_key(k.as_ref(), p));
            if before.len() == 1 {
                self.provider_keys = self.provider_keys.saturating_sub(1);
            }
        }
    }
}

fn decode_record(key: RecordKey, bytes: &[u8]) -> Option<Record> {
    let stored: StoredRecord = match ciborium::from_reader(bytes) {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(error = %e, "undecodable record in the record store");
            return None;
        }
    };
    Some(Record {
        key,
        value: stored.value,
        publisher: stored.publisher.and_then(|p| PeerId::from_bytes(&p).ok()),
        expires: stored.expires_ms.map(instant_from_unix_ms),
    })
}

fn prefix_len(key: &[u8]) -> usize {
    2 + key.len()
}

fn provider_prefix(key: &[u8]) -> Vec<u8> {
    // Kademlia keys are multihashes (tens of bytes); longer ones are truncated in
    // the length field only if a peer sends absurd keys, which libp2p caps anyway.
    let len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let mut prefix = Vec::with_capacity(prefix_len(key));
    prefix.extend_from_slice(&len.to_be_bytes());
    prefix.extend_from_slice(key);
    prefix
}

fn provider_db_key(key: &[u8], provider: &PeerId) -> Vec<u8> {
    let mut k = provider_prefix(key);
    k.extend_from_slice(&provider.to_bytes());
    k
}

fn provider_key_part(db_key: &[u8]) -> Option<&[u8]> {
    let len = u16::from_be_bytes([*db_key.first()?, *db_key.get(1)?]) as usize;
    db_key.get(2..2 + len)
}

fn unix_ms_from_instant(at: Instant) -> u64 {
    let now = Instant::now();
    let wall = if at >= now {
        SystemTime::now() + (at - now)
    } else {
        SystemTime::now() - (now - at)
    };
    wall.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn instant_from_unix_ms(ms: u64) -> Instant {
    let wall = UNIX_EPOCH + Duration::from_millis(ms);
    let now = Instant::now();
    match wall.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead,
        // Already expired: any instant in the past will do, Kademlia drops it.
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> Database {
        Database::open(dir, crate::db::COLUMN_FAMILIES).unwrap()
    }

    #[test]
    fn records_and_providers_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let local = PeerId::random();
        let other = PeerId::random();
        let key = RecordKey::new(&b"some key");
        let expires = Instant::now() + Duration::from_secs(3600);
        {
            let mut store = RocksStore::new(open(dir.path()), local, StoreLimits::default());
            let mut record = Record::new(key.clone(), b"value".to_vec());
            record.publisher = Some(other);
            record.expires = Some(expires);
            store.put(record).unwrap();
            for provider in [local, other] {
                store
                    .add_provider(ProviderRecord {
                        key: key.clone(),
                        provider,
                        expires: Some(expires),
                        addresses: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
                    })
                    .unwrap();
            }
        }
        let store = RocksStore::new(open(dir.path()), local, StoreLimits::default());
        let record = store.get(&key).unwrap();
        assert_eq!(record.value, b"value");
        assert_eq!(record.publisher, Some(other));
        let drift = record.expires.unwrap().max(expires) - record.expires.unwrap().min(expires);
        assert!(
            drift < Duration::from_secs(1),
            "expiry drifted by {drift:?}"
        );
        assert_eq!(store.records().count(), 1);
        let providers = store.providers(&key);
        assert_eq!(providers.len(), 2);
        assert_eq!(
            providers[0].addresses,
            vec!["/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>().unwrap()]
        );
        let provided: Vec<_> = store.provided().collect();
        assert_eq!(provided.len(), 1);
        assert_eq!(provided[0].provider, local);
        assert_eq!(store.provider_keys, 1);
        assert_eq!(store.records, 1);
    }

    #[test]
    fn limits_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits {
            max_records: 1,
            max_value_bytes: 10,
            max_providers_per_key: 1,
            max_provider_keys: 1,
        };
        let mut store = RocksStore::new(open(dir.path()), PeerId::random(), limits);
        assert!(matches!(
            store.put(Record::new(RecordKey::new(&b"a"), vec![0; 10])),
            Err(Error::ValueTooLarge)
        ));
        store
            .put(Record::new(RecordKey::new(&b"a"), vec![1]))
            .unwrap();
        assert!(matches!(
            store.put(Record::new(RecordKey::new(&b"b"), vec![1])),
            Err(Error::MaxRecords)
        ));
        // Overwriting an existing key is not a new record.
        store
            .put(Record::new(RecordKey::new(&b"a"), vec![2]))
            .unwrap();
        store.remove(&RecordKey::new(&b"a"));
        store
            .put(Record::new(RecordKey::new(&b"b"), vec![1]))
            .unwrap();

        let provider =
            |key: &[u8]| ProviderRecord::new(RecordKey::new(&key), PeerId::random(), vec![]);
        store.add_provider(provider(b"k")).unwrap();
        store.add_provider(provider(b"k")).unwrap(); // ignored: per-key limit
        assert_eq!(store.providers(&RecordKey::new(&b"k")).len(), 1);
        assert!(matches!(
            store.add_provider(provider(b"j")),
            Err(Error::MaxProvidedKeys)
        ));
    }

    #[test]
    fn provider_keys_with_shared_prefixes_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::new(open(dir.path()), PeerId::random(), StoreLimits::default());
        let short = RecordKey::new(&b"ab");
        let long = RecordKey::new(&b"abc");
        store
            .add_provider(ProviderRecord::new(short.clone(), PeerId::random(), vec![]))
            .unwrap();
        store
            .add_provider(ProviderRecord::new(long.clone(), PeerId::random(), vec![]))
            .unwrap();
        assert_eq!(store.providers(&short).len(), 1);
        assert_eq!(store.providers(&long).len(), 1);
        let p = store.providers(&short)[0].provider;
        store.remove_provider(&short, &p);
        assert!(store.providers(&short).is_empty());
        assert_eq!(store.providers(&long).len(), 1);
    }
}
