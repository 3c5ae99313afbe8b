//! [`ObjectSpace`]: a node's engine for the object space. It takes operations
//! from local clients (through [`crate::api`]) and carries them out across the
//! network: finding a key's owners, sending writes to the primary, reading from
//! all owners and returning the newest version, and streaming values.
//!
//! Owners are computed from the node's live view: itself plus the P³ peers it is
//! connected to, sorted by XOR distance to the key, the first R of them. Nodes
//! stay connected to the peers they learn from the DHT, and the repair loop
//! ([`crate::repair`]) talks to every owner it shares keys with.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use futures::{future::join_all, stream::FuturesUnordered, StreamExt};
use p3_dht::{by_distance, Node, PeerId};
use tokio::{sync::Notify, time::timeout};

use crate::{
    api::protocol::Written,
    blob::{BlobHash, Chunker, INLINE_MAX},
    error::{Result, SpaceError},
    key::{blob_provider_key, object_key},
    name::{Namespace, ObjectName, ObjectPath},
    namespaces::Namespaces,
    object::{now_ms, ObjectRecord, PutOptions, Replica, Stat, MAX_META_BYTES},
    protocol::{PeerRequest, PeerResponse, WriteOp, WriteRequest, LIST_BATCH},
    store::{BlobWriter, Pin, Store},
    transfer::{self, blocking, ChunkSink},
};

/// The knobs of the object space; the node's config file sets them.
#[derive(Debug, Clone)]
pub struct SpaceConfig {
    /// Owners per object (R).
    pub replicas: usize,
    /// Largest value accepted.
    pub max_object_bytes: u64,
    /// Bytes of fetched blobs kept as a cache.
    pub cache_bytes: u64,
    /// How often the repair loop checks every local object even if no peer
    /// came or went.
    pub repair_interval: Duration,
    /// Deadline of one request to a peer.
    pub rpc_timeout: Duration,
}

impl Default for SpaceConfig {
    fn default() -> Self {
        Self {
            replicas: 3,
            max_object_bytes: 16 << 30,
            cache_bytes: 1 << 30,
            repair_interval: Duration::from_secs(30),
            rpc_timeout: Duration::from_secs(30),
        }
    }
}

pub(crate) struct Inner {
    pub node: Node,
    pub store: Store,
    pub config: SpaceConfig,
    /// One lock per key being written here, so the primary orders writes.
    key_locks: Mutex<HashMap<[u8; 32], Weak<tokio::sync::Mutex<()>>>>,
    pub namespaces: Namespaces,
    /// Wakes the repair loop early.
    pub repair_now: Notify,
}

/// The object-space engine of a node. Cheap to clone.
#[derive(Clone)]
pub struct ObjectSpace {
    pub(crate) inner: Arc<Inner>,
}

/// A value being received from a client, chunked and stored as it arrives.
pub struct Ingest {
    chunker: Chunker,
    writer: BlobWriter,
    max: u64,
}

impl Ingest {
    /// Stores the next bytes of the value (blocking on disk).
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        let size = self.chunker.size() + bytes.len() as u64;
        if size > self.max {
            return Err(SpaceError::TooLarge {
                size,
                max: self.max,
            });
        }
        let writer = &mut self.writer;
        self.chunker
            .push(bytes, |hash, chunk| writer.write_chunk(hash, chunk))
    }

    /// Completes the value: its hash, size, and a pin that keeps it stored
    /// until a record points at it.
    pub fn finish(self) -> Result<(BlobHash, u64, Pin)> {
        let mut writer = self.writer;
        let (hash, manifest) = self
            .chunker
            .finish(|hash, chunk| writer.write_chunk(hash, chunk))?;
        let size = manifest.size();
        Ok((hash, size, writer.commit(hash, manifest)?))
    }
}

/// What a read found: the newest record and where its value can come from.
pub struct Found {
    /// The newest live record among the owners that answered.
    pub record: ObjectRecord,
    /// The value, if small enough to come with the answer.
    pub inline: Option<Vec<u8>>,
    /// Owners that hold this version.
    pub holders: Vec<PeerId>,
    /// Every owner asked and the version it holds.
    pub replicas: Vec<Replica>,
}

impl ObjectSpace {
    /// Builds the engine; [`crate::service::start`] runs its background parts.
    pub fn new(node: Node, store: Store, config: SpaceConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                node,
                store,
                config,
                key_locks: Mutex::new(HashMap::new()),
                namespaces: Namespaces::default(),
                repair_now: Notify::new(),
            }),
        }
    }

    /// The network handle.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// The local store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &SpaceConfig {
        &self.inner.config
    }

    pub(crate) fn me(&self) -> PeerId {
        self.inner.node.peer_id()
    }

    /// The lock that orders writes to `key` on this node.
    pub(crate) fn key_lock(&self, key: [u8; 32]) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .key_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = locks.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, weak| weak.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key, Arc::downgrade(&lock));
        lock
    }

    /// The R nodes that own `key` as this node sees the network, nearest first.
    pub async fn owners(&self, key: &[u8]) -> Result<Vec<PeerId>> {
        let live = self.inner.node.connected().await?;
        Ok(self.owners_among(key, live))
    }

    pub(crate) fn owners_among(
        &self,
        key: &[u8],
        live: impl IntoIterator<Item = PeerId>,
    ) -> Vec<PeerId> {
        let mut owners = by_distance(key, live.into_iter().chain([self.me()]));
        owners.truncate(self.inner.config.replicas.max(1));
        owners
    }

    /// Sends `request` to `peer` (or handles it here if `peer` is this node),
    /// within the RPC deadline.
    pub(crate) async fn ask(&self, peer: PeerId, request: PeerRequest) -> Result<PeerResponse> {
        if peer == self.me() {
            return match crate::service::handle(self, peer, request).await {
                PeerResponse::Error(e) => Err(e),
                answer => Ok(answer),
            };
        }
        let deadline = self.inner.config.rpc_timeout + transfer_allowance(&request);
        match timeout(deadline, self.inner.node.request(peer, &request)).await {
            Ok(Ok(PeerResponse::Error(e))) => Err(e),
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(SpaceError::Unavailable(format!(
                "{peer} did not answer within {deadline:?}"
            ))),
        }
    }

    /// Fails with advice if `ns` does not exist.
    pub async fn check_namespace(&self, ns: &Namespace) -> Result<()> {
        self.inner.namespaces.incarnation(self, ns).await.map(drop)
    }

    /// Starts receiving a value from a client.
    pub fn ingest(&self) -> Ingest {
        Ingest {
            chunker: Chunker::new(),
            writer: self.inner.store.writer(),
            max: self.inner.config.max_object_bytes,
        }
    }

    /// Writes `path` to point at a blob already in the local store.
    pub async fn put(
        &self,
        path: &ObjectPath,
        options: PutOptions,
        blob: BlobHash,
        size: u64,
    ) -> Result<Written> {
        let meta_size = options.type_tag.len()
            + options
                .meta
                .iter()
                .map(|(k, v)| k.len() + v.to_string().len())
                .sum::<usize>();
        if meta_size > MAX_META_BYTES {
            return Err(SpaceError::Invalid(format!(
                "type and metadata take {meta_size} bytes; the limit is {MAX_META_BYTES}"
            )));
        }
        let inline = if size <= INLINE_MAX {
            let store = self.inner.store.clone();
            Some(blocking(move || read_small(&store, &blob)).await?)
        } else {
            None
        };
        let op = WriteOp::Put {
            blob,
            size,
            type_tag: options.type_tag,
            meta: options.meta,
            ttl_ms: options.ttl_ms,
        };
        self.submit(path, op, options.if_version, inline).await
    }

    /// Removes `path`.
    pub async fn remove(&self, path: &ObjectPath, if_version: Option<u64>) -> Result<Written> {
        self.submit(path, WriteOp::Remove, if_version, None).await
    }

    /// The incarnation of the path's namespace (an error if it does not exist)
    /// and the path's owners.
    async fn locate(&self, path: &ObjectPath) -> Result<(u64, Vec<PeerId>)> {
        let incarnation = self
            .inner
            .namespaces
            .incarnation(self, &path.namespace)
            .await?;
        let owners = self
            .owners(&object_key(&path.namespace, &path.name))
            .await?;
        Ok((incarnation, owners))
    }

    /// Sends a write to the key's primary, following redirects and skipping
    /// owners that cannot be reached.
    async fn submit(
        &self,
        path: &ObjectPath,
        op: WriteOp,
        if_version: Option<u64>,
        inline: Option<Vec<u8>>,
    ) -> Result<Written> {
        let (ns_incarnation, owners) = self.locate(path).await?;
        let mut request = WriteRequest {
            ns: path.namespace.clone(),
            name: path.name.clone(),
            ns_incarnation,
            op,
            if_version,
            inline,
            origin: self.me().to_string(),
            owners: owners.iter().map(ToString::to_string).collect(),
            hops: 0,
        };
        let mut candidates: Vec<PeerId> = owners.clone();
        candidates.reverse();
        let mut failures = Vec::new();
        while let Some(target) = candidates.pop() {
            match self.ask(target, PeerRequest::Write(request.clone())).await {
                Ok(PeerResponse::Written { record, acked }) => {
                    return Ok(Written {
                        path: path.to_string(),
                        version: record.version,
                        hash: record.blob.map(|b| b.to_string()).unwrap_or_default(),
                        size: record.size,
                        acked_by: acked,
                    })
                }
                Ok(PeerResponse::NotPrimary(primary)) if request.hops < 3 => {
                    request.hops += 1;
                    match primary.parse::<PeerId>() {
                        Ok(p) => candidates.push(p),
                        Err(_) => failures.push(format!("{target}: bad redirect")),
                    }
                }
                Ok(other) => failures.push(format!("{target}: unexpected answer {other:?}")),
                Err(e @ (SpaceError::Unavailable(_) | SpaceError::Stopped)) => {
                    failures.push(format!("{target}: {e}"))
                }
                Err(e) => return Err(e),
            }
        }
        Err(SpaceError::Unavailable(format!(
            "no owner of {path} took the write: {}",
            failures.join("; ")
        )))
    }

    /// Asks every owner of `path` for its record; the newest live one wins.
    /// Owners holding older versions are brought up to date in the background.
    pub async fn find(&self, path: &ObjectPath, inline: bool) -> Result<Found> {
        let (incarnation, owners) = self.locate(path).await?;
        let asks = owners.iter().map(|&peer| {
            let request = PeerRequest::Head {
                ns: path.namespace.clone(),
                name: path.name.clone(),
                inline,
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
            .map(|(peer, r, _)| Replica {
                peer: peer.to_string(),
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
                };
                if let Err(e) = space.ask(peer, request).await {
                    tracing::debug!(%peer, error = %e, "read repair failed");
                }
            }
        });
    }

    /// Metadata of `path` with the version every owner holds.
    pub async fn stat(&self, path: &ObjectPath) -> Result<Stat> {
        let found = self.find(path, false).await?;
        let mut stat = found.record.stat();
        stat.replicas = found.replicas;
        Ok(stat)
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
            peer: self.me().to_string(),
            version: record.version,
            primary: false,
        }];
        Ok(stat)
    }

    /// Sends the value of a found object to `sink`, chunk by chunk, from the
    /// local store, the answer itself, or other holders (owners first, then
    /// nodes that cached it); a fetched blob stays in the local cache.
    pub async fn stream_value(&self, found: &Found, sink: &ChunkSink) -> Result<()> {
        let gone = || SpaceError::Unavailable("the reader went away".into());
        let Some(hash) = found.record.blob else {
            return Ok(());
        };
        if let Some(bytes) = &found.inline {
            if BlobHash::of(bytes) != hash {
                return Err(SpaceError::Corrupt(format!(
                    "inline value of {hash} does not match"
                )));
            }
            return sink.send(bytes.clone()).await.map_err(|_| gone());
        }
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
        self.announce(hash);
        Ok(())
    }

    /// Reads a whole value into memory (for values known to be small).
    pub async fn read_all(&self, path: &ObjectPath) -> Result<(ObjectRecord, Vec<u8>)> {
        let found = self.find(path, true).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let send = async move { self.stream_value(&found, &tx).await.map(|()| found.record) };
        let collect = async {
            let mut out = Vec::new();
            while let Some(chunk) = rx.recv().await {
                out.extend_from_slice(&chunk);
            }
            out
        };
        let (record, bytes) = tokio::join!(send, collect);
        Ok((record?, bytes))
    }

    /// Announces in the DHT that this node holds `hash`.
    pub(crate) fn announce(&self, hash: BlobHash) {
        let node = self.inner.node.clone();
        tokio::spawn(async move {
            if let Err(e) = node.start_providing(blob_provider_key(&hash.0)).await {
                tracing::debug!(%hash, error = %e, "cannot announce blob");
            }
        });
    }

    /// Live objects of `ns` whose names start with `prefix`, in name order,
    /// gathered from every live node (newest version of each name wins).
    pub async fn list(&self, ns: &Namespace, prefix: &str) -> Result<Vec<Stat>> {
        self.inner.namespaces.incarnation(self, ns).await?;
        let mut peers = self.inner.node.connected().await?;
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

/// Slowest transfer rate a request that moves a value is allowed.
const MIN_RATE: u64 = 8 << 20;

/// Extra time for a request whose answer waits for a value to be transferred
/// (a replica fetches the blob before it acknowledges).
pub(crate) fn transfer_allowance(request: &PeerRequest) -> Duration {
    let bytes = match request {
        PeerRequest::Write(WriteRequest {
            op: WriteOp::Put { size, .. },
            ..
        }) => size.saturating_mul(2), // the primary's fetch, then its replicas'
        PeerRequest::Replicate { record, .. } => record.size,
        _ => 0,
    };
    Duration::from_secs(bytes / MIN_RATE)
}

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
