//! [`ObjectSpace`]: a node's engine for the object space. It takes operations
//! from local clients (through [`crate::api`]) and carries them out across the
//! network: finding a key's owners, sending writes to the primary, reading from
//! all owners and returning the newest version, and streaming values. This
//! module holds what both paths share; the paths are [`crate::write`] and
//! [`crate::read`].
//!
//! Owners are computed from the membership map the nodes agree on through Raft
//! ([`p3_membership`]): its members sorted by XOR distance to the key, the
//! first R of them. Every node holding the same epoch computes the same owners,
//! whatever it is connected to; a node acts as an owner only while it holds a
//! membership lease. The repair loop ([`crate::repair`]) moves records when
//! the map changes.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc, Mutex, Weak},
    time::Duration,
};

use p3_dht::{Node, PeerId};
use p3_membership::Membership;
use tokio::{sync::broadcast, time::timeout};

use crate::{
    blob::{BlobHash, SMALL_MAX},
    error::{Result, SpaceError},
    index::IndexQueue,
    interest::Interests,
    key::{blob_provider_key, object_key},
    lock::{LockRequest, Queues},
    name::{Namespace, ObjectPath},
    namespaces::Namespaces,
    peering::Peered,
    protocol::{PeerRequest, PeerResponse, WriteOp, WriteRequest},
    store::Store,
    watch::{Event, Waiters, LOCAL_EVENTS},
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
    /// This node's peer id as text, as requests name it: encoding it
    /// (base58) for every write showed in profiles.
    me_text: String,
    /// The agreed map of members, and this node's lease.
    pub membership: Membership,
    pub store: Store,
    pub config: SpaceConfig,
    /// One lock per key being written here, so the primary orders writes.
    key_locks: Mutex<HashMap<[u8; 32], Weak<tokio::sync::Mutex<()>>>>,
    pub namespaces: Namespaces,
    /// Blocking reads waiting for writes this node orders.
    pub waiters: Waiters,
    /// Events for this node's watchers: of writes it ordered, and those
    /// other nodes sent it.
    pub events: broadcast::Sender<Event>,
    /// Who wants which events ([`crate::interest`]).
    pub interests: Interests,
    /// Events received from other nodes.
    pub events_received: AtomicU64,
    /// Lock waiting lines of keys this node is primary of.
    pub queues: Queues,
    /// Search-index updates waiting to be applied.
    pub index_queue: Mutex<IndexQueue>,
    /// Keys whose records this node peered in the current epoch.
    pub peered: Peered,
    /// Writes in flight from here that their primary may ask to sign.
    pub signable: crate::signing::Signable,
}

/// The object-space engine of a node. Cheap to clone.
#[derive(Clone)]
pub struct ObjectSpace {
    pub(crate) inner: Arc<Inner>,
}

/// How long a primary keeps asking an owner that refuses or fails to hold a
/// write (see [`ObjectSpace::ask_owner`]).
const OWNER_RETRY: Duration = Duration::from_secs(3);
/// How long an owner waits for a lapsed membership lease to come back
/// before it refuses a request.
const LEASE_WAIT: Duration = Duration::from_secs(2);

impl ObjectSpace {
    /// Builds the engine; [`crate::service::start`] runs its background parts.
    pub fn new(node: Node, membership: Membership, store: Store, config: SpaceConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                me_text: node.peer_id().to_string(),
                node,
                membership,
                store,
                config,
                key_locks: Mutex::new(HashMap::new()),
                namespaces: Namespaces::default(),
                waiters: Waiters::default(),
                events: broadcast::channel(LOCAL_EVENTS).0,
                interests: Interests::default(),
                events_received: AtomicU64::new(0),
                queues: Queues::default(),
                index_queue: Mutex::new(IndexQueue::default()),
                peered: Peered::default(),
                signable: Default::default(),
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

    /// [`ObjectSpace::me`] as text.
    pub(crate) fn me_text(&self) -> &str {
        &self.inner.me_text
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

    /// The membership layer.
    pub fn membership(&self) -> &Membership {
        &self.inner.membership
    }

    /// The other nodes to ask when every node must be asked (a listing, a
    /// namespace's drop, watch interests): the connected peers when the
    /// network keeps every live node connected; with on-demand connections,
    /// every other member of the map as well (the request dials it).
    pub async fn everyone(&self) -> Result<Vec<PeerId>> {
        Ok(self.inner.membership.everyone().await?)
    }

    /// The R nodes that own `key` in the agreed map, nearest first; an error
    /// while this node holds no map (it has not joined yet).
    pub async fn owners(&self, key: &[u8]) -> Result<Vec<PeerId>> {
        let owners = self.owners_now(key);
        if owners.is_empty() {
            return Err(SpaceError::Unavailable(
                "this node has not joined the membership map yet; retry".into(),
            ));
        }
        Ok(owners)
    }

    /// The owners of `key` in `map` (a snapshot the caller acts on whole).
    pub(crate) fn owners_in(&self, map: &p3_membership::Map, key: &[u8]) -> Result<Vec<PeerId>> {
        let owners = p3_membership::placement::owners(map, key, self.inner.config.replicas.max(1));
        if owners.is_empty() {
            return Err(SpaceError::Unavailable(
                "this node has not joined the membership map yet; retry".into(),
            ));
        }
        Ok(owners)
    }

    /// [`ObjectSpace::owners`], empty before the node holds a map.
    pub(crate) fn owners_now(&self, key: &[u8]) -> Vec<PeerId> {
        self.inner
            .membership
            .owners(key, self.inner.config.replicas.max(1))
    }

    /// Refuses to act as an owner without a membership lease: the group may
    /// already have given this node's keys to others. Waits up to
    /// [`LEASE_WAIT`] first, since a lease that lapsed because a loaded
    /// leader answered late comes back with its next answer.
    pub(crate) async fn check_lease(&self) -> Result<()> {
        if self.inner.membership.lease_within(LEASE_WAIT).await {
            return Ok(());
        }
        Err(SpaceError::Unavailable(
            "this node cannot reach the membership group (no lease), so it does not act as an owner; retry"
                .into(),
        ))
    }

    /// Sends `request` to `peer` (or handles it here if `peer` is this node),
    /// within the RPC deadline.
    pub(crate) async fn ask(&self, peer: PeerId, request: PeerRequest) -> Result<PeerResponse> {
        if peer == self.me() {
            let answer = if crate::service::parks(&request) {
                // A wait: the caller that gives up ends it.
                crate::service::handle(self, peer, request).await
            } else {
                // Worked on in a task of its own, as a peer's request is: a
                // caller that gives up (a timeout, an aborted task) must not
                // stop this node's part halfway, e.g. a write stored here and
                // not yet sent to the other owners.
                tokio::spawn(self.handle_here(peer, request))
                    .await
                    .unwrap_or_else(|e| {
                        PeerResponse::Error(SpaceError::Unavailable(format!(
                            "this node's handling of its own request failed: {e}"
                        )))
                    })
            };
            return match answer {
                PeerResponse::Error(e) => Err(e),
                answer => Ok(answer),
            };
        }
        self.ask_remote(peer, request).await
    }

    /// This node's answer to its own `request`, as a boxed future: its type
    /// is declared, not inferred, which breaks the cycle of a request whose
    /// handling asks this node again (signing), so it can be spawned.
    fn handle_here(
        &self,
        peer: PeerId,
        request: PeerRequest,
    ) -> futures::future::BoxFuture<'static, PeerResponse> {
        let space = self.clone();
        Box::pin(async move { crate::service::handle(&space, peer, request).await })
    }

    /// [`ObjectSpace::ask_remote`] for an owner that must hold a write:
    /// a refusal or failure is retried, with a growing pause, for up to
    /// [`OWNER_RETRY`] while the owner is still a member. Writes wait for
    /// every owner, and an owner that just joined (no lease yet) or applies
    /// the map a moment later than the primary refuses for that moment.
    pub(crate) async fn ask_owner(
        &self,
        peer: PeerId,
        request: PeerRequest,
    ) -> Result<PeerResponse> {
        let until = tokio::time::Instant::now() + OWNER_RETRY;
        let mut pause = Duration::from_millis(25);
        loop {
            let failure = match self.ask_remote(peer, request.clone()).await {
                Err(e @ (SpaceError::Unavailable(_) | SpaceError::OutcomeUnknown(_))) => e,
                answer => return answer,
            };
            if tokio::time::Instant::now() + pause > until
                || !self.inner.membership.is_member(&peer)
            {
                return Err(failure);
            }
            tracing::debug!(%peer, error = %failure, "owner refused; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(400));
        }
    }

    /// [`ObjectSpace::ask`] for a peer that is not this node. Never calls back
    /// into this node's service, so a task it runs in can be spawned from it.
    pub(crate) async fn ask_remote(
        &self,
        peer: PeerId,
        request: PeerRequest,
    ) -> Result<PeerResponse> {
        let deadline = self.inner.config.rpc_timeout + transfer_allowance(&request);
        let answer = tokio::select! {
            answer = timeout(deadline, self.inner.node.request(peer, &request)) => answer,
            () = self.inner.membership.removed(peer) => {
                return Err(SpaceError::OutcomeUnknown(format!(
                    "{peer} was removed from the membership map while it was asked"
                )))
            }
        };
        match answer {
            Ok(Ok(PeerResponse::Error(e))) => Err(e),
            Ok(Ok(answer)) => Ok(answer),
            // A broken connection may have carried the request first.
            Ok(Err(p3_dht::DhtError::Stopped)) => Err(SpaceError::Stopped),
            Ok(Err(e)) => Err(SpaceError::OutcomeUnknown(format!("{peer}: {e}"))),
            Err(_) => Err(SpaceError::OutcomeUnknown(format!(
                "{peer} did not answer within {deadline:?}"
            ))),
        }
    }

    /// Fails with advice if `ns` does not exist.
    pub async fn check_namespace(&self, ns: &Namespace) -> Result<()> {
        self.inner.namespaces.incarnation(self, ns).await.map(drop)
    }

    /// The incarnation of the path's namespace (an error if it does not exist)
    /// and the path's owners.
    pub(crate) async fn locate(&self, path: &ObjectPath) -> Result<(u64, Vec<PeerId>)> {
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

    /// Announces in the DHT that this node holds `hash` (of `size` bytes),
    /// so readers that are not owners can fetch it from here too. Values up
    /// to [`SMALL_MAX`] travel inside the messages that carry their records
    /// and are never fetched by hash: announcing them would cost a Kademlia
    /// query on every owner for every small write, and help no one.
    pub(crate) fn announce(&self, hash: BlobHash, size: u64) {
        if size <= SMALL_MAX {
            return;
        }
        let node = self.inner.node.clone();
        tokio::spawn(async move {
            if let Err(e) = node.start_providing(blob_provider_key(&hash.0)).await {
                tracing::debug!(%hash, error = %e, "cannot announce blob");
            }
        });
    }
}

/// Slowest transfer rate a request that moves a value is allowed.
const MIN_RATE: u64 = 8 << 20;

/// Extra time for a request whose answer waits for a value to be transferred
/// (a replica fetches the blob before it acknowledges), or for a change or a
/// lock it was told to wait for.
pub(crate) fn transfer_allowance(request: &PeerRequest) -> Duration {
    let bytes = match request {
        PeerRequest::Write(WriteRequest {
            op: WriteOp::Put { size, .. },
            ..
        }) => size.saturating_mul(2), // the primary's fetch, then its replicas'
        PeerRequest::Replicate { record, .. } => record.size,
        PeerRequest::WaitNewer { wait_ms, .. } => return Duration::from_millis(*wait_ms),
        // The primary answers a lock request that waits in line when it is
        // granted, moved or out of time: cut earlier, it would be asked again
        // while its first copy still waited.
        PeerRequest::Lock(LockRequest::Acquire { wait_ms, .. }) => {
            return Duration::from_millis(*wait_ms)
        }
        _ => 0,
    };
    Duration::from_secs(bytes / MIN_RATE)
}
