//! Search through per-namespace index shards.
//!
//! Each namespace has [`SHARDS`] index shards; an object belongs to the shard
//! `blake3(name)[0] % SHARDS`. A shard is itself an object,
//! `p3.system/index/NAMESPACE/N`, holding the searchable summary of each of its
//! objects — so it is owned, replicated and repaired like any object, and kept
//! consistent by compare-and-set on its version. The primary of an object
//! hands the written record to the primary of the object's shard after
//! acknowledging the write; the shard's primary applies everyone's updates in
//! one compare-and-set per round, reading the shard from its own store (a
//! node that cannot reach that primary updates the shard itself). A search reads the
//! namespace's shards — [`SHARDS`] requests whatever the size of the network —
//! and filters them with a [`Query`]; expired objects are filtered at query time.
//!
//! A template take searches, then takes a random match (exactly one taker gets
//! each object); with nothing to take it waits for a write to the namespace.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::{
    blob::BlobHash,
    error::{Result, SpaceError},
    name::{Namespace, ObjectName, ObjectPath},
    namespaces::SYSTEM,
    object::{now_ms, ObjectRecord, PutOptions},
    protocol::PeerRequest,
    query::{Query, Searchable, CONTENT_MAX},
    read::read_small,
    space::ObjectSpace,
    take::Taken,
    transfer::blocking,
};

/// Index shards per namespace: the number of requests a search makes.
pub const SHARDS: u8 = 16;
/// How long one shard update keeps trying against concurrent updates of the
/// same shard before giving up.
const UPDATE_PATIENCE: Duration = Duration::from_secs(60);

/// One object's entry in its shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The version the entry describes.
    pub version: u64,
    /// When it expires.
    pub expires_ms: Option<u64>,
    /// What a query sees.
    pub summary: Searchable,
}

/// A shard's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Shard {
    entries: BTreeMap<String, Entry>,
    /// The last version seen of removed names, so a late older update cannot
    /// bring them back.
    removed: BTreeMap<String, u64>,
    /// When each name in `removed` was removed (ms): markers older than
    /// [`REMOVED_HORIZON_MS`] are dropped, so names that come and go (queues,
    /// a job's steal requests) do not grow the shard forever.
    #[serde(default)]
    removed_at: BTreeMap<String, u64>,
    /// The incarnation of the namespace this shard indexes. A shard of an
    /// earlier incarnation (a late update from a node that had not yet heard
    /// of the removal) counts as empty, and is replaced by the next update.
    #[serde(default)]
    incarnation: u64,
}

/// How long a removal is remembered. Updates reach a shard moments after
/// their write; one this late would be long superseded, and the index audit
/// of each repair pass corrects what it got wrong.
const REMOVED_HORIZON_MS: u64 = 10 * 60 * 1000;

impl Shard {
    /// This shard as the index of incarnation `incarnation` of its namespace.
    fn of_incarnation(self, incarnation: u64) -> Shard {
        if self.incarnation == incarnation {
            self
        } else {
            Shard {
                incarnation,
                ..Shard::default()
            }
        }
    }

    /// Records `record` unless the shard knows a version at least as new;
    /// whether anything changed.
    fn apply(&mut self, record: &ObjectRecord, content: Option<Vec<u8>>) -> bool {
        let name = record.name.to_string();
        let known = self
            .entries
            .get(&name)
            .map(|e| e.version)
            .max(self.removed.get(&name).copied());
        if known.is_some_and(|v| v >= record.version) {
            return false;
        }
        if record.blob.is_some() {
            self.removed.remove(&name);
            self.removed_at.remove(&name);
            let entry = Entry {
                version: record.version,
                expires_ms: record.expires_ms,
                summary: Searchable {
                    name: name.clone(),
                    type_tag: record.type_tag.clone(),
                    size: record.size,
                    meta: record.meta.clone(),
                    content,
                },
            };
            self.entries.insert(name, entry);
        } else {
            self.entries.remove(&name);
            self.removed_at.insert(name.clone(), now_ms());
            self.removed.insert(name, record.version);
        }
        true
    }

    /// Forgets removals older than the horizon; whether any was forgotten.
    fn forget_old_removals(&mut self, now: u64) -> bool {
        let before = self.removed.len();
        let removed_at = &mut self.removed_at;
        self.removed.retain(|name, _| {
            let at = *removed_at.entry(name.clone()).or_insert(now);
            now.saturating_sub(at) < REMOVED_HORIZON_MS
        });
        let removed = &self.removed;
        removed_at.retain(|name, _| removed.contains_key(name));
        self.removed.len() != before
    }
}

/// Index updates waiting at this node (as primary of their objects), per
/// shard, and which shards have a task applying them.
#[derive(Default)]
pub(crate) struct IndexQueue {
    pending: HashMap<(Namespace, u8), BTreeMap<String, Update>>,
    draining: HashSet<(Namespace, u8)>,
}

/// A written record waiting to be indexed, with its searchable content once
/// known (`None`: not read yet; the record's primary reads it from its store).
#[derive(Debug, Clone)]
struct Update {
    record: ObjectRecord,
    content: Option<Option<Vec<u8>>>,
}

/// Most updates one [`PeerRequest::Index`] may carry.
const MAX_INDEX_UPDATES: usize = 1024;

/// The shard an object name belongs to.
pub fn shard_of(name: &ObjectName) -> u8 {
    blake3::hash(name.as_str().as_bytes()).as_bytes()[0] % SHARDS
}

pub(crate) fn shard_path(ns: &Namespace, shard: u8) -> ObjectPath {
    ObjectPath {
        namespace: Namespace::new(SYSTEM).unwrap_or_else(|_| unreachable!("valid constant")),
        name: ObjectName::new(&format!("index/{ns}/{shard}"))
            .unwrap_or_else(|_| unreachable!("namespaces make valid names")),
    }
}

impl ObjectSpace {
    async fn read_shard(&self, ns: &Namespace, shard: u8) -> Result<(Shard, u64)> {
        match self.read_all(&shard_path(ns, shard)).await {
            Ok((record, bytes)) => {
                let shard = ciborium::from_reader(bytes.as_slice()).map_err(|e| {
                    SpaceError::Corrupt(format!("index shard does not decode: {e}"))
                })?;
                Ok((shard, record.version))
            }
            Err(SpaceError::NotFound(_)) => Ok((Shard::default(), 0)),
            Err(e) => Err(e),
        }
    }

    /// This node's copy of a shard, with its version (0 if it holds none).
    async fn read_shard_here(&self, path: &ObjectPath) -> Result<(Shard, u64)> {
        let store = self.store().clone();
        let (ns, name) = (path.namespace.clone(), path.name.clone());
        let record = blocking(move || store.record(&ns, &name)).await?;
        // Absent, removed or expired: the compare-and-set expects version 0.
        let Some((record, hash)) = record
            .filter(|r| r.is_live(now_ms()))
            .and_then(|r| r.blob.map(|hash| (r, hash)))
        else {
            return Ok((Shard::default(), 0));
        };
        let bytes = self.small_value(hash).await?;
        let shard = ciborium::from_reader(bytes.as_slice())
            .map_err(|e| SpaceError::Corrupt(format!("index shard does not decode: {e}")))?;
        Ok((shard, record.version))
    }

    /// Brings the index up to date with `record` (called by the primary after
    /// acknowledging it; runs in the background).
    pub(crate) fn index(&self, record: ObjectRecord) {
        if record.ns.as_str() == SYSTEM {
            return;
        }
        self.queue_update(Update {
            record,
            content: None,
        });
    }

    /// Updates another node sends this one as the primary of their shard.
    pub(crate) fn index_from_peer(
        &self,
        ns: Namespace,
        shard: u8,
        updates: Vec<(ObjectRecord, Option<serde_bytes::ByteBuf>)>,
    ) -> Result<()> {
        if updates.len() > MAX_INDEX_UPDATES || shard >= SHARDS || ns.as_str() == SYSTEM {
            return Err(SpaceError::Invalid(format!(
                "an index update holds at most {MAX_INDEX_UPDATES} records of one shard below {SHARDS}"
            )));
        }
        let bad = updates.iter().any(|(record, content)| {
            record.ns != ns
                || shard_of(&record.name) != shard
                || content
                    .as_ref()
                    .is_some_and(|c| c.len() as u64 > CONTENT_MAX)
        });
        if bad {
            return Err(SpaceError::Invalid(format!(
                "an index update for {ns} shard {shard} holds a record of another shard, or content over {CONTENT_MAX} bytes"
            )));
        }
        if !self.primary_of_shard(&ns, shard) {
            return Err(SpaceError::Unavailable(format!(
                "not the primary of index shard {shard} of {ns}"
            )));
        }
        for (record, content) in updates {
            self.queue_update(Update {
                record,
                content: Some(content.map(serde_bytes::ByteBuf::into_vec)),
            });
        }
        Ok(())
    }

    fn primary_of_shard(&self, ns: &Namespace, shard: u8) -> bool {
        let path = shard_path(ns, shard);
        let key = crate::key::object_key(&path.namespace, &path.name);
        self.owners_now(&key).first() == Some(&self.me())
    }

    fn queue_update(&self, update: Update) {
        let at = (update.record.ns.clone(), shard_of(&update.record.name));
        let start = {
            let mut queue = self
                .inner
                .index_queue
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let pending = queue.pending.entry(at.clone()).or_default();
            match pending.get(update.record.name.as_str()) {
                Some(have) if have.record.order() >= update.record.order() => {}
                _ => {
                    pending.insert(update.record.name.to_string(), update);
                }
            }
            queue.draining.insert(at.clone())
        };
        if start {
            let space = self.clone();
            tokio::spawn(async move { space.drain_index(at).await });
        }
    }

    /// Applies a shard's pending updates, all that have gathered at a time,
    /// until none are left. The shard's primary applies them in one
    /// compare-and-set; every other node hands its updates to that primary,
    /// so one node writes each shard (about once per round trip, for
    /// everyone's writes) instead of every node racing for it.
    async fn drain_index(&self, (ns, shard): (Namespace, u8)) {
        loop {
            let batch: Vec<Update> = {
                let mut queue = self
                    .inner
                    .index_queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let at = (ns.clone(), shard);
                let batch = queue.pending.remove(&at).unwrap_or_default();
                if batch.is_empty() {
                    queue.draining.remove(&at);
                    return;
                }
                batch.into_values().collect()
            };
            let mut updates = Vec::with_capacity(batch.len());
            for Update { record, content } in batch {
                let content = match (content, record.blob) {
                    (Some(known), _) => known,
                    (None, Some(hash)) if record.size <= CONTENT_MAX => {
                        self.small_value(hash).await.ok()
                    }
                    (None, _) => None,
                };
                updates.push((record, content));
            }
            if let Err(e) = self.apply_updates(&ns, shard, updates).await {
                tracing::warn!(%ns, shard, error = %e, "index update failed");
            }
        }
    }

    /// Applies `updates` here if this node is the shard's primary, else has
    /// the primary apply them; if it cannot be reached, applies them here by
    /// compare-and-set.
    async fn apply_updates(
        &self,
        ns: &Namespace,
        shard: u8,
        updates: Vec<(ObjectRecord, Option<Vec<u8>>)>,
    ) -> Result<()> {
        let path = shard_path(ns, shard);
        let key = crate::key::object_key(&path.namespace, &path.name);
        let primary = self.owners_now(&key).first().copied();
        if let Some(primary) = primary.filter(|p| *p != self.me()) {
            let request = PeerRequest::Index {
                ns: ns.clone(),
                shard,
                updates: updates
                    .iter()
                    .map(|(r, c)| (r.clone(), c.clone().map(serde_bytes::ByteBuf::from)))
                    .collect(),
            };
            match self.ask(primary, request).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::debug!(%ns, shard, %primary, error = %e, "index shard primary did not take the updates; updating it here")
                }
            }
        }
        self.update_shard(ns, shard, &updates).await
    }

    /// Brings one shard up to date with `records` (all of that shard).
    async fn update_shard(
        &self,
        ns: &Namespace,
        shard_no: u8,
        updates: &[(ObjectRecord, Option<Vec<u8>>)],
    ) -> Result<()> {
        let incarnation = match self.inner.namespaces.incarnation(self, ns).await {
            Ok(n) => n,
            // Removed since: its shards are gone, and stay so.
            Err(SpaceError::NoSuchNamespace(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let path = shard_path(ns, shard_no);
        let deadline = Instant::now() + UPDATE_PATIENCE;
        // The shard's primary holds its newest copy (every write of it went
        // through here): read it from the store first; only after a lost
        // compare-and-set ask the owners.
        let mut local = self.primary_of_shard(ns, shard_no);
        while Instant::now() < deadline {
            let (shard, version) = match local {
                true => self.read_shard_here(&path).await?,
                false => self.read_shard(ns, shard_no).await?,
            };
            local = false;
            let mut shard = shard.of_incarnation(incarnation);
            let now = now_ms();
            shard
                .entries
                .retain(|_, e| e.expires_ms.is_none_or(|t| t > now));
            shard.forget_old_removals(now);
            let mut changed = false;
            for (record, content) in updates {
                if record.ns_incarnation == incarnation {
                    changed |= shard.apply(record, content.clone());
                }
            }
            if !changed {
                return Ok(()); // newer updates got there first
            }
            let mut bytes = Vec::new();
            ciborium::into_writer(&shard, &mut bytes)
                .map_err(|e| SpaceError::Storage(e.to_string()))?;
            let options = PutOptions {
                type_tag: "p3/index".into(),
                if_version: Some(version),
                ..PutOptions::default()
            };
            match self.put_small(&path, bytes, options).await {
                Ok(_) => return Ok(()),
                Err(SpaceError::VersionConflict { .. }) => {
                    // Another node's update of this shard won; back off a
                    // random moment so that contenders spread out.
                    let pause = rand::random::<u64>() % 40 + 5;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(SpaceError::Unavailable(format!(
            "index shard {path} is too busy"
        )))
    }

    async fn small_value(&self, hash: BlobHash) -> Result<Vec<u8>> {
        let store = self.store().clone();
        blocking(move || read_small(&store, &hash)).await
    }

    /// Checks that the index knows the versions of `records` (which this node
    /// orders as primary) and updates it where not: a primary that died
    /// between acknowledging a write and updating the index leaves that to its
    /// successor. Each shard is read once per audit.
    pub(crate) async fn audit_index(&self, records: Vec<ObjectRecord>) {
        let now = now_ms();
        let mut shards: HashMap<(Namespace, u8), Option<Shard>> = HashMap::new();
        for record in records {
            if record.ns.as_str() == SYSTEM || record.expires_ms.is_some_and(|t| t <= now) {
                continue;
            }
            // A record of a removed namespace (the repair drops it later) is
            // not indexed into a namespace of the same name created since.
            let current = self.inner.namespaces.incarnation(self, &record.ns).await;
            if current.as_ref().ok() != Some(&record.ns_incarnation) {
                continue;
            }
            let at = (record.ns.clone(), shard_of(&record.name));
            if !shards.contains_key(&at) {
                let shard = self
                    .read_shard(&at.0, at.1)
                    .await
                    .ok()
                    .map(|(s, _)| s.of_incarnation(record.ns_incarnation));
                shards.insert(at.clone(), shard);
            }
            let Some(Some(shard)) = shards.get(&at) else {
                continue;
            };
            let name = record.name.as_str();
            let known = shard
                .entries
                .get(name)
                .map(|e| e.version)
                .max(shard.removed.get(name).copied());
            if known.is_none_or(|v| v < record.version) {
                tracing::info!(ns = %record.ns, %name, "index missed a write; updating it");
                self.index(record.clone());
            }
        }
    }

    /// The live objects of `ns` matching `query`, in name order.
    pub async fn search(&self, ns: &Namespace, query: &Query) -> Result<Vec<Entry>> {
        let incarnation = self.inner.namespaces.incarnation(self, ns).await?;
        let shards = join_all((0..SHARDS).map(|i| self.read_shard(ns, i))).await;
        let now = now_ms();
        let mut found = Vec::new();
        for shard in shards {
            let (shard, _) = shard?;
            found.extend(
                shard
                    .of_incarnation(incarnation)
                    .entries
                    .into_values()
                    .filter(|e| e.expires_ms.is_none_or(|t| t > now) && query.matches(&e.summary)),
            );
        }
        found.sort_by(|a, b| a.summary.name.cmp(&b.summary.name));
        Ok(found)
    }

    /// Takes one object of `ns` matching `query`, waiting up to `wait` for one.
    pub async fn take_match(&self, ns: &Namespace, query: &Query, wait: Duration) -> Result<Taken> {
        let deadline = Instant::now() + wait;
        // Index shards are objects too: a change to one of this namespace's
        // is exactly when a new match can appear. Subscribed before searching,
        // so a change in between wakes us.
        let system = Namespace::new(SYSTEM).unwrap_or_else(|_| unreachable!("valid constant"));
        let mut changes = self.watch(&system, &format!("index/{ns}/")).await?;
        loop {
            let mut candidates = self.search(ns, query).await?;
            use rand::seq::SliceRandom;
            candidates.shuffle(&mut rand::thread_rng());
            for entry in candidates {
                let path = ObjectPath {
                    namespace: ns.clone(),
                    name: ObjectName::new(&entry.summary.name)?,
                };
                match self.take(&path, None).await {
                    Ok(taken) => return Ok(taken),
                    // Taken by someone else since the search: next one.
                    Err(SpaceError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SpaceError::NotFound(format!(
                    "an object of {ns} matching the query"
                )));
            }
            let _ = tokio::time::timeout(left, changes.next()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_are_remembered_for_the_horizon_then_forgotten() {
        let mut shard = Shard::default();
        shard.removed.insert("steal/a".into(), 2);
        shard.removed_at.insert("steal/a".into(), 1_000);
        // A marker written before removal times were kept gets one now.
        shard.removed.insert("old".into(), 5);
        assert!(!shard.forget_old_removals(1_000 + REMOVED_HORIZON_MS - 1));
        assert_eq!(shard.removed.len(), 2);
        assert!(shard.forget_old_removals(1_000 + REMOVED_HORIZON_MS));
        assert_eq!(shard.removed.keys().collect::<Vec<_>>(), ["old"]);
        assert!(shard.forget_old_removals(3 * REMOVED_HORIZON_MS));
        assert!(shard.removed.is_empty() && shard.removed_at.is_empty());
    }

    #[test]
    fn a_shard_of_an_earlier_incarnation_counts_as_empty() {
        let mut old = Shard::default();
        old.removed.insert("a".into(), 7);
        old.entries.insert(
            "b".into(),
            Entry {
                version: 3,
                expires_ms: None,
                summary: Searchable {
                    name: "b".into(),
                    type_tag: String::new(),
                    size: 1,
                    meta: Default::default(),
                    content: None,
                },
            },
        );
        let same = old.clone().of_incarnation(0);
        assert_eq!(same, old, "the current incarnation's shard is kept");
        let new = old.of_incarnation(5);
        assert!(new.entries.is_empty() && new.removed.is_empty());
        assert_eq!(new.incarnation, 5);
    }
}
