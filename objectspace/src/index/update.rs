//! Keeping the shards' rows current: an object's primary sends each write it
//! acknowledged to every owner of the object's shard, batching what gathers
//! while a batch is in flight; owners merge what they receive; the repair
//! pass audits what the owners hold. See `docs/index.md`.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::future::join_all;
use p3_dht::PeerId;
use serde_bytes::ByteBuf;

use super::{row::Row, shard_key, shard_of, SHARDS};
use crate::{
    error::{Result, SpaceError},
    name::Namespace,
    namespaces::SYSTEM,
    object::{now_ms, ObjectRecord},
    protocol::{PeerRequest, PeerResponse, SYNC_BATCH},
    query::CONTENT_MAX,
    read::read_small,
    space::ObjectSpace,
    transfer::blocking,
};

/// Index updates waiting at this node (as primary of their objects), per
/// shard, and which shards have a task sending them.
#[derive(Default)]
pub(crate) struct IndexQueue {
    pending: HashMap<(Namespace, u8), BTreeMap<String, ObjectRecord>>,
    draining: HashSet<(Namespace, u8)>,
}

/// Most updates one [`PeerRequest::Index`] may carry.
pub(crate) const MAX_INDEX_UPDATES: usize = 1024;

/// A batch of updates as the wire carries it.
type Updates = Vec<(ObjectRecord, Option<ByteBuf>)>;

impl ObjectSpace {
    /// Brings the index up to date with `record` (called by the primary after
    /// acknowledging it; sent in the background).
    pub(crate) fn index(&self, record: ObjectRecord) {
        if record.ns.as_str() == SYSTEM {
            return;
        }
        let at = (record.ns.clone(), shard_of(&record.name));
        let start = {
            let mut queue = self
                .inner
                .index_queue
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let pending = queue.pending.entry(at.clone()).or_default();
            match pending.get(record.name.as_str()) {
                Some(have) if have.order() >= record.order() => {}
                _ => {
                    pending.insert(record.name.to_string(), record);
                }
            }
            queue.draining.insert(at.clone())
        };
        if start {
            let space = self.clone();
            tokio::spawn(async move { space.drain_index(at).await });
        }
    }

    /// Sends a shard's pending updates, all that have gathered at a time,
    /// until none are left.
    async fn drain_index(&self, (ns, shard): (Namespace, u8)) {
        loop {
            let batch: Vec<ObjectRecord> = {
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
            for chunk in batch.chunks(MAX_INDEX_UPDATES) {
                let updates = self.with_content(chunk.to_vec()).await;
                let owners = self.owners_now(&shard_key(&ns, shard));
                let sends = owners.iter().map(|&owner| self.send_rows(owner, &ns, shard, updates.clone()));
                join_all(sends).await;
            }
        }
    }

    /// Records with their searchable content, read from this node's store
    /// (the primary holds every value it acknowledged).
    async fn with_content(&self, records: Vec<ObjectRecord>) -> Updates {
        let store = self.store().clone();
        let read = blocking(move || {
            Ok(records
                .into_iter()
                .map(|record| {
                    let content = match record.blob {
                        Some(hash) if record.size <= CONTENT_MAX => {
                            read_small(&store, &hash).ok().map(ByteBuf::from)
                        }
                        _ => None,
                    };
                    (record, content)
                })
                .collect())
        });
        read.await.unwrap_or_default()
    }

    /// Has `owner` merge `updates` into its rows; a failure is left to the
    /// audit of the next repair pass.
    async fn send_rows(&self, owner: PeerId, ns: &Namespace, shard: u8, updates: Updates) {
        let request = PeerRequest::Index {
            ns: ns.clone(),
            shard,
            updates,
        };
        if let Err(e) = self.ask(owner, request).await {
            tracing::debug!(%ns, shard, %owner, error = %e, "index owner did not take updates; the audit will");
        }
    }

    /// Merges updates another node (or this one) sends as an owner of their
    /// shard.
    pub(crate) async fn index_from_peer(&self, ns: Namespace, shard: u8, updates: Updates) -> Result<()> {
        if updates.len() > MAX_INDEX_UPDATES || shard >= SHARDS || ns.as_str() == SYSTEM {
            return Err(SpaceError::Invalid(format!(
                "an index update holds at most {MAX_INDEX_UPDATES} records of one shard below {SHARDS}"
            )));
        }
        let bad = updates.iter().any(|(record, content)| {
            record.ns != ns
                || shard_of(&record.name) != shard
                || content.as_ref().is_some_and(|c| c.len() as u64 > CONTENT_MAX)
        });
        if bad {
            return Err(SpaceError::Invalid(format!(
                "an index update for {ns} shard {shard} holds a record of another shard, or content over {CONTENT_MAX} bytes"
            )));
        }
        self.check_shard_owner(&ns, shard)?;
        let now = now_ms();
        let rows = updates
            .into_iter()
            .map(|(record, content)| {
                let row = Row::of(&record, content.map(ByteBuf::into_vec), now);
                (record.name.to_string(), row)
            })
            .collect();
        let store = self.store().clone();
        blocking(move || store.merge_index(&ns, shard, rows)).await?;
        Ok(())
    }

    /// Refuses requests for a shard this node does not keep.
    pub(crate) fn check_shard_owner(&self, ns: &Namespace, shard: u8) -> Result<()> {
        if shard >= SHARDS {
            return Err(SpaceError::Invalid(format!("index shards are numbered below {SHARDS}")));
        }
        if !self.owners_now(&shard_key(ns, shard)).contains(&self.me()) {
            return Err(SpaceError::Unavailable(format!(
                "not an owner of index shard {shard} of {ns}"
            )));
        }
        Ok(())
    }

    /// The audit's question answered by an owner: which of `held` its rows
    /// lack or hold older.
    pub(crate) async fn index_want(
        &self,
        ns: Namespace,
        shard: u8,
        held: Vec<(crate::name::ObjectName, u64, crate::object::Order)>,
    ) -> Result<PeerResponse> {
        if held.len() > SYNC_BATCH {
            return Err(SpaceError::Invalid(format!(
                "an index audit holds at most {SYNC_BATCH} names"
            )));
        }
        self.check_shard_owner(&ns, shard)?;
        let names: Vec<String> = held.iter().map(|(n, _, _)| n.to_string()).collect();
        let store = self.store().clone();
        let rows = blocking(move || store.index_held(&ns, shard, &names)).await?;
        let want = held
            .iter()
            .zip(rows)
            .enumerate()
            .filter(|(_, ((_, incarnation, order), row))| {
                row.as_ref()
                    .is_none_or(|r| (r.incarnation, r.order) < (*incarnation, *order))
            })
            .map(|(i, _)| i as u32)
            .collect();
        Ok(PeerResponse::IndexWant(want))
    }

    /// Checks that every owner of their shards holds `records` (which this
    /// node orders as primary) and sends each what it lacks: a primary that
    /// died between acknowledging a write and indexing it, or an owner that
    /// missed an update or joined since, is caught up here.
    pub(crate) async fn audit_index(&self, records: Vec<ObjectRecord>) {
        let now = now_ms();
        let mut shards: HashMap<(Namespace, u8), Vec<ObjectRecord>> = HashMap::new();
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
            shards.entry(at).or_default().push(record);
        }
        for ((ns, shard), records) in shards {
            for owner in self.owners_now(&shard_key(&ns, shard)) {
                for page in records.chunks(SYNC_BATCH) {
                    self.audit_owner(owner, &ns, shard, page).await;
                }
            }
        }
    }

    async fn audit_owner(&self, owner: PeerId, ns: &Namespace, shard: u8, records: &[ObjectRecord]) {
        let request = PeerRequest::IndexHave {
            ns: ns.clone(),
            shard,
            held: records
                .iter()
                .map(|r| (r.name.clone(), r.ns_incarnation, r.order()))
                .collect(),
        };
        let want = match self.ask(owner, request).await {
            Ok(PeerResponse::IndexWant(want)) => want,
            Ok(other) => {
                tracing::debug!(%owner, ?other, "unexpected answer to an index audit");
                return;
            }
            Err(e) => {
                tracing::debug!(%owner, %ns, shard, error = %e, "index audit failed");
                return;
            }
        };
        let missed: Vec<ObjectRecord> = want
            .iter()
            .filter_map(|&i| records.get(i as usize).cloned())
            .collect();
        if missed.is_empty() {
            return;
        }
        tracing::info!(%owner, %ns, shard, missed = missed.len(), "index owner missed writes; sending them");
        let updates = self.with_content(missed).await;
        self.send_rows(owner, ns, shard, updates).await;
    }

    /// Answers a search of one shard held here: a page of matches.
    pub(crate) async fn search_here(
        &self,
        ns: Namespace,
        shard: u8,
        incarnation: u64,
        query: &str,
        after: Option<String>,
    ) -> Result<PeerResponse> {
        let query = crate::query::Query::parse(query)?;
        self.check_shard_owner(&ns, shard)?;
        let store = self.store().clone();
        blocking(move || {
            let now = now_ms();
            let mut entries = Vec::new();
            let mut after = after;
            // Scans a bounded number of rows per request, and answers at
            // most a page of matches.
            for _ in 0..SCAN_PAGES {
                let (rows, end) = store.index_rows(&ns, shard, after.as_deref(), SCAN_PAGE)?;
                for (name, row) in &rows {
                    after = Some(name.clone());
                    if let Some(entry) = row.found(incarnation, now, &query) {
                        entries.push(entry.clone());
                        if entries.len() == crate::protocol::LIST_BATCH {
                            return Ok(PeerResponse::Found { entries, next: after });
                        }
                    }
                }
                if end {
                    return Ok(PeerResponse::Found { entries, next: None });
                }
            }
            Ok(PeerResponse::Found { entries, next: after })
        })
        .await
    }
}

/// Rows read from the store at a time by a search.
const SCAN_PAGE: usize = 512;
/// Pages of rows one search request scans at most.
const SCAN_PAGES: usize = 16;
