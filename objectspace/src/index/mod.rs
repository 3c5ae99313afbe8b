//! Search through per-namespace index shards.
//!
//! Each namespace has [`SHARDS`] index shards; an object belongs to the shard
//! `blake3(name)[0] % SHARDS`. A shard is kept by the owners of its placement
//! key (the key of `p3.system/index/NAMESPACE/N`) as rows in their stores, one
//! per object name, merged by version ([`row`]), so updates from any node in
//! any order need no compare-and-set. The primary of an object sends each
//! acknowledged write to every owner of its shard ([`update`]); a search asks
//! every owner of each shard, evaluating the query there, and merges their
//! answers — [`SHARDS`] × R requests whatever the size of the network. The
//! design, its guarantees and why it is safe: `docs/index.md`.
//!
//! A template take searches, then takes a random match (exactly one taker gets
//! each object); with nothing to take it watches the namespace and takes what
//! a write event shows matching.

use std::time::{Duration, Instant};

use futures::future::join_all;

pub mod row;
mod update;

pub use row::Entry;
pub(crate) use update::IndexQueue;

use crate::{
    error::{Result, SpaceError},
    event::EventKind,
    name::{Namespace, ObjectName, ObjectPath},
    namespaces::SYSTEM,
    protocol::{PeerRequest, PeerResponse},
    query::{Query, Searchable, CONTENT_MAX},
    space::ObjectSpace,
    take::Taken,
};

/// Index shards per namespace: the number of shards a search asks.
pub const SHARDS: u8 = 16;
/// How long a waiting template take goes at most without searching again: a
/// write acknowledged before its watch started may be indexed after its
/// first search.
const RESEARCH_MAX: Duration = Duration::from_secs(2);
/// The first of those pauses; each one doubles.
const RESEARCH_FIRST: Duration = Duration::from_millis(50);

/// The shard an object name belongs to.
pub fn shard_of(name: &ObjectName) -> u8 {
    blake3::hash(name.as_str().as_bytes()).as_bytes()[0] % SHARDS
}

/// The placement key of shard `shard` of `ns`: its owners keep its rows.
pub(crate) fn shard_key(ns: &Namespace, shard: u8) -> [u8; 32] {
    let system = Namespace::new(SYSTEM).unwrap_or_else(|_| unreachable!("valid constant"));
    let name = ObjectName::new(&format!("index/{ns}/{shard}"))
        .unwrap_or_else(|_| unreachable!("namespaces make valid names"));
    crate::key::object_key(&system, &name)
}

impl ObjectSpace {
    /// The live objects of `ns` matching `query`, in name order.
    pub async fn search(&self, ns: &Namespace, query: &Query) -> Result<Vec<Entry>> {
        crate::metrics::observe("search", async {
            let incarnation = self.inner.namespaces.incarnation(self, ns).await?;
            self.may_read(ns).await?;
            let text = query.text();
            let shards = (0..SHARDS).map(|shard| self.search_shard(ns, shard, incarnation, text));
            let mut found = Vec::new();
            for shard in join_all(shards).await {
                found.extend(shard?);
            }
            found.sort_by(|a, b| a.summary.name.cmp(&b.summary.name));
            Ok(found)
        })
        .await
    }

    /// Asks every owner of one shard, merging their answers; an error only if
    /// none answers.
    async fn search_shard(
        &self,
        ns: &Namespace,
        shard: u8,
        incarnation: u64,
        query: &str,
    ) -> Result<Vec<Entry>> {
        let owners = self.owners_now(&shard_key(ns, shard));
        let asks = owners
            .iter()
            .map(|&owner| self.search_owner(owner, ns, shard, incarnation, query));
        let mut answered = Vec::new();
        let mut failures = Vec::new();
        for (owner, answer) in owners.iter().zip(join_all(asks).await) {
            match answer {
                Ok(entries) => answered.extend(entries),
                Err(e @ SpaceError::Invalid(_)) => return Err(e),
                Err(e) => failures.push(format!("{owner}: {e}")),
            }
        }
        if failures.len() == owners.len() {
            return Err(SpaceError::Unavailable(format!(
                "no owner of index shard {shard} of {ns} answered: {}",
                failures.join("; ")
            )));
        }
        Ok(row::merge_found(answered))
    }

    /// Every page of one owner's matches in one shard.
    async fn search_owner(
        &self,
        owner: p3_dht::PeerId,
        ns: &Namespace,
        shard: u8,
        incarnation: u64,
        query: &str,
    ) -> Result<Vec<Entry>> {
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let request = PeerRequest::Search {
                ns: ns.clone(),
                shard,
                incarnation,
                query: query.to_owned(),
                after: after.clone(),
            };
            match self.ask(owner, request).await? {
                PeerResponse::Found { entries, next } => {
                    found.extend(entries);
                    match next {
                        // Pages must move on, or a faulty owner could keep
                        // this loop going.
                        Some(name) if after.as_ref().is_none_or(|a| name > *a) => {
                            after = Some(name)
                        }
                        Some(_) => {
                            return Err(SpaceError::Unavailable(format!(
                                "{owner} answered a search with a page that does not move on"
                            )))
                        }
                        None => return Ok(found),
                    }
                }
                other => {
                    return Err(SpaceError::Unavailable(format!(
                        "unexpected answer to a search: {other:?}"
                    )))
                }
            }
        }
    }

    /// Takes one object of `ns` matching `query`, waiting up to `wait` for one.
    pub async fn take_match(&self, ns: &Namespace, query: &Query, wait: Duration) -> Result<Taken> {
        crate::metrics::observe("take", async {
        let deadline = Instant::now() + wait;
        // Subscribed before searching, so a write in between is seen.
        let mut changes = self.watch(ns, "").await?;
        let mut pause = RESEARCH_FIRST;
        loop {
            if let Some(taken) = self.take_any(ns, query).await? {
                return Ok(taken);
            }
            if pause == RESEARCH_FIRST {
                tracing::info!(%ns, query = query.text(), "template take waiting for a matching write");
            }
            // Wait for a matching write, and take it at once; search again
            // after a while in any case.
            let research = Instant::now() + pause;
            pause = (pause * 2).min(RESEARCH_MAX);
            loop {
                let now = Instant::now();
                if now >= deadline {
                    return Err(SpaceError::NotFound(format!(
                        "an object of {ns} matching the query"
                    )));
                }
                let until = research.min(deadline);
                let Ok(event) = tokio::time::timeout(until - now, changes.next()).await else {
                    break; // time to search again
                };
                let event = event?;
                if event.kind != EventKind::Put {
                    continue;
                }
                let path = ObjectPath {
                    namespace: ns.clone(),
                    name: event.name.clone(),
                };
                if !self.event_matches(&path, &event, query).await {
                    continue;
                }
                match self.take(&path, None).await {
                    Ok(taken) => return Ok(taken),
                    Err(SpaceError::NotFound(_)) => {} // someone else's now
                    Err(e) => return Err(e),
                }
            }
        }
    })
        .await
    }

    /// Takes a random match of a search, if any is left to take.
    async fn take_any(&self, ns: &Namespace, query: &Query) -> Result<Option<Taken>> {
        use rand::seq::SliceRandom;
        let mut candidates = self.search(ns, query).await?;
        candidates.shuffle(&mut rand::thread_rng());
        for entry in candidates {
            let path = ObjectPath {
                namespace: ns.clone(),
                name: ObjectName::new(&entry.summary.name)?,
            };
            match self.take(&path, None).await {
                Ok(taken) => return Ok(Some(taken)),
                // Taken by someone else since the search: next one.
                Err(SpaceError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Whether the version a write event announces matches `query`; reads
    /// the value only for a query about contents.
    async fn event_matches(
        &self,
        path: &ObjectPath,
        event: &crate::event::Event,
        query: &Query,
    ) -> bool {
        let mut summary = Searchable {
            name: event.name.to_string(),
            type_tag: event.type_tag.clone(),
            size: event.size,
            meta: event.meta.clone(),
            content: None,
        };
        if query.uses_content() && event.size <= CONTENT_MAX {
            match self.read_all(path).await {
                Ok((record, bytes)) if record.version == event.version => {
                    summary.content = Some(bytes)
                }
                _ => return false, // changed since: the next event or search sees it
            }
        }
        query.matches(&summary)
    }
}
