//! The client side of reads: asking a key's owners for the newest version,
//! streaming values from wherever they are held, and listing a namespace.

use std::{collections::BTreeMap, time::Duration};

use futures::{future::join_all, stream::FuturesUnordered, StreamExt};
use p3_dht::PeerId;
use tokio::time::timeout;

use crate::{
    blob::BlobHash,
    error::{Result, SpaceError},
    key::blob_provider_key,
    name::{Namespace, ObjectName, ObjectPath},
    object::{now_ms, ObjectRecord, Replica, Stat},
    protocol::{PeerRequest, PeerResponse, LIST_BATCH},
    space::ObjectSpace,
    store::Store,
    transfer::{self, blocking, ChunkSink},
    writers::Writers,
};

/// What a read found: the newest record and where its value can come from.
pub struct Found {
    /// The newest live record among the owners that answered.
    pub record: ObjectRecord,
    /// The value, if small enough to come with the answer.
    pub inline: Option<Vec<u8>>,
    /// Owners that hold this version.
    pub holders: Vec<PeerId>,
    /// Every owner asked and the version it holds.
    pub replicas: Vec<Asked>,
}

/// An owner a read asked, and what it holds: a [`Replica`] once shown
/// (its id becomes text only then: encoding it cost a get more than its
/// hash check).
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    /// The owner.
    pub peer: PeerId,
    /// The version it holds (0: none).
    pub version: u64,
    /// Whether it is the primary.
    pub primary: bool,
}

impl From<&Asked> for Replica {
    fn from(asked: &Asked) -> Self {
        Replica {
            peer: asked.peer.to_string(),
            version: asked.version,
            primary: asked.primary,
        }
    }
}

impl ObjectSpace {
    /// The newest live record of `path`: from its primary alone when it can
    /// answer as primary (one request), else from every owner.
    pub async fn find(&self, path: &ObjectPath, inline: bool) -> Result<Found> {
        crate::metrics::observe("get", async {
        let writers = self.readable(&path.namespace).await?;
        let found = match self.find_at_primary(path, inline).await {
            Ok(found) => found,
            Err(e @ SpaceError::NotFound(_)) => return Err(e),
            Err(e) => {
                tracing::debug!(%path, error = %e, "the primary did not answer as primary; asking every owner");
                self.find_everywhere(path, inline).await?
            }
        };
        check_signed(writers.as_ref(), &found.record)?;
        Ok(found)
    })
        .await
    }

    /// Asks `path`'s primary, which answers only while it is primary in its
    /// own map (see `service::read_as_primary`).
    async fn find_at_primary(&self, path: &ObjectPath, inline: bool) -> Result<Found> {
        let (incarnation, owners) = self.locate(path).await?;
        let Some(&primary) = owners.first() else {
            return Err(SpaceError::Unavailable(format!("{path} has no owners yet")));
        };
        let request = PeerRequest::Read {
            ns: path.namespace.clone(),
            name: path.name.clone(),
            inline,
        };
        // Boxed: the request may be answered here, by code that reads.
        match Box::pin(self.ask(primary, request)).await? {
            PeerResponse::Head { record, inline } => {
                // A copy from a removed namespace of the same name is no copy.
                let live = record
                    .filter(|r| r.ns_incarnation == incarnation && r.is_live(now_ms()))
                    .map(|r| *r);
                let Some(record) = live else {
                    return Err(SpaceError::NotFound(path.to_string()));
                };
                Ok(Found {
                    replicas: vec![Asked {
                        peer: primary,
                        version: record.version,
                        primary: true,
                    }],
                    record,
                    inline,
                    holders: vec![primary],
                })
            }
            PeerResponse::NotPrimary(other) => Err(SpaceError::Unavailable(format!(
                "{primary} says {other} is the primary of {path}"
            ))),
            other => Err(SpaceError::Unavailable(format!(
                "unexpected answer to a read: {other:?}"
            ))),
        }
    }

    /// Asks every owner of `path` for its record; the newest live one wins.
    /// Owners holding older versions are brought up to date in the background.
    pub async fn find_everywhere(&self, path: &ObjectPath, inline: bool) -> Result<Found> {
        let (incarnation, owners) = self.locate(path).await?;
        let asks = owners.iter().map(|&peer| {
            let request = PeerRequest::Head {
                ns: path.namespace.clone(),
                name: path.name.clone(),
                inline,
                epoch: 0,
            };
            async move { (peer, self.ask(peer, request).await) }
        });
        let mut pending: FuturesUnordered<_> = asks.collect();
        // A majority of owners overlaps every majority that acknowledged a
        // write, so their newest version is the newest acknowledged one; the
        // others get a moment more, not the full deadline of a hung peer.
        let majority = owners.len() / 2 + 1;
        let mut stragglers_until: Option<tokio::time::Instant> = None;
        let mut answers = Vec::new();
        let mut failures = Vec::new();
        loop {
            let next = match stragglers_until {
                Some(until) => match tokio::time::timeout_at(until, pending.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => pending.next().await,
            };
            let Some((peer, answer)) = next else { break };
            match answer {
                Ok(PeerResponse::Head { record, inline }) => {
                    // A copy from a removed namespace of the same name (its node
                    // missed the removal) is no copy at all.
                    let record = record.filter(|r| r.ns_incarnation == incarnation);
                    answers.push((peer, record, inline))
                }
                Ok(_) => failures.push(format!("{peer}: unexpected answer")),
                Err(e) => failures.push(format!("{peer}: {e}")),
            }
            if answers.len() >= majority && stragglers_until.is_none() {
                stragglers_until = Some(tokio::time::Instant::now() + STRAGGLER_GRACE);
            }
        }
        if answers.is_empty() {
            return Err(SpaceError::Unavailable(format!(
                "no owner of {path} answered: {}",
                failures.join("; ")
            )));
        }
        let newest = answers
            .iter()
            .filter_map(|(_, r, _)| r.as_deref())
            .max_by_key(|r| r.order())
            .cloned();
        let primary = owners.first().copied();
        let replicas = answers
            .iter()
            .map(|(peer, r, _)| Asked {
                peer: *peer,
                version: r.as_ref().map_or(0, |r| r.version),
                primary: Some(*peer) == primary,
            })
            .collect();
        let Some(newest) = newest.filter(|r| r.is_live(now_ms())) else {
            return Err(SpaceError::NotFound(path.to_string()));
        };
        let mut holders = Vec::new();
        let mut value = None;
        let mut stale = Vec::new();
        for (peer, record, inline) in answers {
            if record.as_ref().is_some_and(|r| r.order() == newest.order()) {
                holders.push(peer);
                value = value.or(inline);
            } else {
                stale.push(peer);
            }
        }
        if !stale.is_empty() {
            self.repair_owners(newest.clone(), stale, holders.clone());
        }
        Ok(Found {
            record: newest,
            inline: value,
            holders,
            replicas,
        })
    }

    /// Sends `record` to owners that hold an older version, without waiting.
    fn repair_owners(&self, record: ObjectRecord, stale: Vec<PeerId>, holders: Vec<PeerId>) {
        let space = self.clone();
        tokio::spawn(async move {
            let sources: Vec<String> = holders.iter().map(ToString::to_string).collect();
            for peer in stale {
                let request = PeerRequest::Replicate {
                    record: record.clone(),
                    inline: None,
                    sources: sources.clone(),
                    ordered: false,
                };
                if let Err(e) = space.ask(peer, request).await {
                    tracing::debug!(%peer, error = %e, "read repair failed");
                }
            }
        });
    }

    /// Metadata of `path` with the version every owner holds.
    pub async fn stat(&self, path: &ObjectPath) -> Result<Stat> {
        crate::metrics::observe("stat", async {
            let writers = self.readable(&path.namespace).await?;
            let found = self.find_everywhere(path, false).await?;
            check_signed(writers.as_ref(), &found.record)?;
            let mut stat = found.record.stat();
            stat.replicas = found.replicas.iter().map(Replica::from).collect();
            Ok(stat)
        })
        .await
    }

    /// This node's own live copy of `path`, without asking anyone.
    pub async fn stat_local(&self, path: &ObjectPath) -> Result<Stat> {
        let store = self.inner.store.clone();
        let (ns, name) = (path.namespace.clone(), path.name.clone());
        let record = blocking(move || store.record(&ns, &name)).await?;
        let record = record
            .filter(|r| r.is_live(now_ms()))
            .ok_or_else(|| SpaceError::NotFound(format!("{path} (on this node)")))?;
        let mut stat = record.stat();
        stat.replicas = vec![Replica {
            peer: self.me_text().to_owned(),
            version: record.version,
            primary: false,
        }];
        Ok(stat)
    }

    /// Sends the value of a found object to `sink`, chunk by chunk, from the
    /// local store, the answer itself, or other holders (owners first, then
    /// nodes that cached it); a fetched blob stays in the local cache.
    pub async fn stream_value(&self, found: &Found, sink: &ChunkSink) -> Result<()> {
        let streamed = self.stream_from_holders(found, sink).await;
        if streamed.is_ok() {
            crate::metrics::bytes_out(found.record.size);
        }
        streamed
    }

    /// The value's bytes when the answer that found it carried them (a
    /// small value; none for a removal), checked against the record: what
    /// [`Self::stream_value`] sends, at hand without a task to send it.
    /// `None` when they must be streamed.
    pub fn value_at_hand<'a>(&self, found: &'a Found) -> Result<Option<&'a [u8]>> {
        let Some(hash) = found.record.blob else {
            return Ok(Some(&[]));
        };
        let Some(bytes) = &found.inline else {
            return Ok(None);
        };
        if BlobHash::of(bytes) != hash {
            return Err(SpaceError::Corrupt(format!(
                "inline value of {hash} does not match"
            )));
        }
        Ok(Some(bytes))
    }

    async fn stream_from_holders(&self, found: &Found, sink: &ChunkSink) -> Result<()> {
        let gone = || SpaceError::Unavailable("the reader went away".into());
        if let Some(bytes) = self.value_at_hand(found)? {
            if !bytes.is_empty() {
                sink.send(bytes.to_vec()).await.map_err(|_| gone())?;
            }
            return Ok(());
        }
        let Some(hash) = found.record.blob else {
            return Ok(());
        };
        let store = self.inner.store.clone();
        let _pin = store.pin(hash);
        let lookup = store.clone();
        if let Some(manifest) = blocking(move || lookup.manifest(&hash)).await? {
            store.touch(&hash);
            for &chunk in manifest.chunks() {
                let reader = store.clone();
                let bytes = blocking(move || reader.chunk(&chunk))
                    .await?
                    .ok_or_else(|| SpaceError::Storage(format!("chunk {chunk} is missing")))?;
                sink.send(bytes).await.map_err(|_| gone())?;
            }
            return Ok(());
        }
        let mut sources: Vec<PeerId> = found.holders.clone();
        sources.retain(|p| *p != self.me());
        // Nodes that cached the blob share the load of popular values.
        if let Ok(cachers) = timeout(
            Duration::from_secs(5),
            self.inner.node.providers(blob_provider_key(&hash.0)),
        )
        .await
        .unwrap_or(Ok(Default::default()))
        {
            let mut extra: Vec<PeerId> = cachers
                .into_iter()
                .filter(|p| *p != self.me() && !sources.contains(p))
                .collect();
            use rand::seq::SliceRandom;
            extra.shuffle(&mut rand::thread_rng());
            sources.shuffle(&mut rand::thread_rng());
            // Half the time a cacher serves first, spreading reads of hot values.
            if rand::random::<bool>() {
                extra.extend(sources);
                sources = extra;
            } else {
                sources.extend(extra);
            }
        }
        transfer::fetch(&self.inner.node, &store, hash, &sources, Some(sink)).await?;
        self.announce(hash, found.record.size);
        Ok(())
    }

    /// Refuses this node's clients a read of a private namespace unless the
    /// node is one of its writers.
    pub(crate) async fn may_read(&self, ns: &Namespace) -> Result<()> {
        self.readable(ns).await.map(drop)
    }

    /// [`ObjectSpace::may_read`], returning the namespace's writers (if it
    /// is writer-only) to check what is read with [`check_signed`].
    async fn readable(&self, ns: &Namespace) -> Result<Option<Writers>> {
        let me = self.me();
        (self.inner.namespaces)
            .check(self, ns, |w| w.check_reader(ns, &me).map(|()| w.clone()))
            .await
    }

    /// Reads a whole value into memory (for values known to be small).
    pub async fn read_all(&self, path: &ObjectPath) -> Result<(ObjectRecord, Vec<u8>)> {
        let found = self.find(path, true).await?;
        let bytes = self.value(&found).await?;
        Ok((found.record, bytes))
    }

    /// The whole value of a found object, in memory (for small values).
    pub async fn value(&self, found: &Found) -> Result<Vec<u8>> {
        if let Some(bytes) = &found.inline {
            if found.record.blob == Some(BlobHash::of(bytes)) {
                crate::metrics::bytes_out(bytes.len() as u64);
                return Ok(bytes.clone());
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        // The sender goes with the stream: its end closes the channel.
        let send = async move { self.stream_value(found, &tx).await };
        let collect = async {
            let mut out = Vec::new();
            while let Some(chunk) = rx.recv().await {
                out.extend_from_slice(&chunk);
            }
            out
        };
        let (sent, bytes) = tokio::join!(send, collect);
        sent.map(|()| bytes)
    }

    /// Live objects of `ns` whose names start with `prefix`, in name order,
    /// gathered from every live node (newest version of each name wins).
    pub async fn list(&self, ns: &Namespace, prefix: &str) -> Result<Vec<Stat>> {
        crate::metrics::observe("list", async {
            self.inner.namespaces.incarnation(self, ns).await?;
            self.may_read(ns).await?;
            let mut peers = self.everyone().await?;
            peers.push(self.me());
            let lists = peers.iter().map(|&peer| self.list_from(peer, ns, prefix));
            let mut newest: BTreeMap<ObjectName, ObjectRecord> = BTreeMap::new();
            let mut answered = 0;
            for result in join_all(lists).await {
                let Ok(records) = result else { continue };
                answered += 1;
                for record in records {
                    match newest.get(&record.name) {
                        Some(have) if have.order() >= record.order() => {}
                        _ => {
                            newest.insert(record.name.clone(), record);
                        }
                    }
                }
            }
            if answered == 0 {
                return Err(SpaceError::Unavailable(
                    "no node answered the listing".into(),
                ));
            }
            let now = now_ms();
            Ok(newest
                .into_values()
                .filter(|r| r.is_live(now))
                .map(|r| r.stat())
                .collect())
        })
        .await
    }

    async fn list_from(
        &self,
        peer: PeerId,
        ns: &Namespace,
        prefix: &str,
    ) -> Result<Vec<ObjectRecord>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let request = PeerRequest::List {
                ns: ns.clone(),
                prefix: prefix.to_owned(),
                after: after.clone(),
            };
            let PeerResponse::Records(batch) = self.ask(peer, request).await? else {
                return Err(SpaceError::Unavailable(format!(
                    "{peer}: unexpected answer"
                )));
            };
            let done = batch.len() < LIST_BATCH;
            after = batch.last().map(|r| r.name.clone());
            all.extend(batch);
            if done || after.is_none() {
                return Ok(all);
            }
        }
    }
}

/// How long a read waits for the remaining owners once a majority answered.
const STRAGGLER_GRACE: Duration = Duration::from_millis(300);

/// Reads a value that fits in one chunk.
pub(crate) fn read_small(store: &Store, hash: &BlobHash) -> Result<Vec<u8>> {
    let manifest = store
        .manifest(hash)?
        .ok_or_else(|| SpaceError::Storage(format!("blob {hash} is not stored here")))?;
    match manifest.chunks() {
        [] => Ok(Vec::new()),
        [chunk] => store
            .chunk(chunk)?
            .ok_or_else(|| SpaceError::Storage(format!("chunk {chunk} is missing"))),
        _ => Err(SpaceError::Storage(format!("blob {hash} is not small"))),
    }
}

/// Refuses a record of a writer-only namespace that no writer signed,
/// whichever owner answered with it: a reader trusts no single owner with
/// such a namespace's contents.
fn check_signed(writers: Option<&Writers>, record: &ObjectRecord) -> Result<()> {
    writers.map_or(Ok(()), |w| w.check_record(record, false))
}
