//! Keeping the shards' rows current: an object's primary sends each write it
//! acknowledged to every owner of the object's shard, batching per owner what
//! gathers while a batch is in flight; owners merge what they receive; the
//! repair pass audits what the owners hold. See `docs/index.md`.

use std::collections::{BTreeMap, HashMap, HashSet};

use p3_dht::PeerId;
use serde_bytes::ByteBuf;

use super::{
    row::{Entry, Row},
    shard_key, shard_of, SHARDS,
};
use crate::{
    blob::BlobHash,
    error::{Result, SpaceError},
    name::Namespace,
    namespaces::SYSTEM,
    object::{now_ms, ObjectRecord},
    protocol::{PeerRequest, PeerResponse, ShardUpdates, MAX_INDEX_UPDATES, SYNC_BATCH},
    query::{Plan, CONTENT_MAX},
    read::read_small,
    space::ObjectSpace,
    store::Store,
    transfer::blocking,
};

/// Index updates waiting at this node (as primary of their objects), per
/// owner they go to, and which owners have a task sending them. Each owner
/// gets one request at a time carrying whatever gathered for it meanwhile,
/// whatever the shards: at high write rates one request carries many writes,
/// and a slow owner holds up only its own updates.
#[derive(Default)]
pub(crate) struct IndexQueue {
    pending: HashMap<PeerId, BTreeMap<(Namespace, u8, String), Update>>,
    draining: HashSet<PeerId>,
}

/// How long the first update for an owner waits for others to go with it:
/// how much later than its acknowledgement a write becomes searchable.
const INDEX_GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// A written record with its searchable content (its value, if small), as
/// the wire carries it.
type Update = (ObjectRecord, Option<ByteBuf>);

impl ObjectSpace {
    /// Brings the index up to date with `record` (called by the primary after
    /// acknowledging it; sent in the background). `value` is the object's
    /// value when the caller holds it whole, saving a read of the store.
    pub(crate) fn index(&self, record: ObjectRecord, value: Option<&[u8]>) {
        if record.ns.as_str() == SYSTEM {
            return;
        }
        let shard = shard_of(&record.name);
        let owners = self.owners_now(&shard_key(&record.ns, shard));
        let key = (record.ns.clone(), shard, record.name.to_string());
        // Read once here, for every owner it goes to.
        let update = self.with_content(record, value);
        let mut start = Vec::new();
        {
            let mut queue = self
                .inner
                .index_queue
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for owner in owners {
                let pending = queue.pending.entry(owner).or_default();
                match pending.get(&key) {
                    Some((have, _)) if have.order() >= update.0.order() => {}
                    _ => {
                        pending.insert(key.clone(), update.clone());
                    }
                }
                if queue.draining.insert(owner) {
                    start.push(owner);
                }
            }
        }
        for owner in start {
            let space = self.clone();
            tokio::spawn(async move { space.drain_index(owner).await });
        }
    }

    /// Sends an owner its pending updates, all that have gathered at a time
    /// (up to a request's worth), until none are left.
    async fn drain_index(&self, owner: PeerId) {
        // Wait for the rows of the next moments, so that a busy primary
        // sends each owner one request (one merge, one log flush) for many
        // writes rather than one per write.
        tokio::time::sleep(INDEX_GATHER).await;
        loop {
            let batch: Vec<Update> = {
                let mut queue = self
                    .inner
                    .index_queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let pending = queue.pending.entry(owner).or_default();
                if pending.is_empty() {
                    queue.pending.remove(&owner);
                    queue.draining.remove(&owner);
                    return;
                }
                let mut batch = Vec::new();
                while batch.len() < MAX_INDEX_UPDATES {
                    let Some((_, update)) = pending.pop_first() else {
                        break;
                    };
                    batch.push(update);
                }
                batch
            };
            self.send_rows(owner, batch).await;
        }
    }

    /// `record` with its searchable content: `value` if it is the record's
    /// (a hash costs less than the store's two reads), else read from this
    /// node's store (the primary holds every value it acknowledged). At most
    /// [`CONTENT_MAX`] bytes: read in place.
    fn with_content(&self, record: ObjectRecord, value: Option<&[u8]>) -> Update {
        let content = match record.blob {
            Some(hash) if record.size <= CONTENT_MAX => match value {
                Some(value) if BlobHash::of(value) == hash => Some(ByteBuf::from(value.to_vec())),
                _ => read_small(self.store(), &hash).ok().map(ByteBuf::from),
            },
            _ => None,
        };
        (record, content)
    }

    /// Has `owner` merge `updates` into its rows, grouped by shard; a failure
    /// is left to the audit of the next repair pass.
    async fn send_rows(&self, owner: PeerId, updates: Vec<Update>) {
        let count = updates.len();
        let mut shards: BTreeMap<(Namespace, u8), Vec<Update>> = BTreeMap::new();
        for update in updates {
            let at = (update.0.ns.clone(), shard_of(&update.0.name));
            shards.entry(at).or_default().push(update);
        }
        let shards = shards
            .into_iter()
            .map(|((ns, shard), updates)| ShardUpdates { ns, shard, updates })
            .collect();
        if let Err(e) = self.ask(owner, PeerRequest::Index(shards)).await {
            tracing::debug!(%owner, count, error = %e, "index owner did not take updates; the audit will");
        }
    }

    /// Merges updates another node (or this one) sends as an owner of their
    /// shards. Updates of shards this node does not keep (its map is ahead
    /// of the sender's, or behind) are dropped: the audit sends them where
    /// they belong.
    pub(crate) async fn index_from_peer(&self, shards: Vec<ShardUpdates>) -> Result<()> {
        let total: usize = shards.iter().map(|s| s.updates.len()).sum();
        if total > MAX_INDEX_UPDATES {
            return Err(SpaceError::Invalid(format!(
                "an index update holds at most {MAX_INDEX_UPDATES} records"
            )));
        }
        let now = now_ms();
        let mut merges = Vec::new();
        for ShardUpdates { ns, shard, updates } in shards {
            let bad = shard >= SHARDS
                || ns.as_str() == SYSTEM
                || updates.iter().any(|(record, content)| {
                    record.ns != ns
                        || shard_of(&record.name) != shard
                        || content
                            .as_ref()
                            .is_some_and(|c| c.len() as u64 > CONTENT_MAX)
                });
            if bad {
                return Err(SpaceError::Invalid(format!(
                    "an index update for {ns} shard {shard} names a shard that does not exist, holds a record of another shard, or content over {CONTENT_MAX} bytes"
                )));
            }
            if let Err(e) = self.check_shard_owner(&ns, shard) {
                tracing::debug!(%ns, shard, error = %e, "index updates for a shard not kept here");
                continue;
            }
            let rows: Vec<(String, Row)> = updates
                .into_iter()
                .map(|(record, content)| {
                    let row = Row::of(&record, content.map(ByteBuf::into_vec), now);
                    (record.name.to_string(), row)
                })
                .collect();
            merges.push((ns, shard, rows));
        }
        let store = self.store().clone();
        blocking(move || {
            for (ns, shard, rows) in merges {
                store.merge_index(&ns, shard, rows)?;
            }
            Ok(())
        })
        .await
    }

    /// Refuses requests for a shard this node does not keep.
    pub(crate) fn check_shard_owner(&self, ns: &Namespace, shard: u8) -> Result<()> {
        if shard >= SHARDS {
            return Err(SpaceError::Invalid(format!(
                "index shards are numbered below {SHARDS}"
            )));
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

    async fn audit_owner(
        &self,
        owner: PeerId,
        ns: &Namespace,
        shard: u8,
        records: &[ObjectRecord],
    ) {
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
        let missed: Vec<Update> = want
            .iter()
            .filter_map(|&i| records.get(i as usize).cloned())
            .map(|record| self.with_content(record, None))
            .collect();
        if missed.is_empty() {
            return;
        }
        tracing::info!(%owner, %ns, shard, missed = missed.len(), "index owner missed writes; sending them");
        self.send_rows(owner, missed).await;
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
            // Few enough candidates to check one by one: far fewer rows read.
            if let Some(names) = candidates(&store, &ns, shard, &query.plan())? {
                return answer_from(&store, &ns, shard, names, after, |row| {
                    row.found(incarnation, now, &query)
                });
            }
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
                            return Ok(PeerResponse::Found {
                                entries,
                                next: after,
                            });
                        }
                    }
                }
                if end {
                    return Ok(PeerResponse::Found {
                        entries,
                        next: None,
                    });
                }
            }
            Ok(PeerResponse::Found {
                entries,
                next: after,
            })
        })
        .await
    }
}

/// The names of the rows `plan` reaches in one shard, if it reaches no
/// more than a request would scan; `None` for a scan of every row.
fn candidates(
    store: &Store,
    ns: &Namespace,
    shard: u8,
    plan: &Plan,
) -> Result<Option<Vec<String>>> {
    let limit = SCAN_PAGE * SCAN_PAGES;
    match plan {
        Plan::Scan => Ok(None),
        Plan::NamePrefix(prefix) => store.names_with_prefix(ns, shard, prefix, limit),
        Plan::Terms(terms) => store.names_with_terms(ns, shard, terms, limit),
        Plan::Range { key, low, high } => {
            store.names_in_range(ns, shard, key, (*low, *high), limit)
        }
    }
}

/// A page of the entries `found` finds among the rows of `names` after
/// `after`, in name order.
fn answer_from(
    store: &Store,
    ns: &Namespace,
    shard: u8,
    mut names: Vec<String>,
    after: Option<String>,
    found: impl Fn(&Row) -> Option<&Entry>,
) -> Result<PeerResponse> {
    names.sort_unstable();
    names.dedup();
    let from = after.map_or(0, |a| names.partition_point(|n| *n <= a));
    let mut entries = Vec::new();
    for page in names[from..].chunks(SCAN_PAGE) {
        let rows = store.index_held(ns, shard, page)?;
        for (name, row) in page.iter().zip(rows) {
            let Some(entry) = row.as_ref().and_then(&found) else {
                continue;
            };
            entries.push(entry.clone());
            if entries.len() == crate::protocol::LIST_BATCH {
                return Ok(PeerResponse::Found {
                    entries,
                    next: Some(name.clone()),
                });
            }
        }
    }
    Ok(PeerResponse::Found {
        entries,
        next: None,
    })
}

/// Rows read from the store at a time by a search.
const SCAN_PAGE: usize = 512;
/// Pages of rows one search request scans at most.
const SCAN_PAGES: usize = 16;
