//! The owner's side of the object space: answering other nodes' requests
//! (ordering writes as primary, heads, listings, repair syncs; holding
//! replicas is [`crate::replica`]) and the tasks a node runs in the background.

mod primary;

use std::{sync::Arc, time::Duration};

use p3_dht::{Inbound, InboundRequest, PeerId};
use tokio::sync::Semaphore;

use self::primary::handle_write;

use crate::{
    admission::{FairQueue, Parked, PeerBounds},
    blob::SMALL_MAX,
    error::{Result, SpaceError},
    key::object_key,
    lock::LockRequest,
    name::{Namespace, ObjectName},
    object::now_ms,
    protocol::{PeerRequest, PeerResponse, SyncEntry, LIST_BATCH, MAX_PREFIX, SYNC_BATCH},
    read::read_small,
    repair,
    replica::{accept_replica, reach, IN_PLACE_MAX},
    space::ObjectSpace,
    transfer::{self, blocking},
};

/// Longest a blocking read waits at the primary in one request.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Peer requests handled at once; more wait for their peer's turn.
const MAX_HANDLING: usize = 128;
/// Requests parked here at once (blocking reads, lock waits); more are
/// refused (the reader retries).
const MAX_WAITING: usize = 4096;
/// Requests one peer may have parked here.
const PEER_PARKED: usize = 1024;

/// Requests from one peer waiting for a handling slot; more are refused (the
/// peer is told the node is busy). Bytes bound what a flooding peer holds in
/// this node's memory: requests may be up to the 4 MiB message limit.
const PEER_WAITING: PeerBounds = PeerBounds {
    requests: 1024,
    bytes: 64 << 20,
};

/// Starts serving peers (requests and blob streams) and the repair loop.
pub fn start(space: &ObjectSpace, inbound: Inbound) -> Result<()> {
    let blobs = space.clone();
    let incoming = space.node().accept_streams(p3_dht::BLOB_PROTOCOL)?;
    tokio::spawn(async move {
        transfer::serve(incoming, blobs.store().clone()).await;
    });
    tokio::spawn(serve_requests(space.clone(), inbound));
    tokio::spawn(repair::run(space.clone()));
    tokio::spawn(crate::interest::keep(space.clone()));
    Ok(())
}

/// Hands peer requests to handlers, at most [`MAX_HANDLING`] at once, taking
/// turns between peers so one peer's flood delays every other peer's request
/// by at most a turn.
async fn serve_requests(space: ObjectSpace, mut inbound: Inbound) {
    let slots = Arc::new(Semaphore::new(MAX_HANDLING));
    // Blocking reads and lock waits park for long: they hold a place of their
    // own, not a handling slot, so they never hold up writes.
    let waits = Arc::new(Semaphore::new(MAX_WAITING));
    let mut waiting = FairQueue::new(PEER_WAITING);
    let parked = Parked::new(PEER_PARKED);
    let admit = |request: InboundRequest, waiting: &mut FairQueue<PeerId, _>| {
        let decoded = request.decode::<PeerRequest>();
        if decoded.as_ref().is_ok_and(parks) {
            let place = match (
                parked.admit(request.peer),
                waits.clone().try_acquire_owned(),
            ) {
                (Some(place), Ok(slot)) => (place, slot),
                (None, _) => return busy(request, "too many of your requests are parked here"),
                (_, Err(_)) => return busy(request, "too many requests are parked here"),
            };
            spawn_answer(&space, request, decoded, place);
            return;
        }
        let bytes = request.body.len();
        if let Err((request, _)) = waiting.push(request.peer, (request, decoded), bytes) {
            busy(request, "too many of your requests are waiting here");
        }
    };
    loop {
        // Take in everything that has arrived, so each peer's turn sees it...
        while let Ok(request) = inbound.requests.try_recv() {
            admit(request, &mut waiting);
        }
        // ...then wait for another request or a free slot for the next turn.
        tokio::select! {
            request = inbound.requests.recv() => match request {
                Some(request) => admit(request, &mut waiting),
                None => break,
            },
            slot = slots.clone().acquire_owned(), if !waiting.is_empty() => {
                let Ok(slot) = slot else { break };
                if let Some((_, (request, decoded))) = waiting.pop() {
                    spawn_answer(&space, request, decoded, slot);
                }
            }
        }
    }
}

/// Whether `request` may wait at length here (a blocking read, a lock
/// wait) rather than be worked on.
pub(crate) fn parks(request: &PeerRequest) -> bool {
    matches!(
        request,
        PeerRequest::WaitNewer { .. } | PeerRequest::Lock(LockRequest::Acquire { .. })
    )
}

/// Answers `request` in a task of its own, holding `place` (its handling
/// slot or parking place) until the answer is sent.
fn spawn_answer(
    space: &ObjectSpace,
    request: InboundRequest,
    decoded: Result<PeerRequest, p3_dht::DhtError>,
    place: impl Send + 'static,
) {
    let space = space.clone();
    // Boxed: the future holds a whole write's state (kilobytes), and tokio
    // would copy it into the task's cell and over again when it finishes.
    tokio::spawn(Box::pin(async move {
        answer(&space, request, decoded).await;
        drop(place);
    }));
}

/// Refuses `request`: the peer should back off and retry.
fn busy(request: InboundRequest, why: &str) {
    tracing::debug!(peer = %request.peer, why, "refusing a peer request");
    let _ = request.respond(&PeerResponse::Error(SpaceError::Unavailable(
        why.to_owned(),
    )));
}

async fn answer(
    space: &ObjectSpace,
    request: InboundRequest,
    decoded: Result<PeerRequest, p3_dht::DhtError>,
) {
    let peer = request.peer;
    let response = match decoded {
        Ok(decoded) => {
            tracing::trace!(%peer, kind = decoded.kind(), "peer request");
            handle(space, peer, decoded).await
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "malformed peer request");
            PeerResponse::Error(SpaceError::Invalid(e.to_string()))
        }
    };
    if let Err(e) = request.respond(&response) {
        tracing::warn!(%peer, error = %e, "cannot answer peer");
    }
}

/// Refuses `peer` a request that reads a private namespace unless it is a
/// writer, or (for one key's record) one of the key's owners, which hold it
/// anyway and read each other's copies to peer and repair.
async fn may_read(space: &ObjectSpace, peer: PeerId, request: &PeerRequest) -> Result<()> {
    if peer == space.me() {
        return Ok(());
    }
    let (ns, name) = match request {
        PeerRequest::Head { ns, name, .. }
        | PeerRequest::Read { ns, name, .. }
        | PeerRequest::WaitNewer { ns, name, .. } => (ns, Some(name)),
        PeerRequest::List { ns, .. } | PeerRequest::Search { ns, .. } => (ns, None),
        PeerRequest::Interest { interests, .. } => {
            for (ns, _) in interests {
                space.inner.namespaces.check_read(space, ns, &peer).await?;
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    let namespaces = &space.inner.namespaces;
    if namespaces.check_read_known(space, ns, &peer).await.is_ok() {
        return Ok(());
    }
    // An owner reads what it owns (repair), writer or not; asked before a
    // refusal reads the namespace list again, which owners catching up on
    // a private namespace's objects would otherwise do once per object.
    if let Some(name) = name {
        if space.owners(&object_key(ns, name)).await?.contains(&peer) {
            return Ok(());
        }
    }
    namespaces.check_read(space, ns, &peer).await
}

/// Answers one request from `peer` (which may be this node itself).
pub(crate) async fn handle(
    space: &ObjectSpace,
    peer: PeerId,
    request: PeerRequest,
) -> PeerResponse {
    if let Err(e) = may_read(space, peer, &request).await {
        return PeerResponse::Error(e);
    }
    let result = match request {
        PeerRequest::Write(write) => handle_write(space, write).await,
        PeerRequest::Sign { ticket, record } => crate::signing::sign(space, ticket, &record),
        PeerRequest::Replicate {
            record,
            inline,
            sources,
            ordered,
        } => {
            let mut sources: Vec<PeerId> = sources.iter().filter_map(|s| s.parse().ok()).collect();
            sources.push(peer);
            let ordered_by = ordered.then_some(peer);
            accept_replica(space, record, inline, &sources, ordered_by).await
        }
        PeerRequest::Head {
            ns,
            name,
            inline,
            epoch,
        } => {
            // A peering primary: catch up with its map and let this node's
            // writes to the key in flight finish first.
            let _ordered = match epoch {
                0 => None,
                _ => {
                    if let Err(e) = reach(space, epoch).await {
                        return PeerResponse::Error(e);
                    }
                    Some(space.key_lock(object_key(&ns, &name)).lock_owned().await)
                }
            };
            head_here(space, ns, name, inline).await
        }
        PeerRequest::Read { ns, name, inline } => read_as_primary(space, ns, name, inline).await,
        PeerRequest::Sync(entries) => sync(space, entries).await,
        PeerRequest::List { ns, prefix, after } => {
            let store = space.store().clone();
            blocking(move || {
                Ok(PeerResponse::Records(store.list(
                    &ns,
                    &prefix,
                    after.as_ref(),
                    LIST_BATCH,
                )?))
            })
            .await
        }
        PeerRequest::WaitNewer {
            ns,
            name,
            after,
            wait_ms,
        } => {
            // Bounded so a peer cannot park requests here forever.
            let wait = Duration::from_millis(wait_ms).min(MAX_WAIT);
            space.wait_here(ns, name, after, wait).await
        }
        PeerRequest::Interest {
            interests,
            lease_ms,
        } => {
            let lease = Duration::from_millis(lease_ms);
            interests
                .into_iter()
                .try_for_each(|(ns, prefix)| {
                    if prefix.len() > MAX_PREFIX {
                        return Err(SpaceError::Invalid(format!(
                            "a watched prefix has at most {MAX_PREFIX} bytes"
                        )));
                    }
                    space.inner.interests.register(peer, (ns, prefix), lease)
                })
                .map(|()| PeerResponse::Done)
        }
        PeerRequest::Events(events) => space.received(events),
        PeerRequest::Lock(request) => space.handle_lock(peer, request).await,
        PeerRequest::LockState { ns, name, state } => {
            space.hold_lock_state(peer, ns, name, state).await
        }
        PeerRequest::LockStateOf { ns, name, epoch } => {
            space.lock_state_for_peering(ns, name, epoch).await
        }
        PeerRequest::DropNamespace(ns) => repair::drop_namespace(space, &ns)
            .await
            .map(|()| PeerResponse::Done),
        PeerRequest::Index(shards) => space
            .index_from_peer(shards)
            .await
            .map(|()| PeerResponse::Done),
        PeerRequest::IndexHave { ns, shard, held } => space.index_want(ns, shard, held).await,
        PeerRequest::Search {
            ns,
            shard,
            incarnation,
            query,
            after,
        } => {
            space
                .search_here(ns, shard, incarnation, &query, after)
                .await
        }
    };
    result.unwrap_or_else(PeerResponse::Error)
}

/// This node's record of a name, with its value if small and `inline`. The
/// record, and values up to [`IN_PLACE_MAX`], are read in place; larger
/// values on the blocking pool.
async fn head_here(
    space: &ObjectSpace,
    ns: Namespace,
    name: ObjectName,
    inline: bool,
) -> Result<PeerResponse> {
    let store = space.store().clone();
    let record = store.record(&ns, &name)?;
    let value = match &record {
        Some(r) if inline && r.is_live(now_ms()) && r.volatile => store
            .volatile(&ns, &name)
            .map(|entry| entry.value.as_ref().clone()),
        Some(r) if inline && r.is_live(now_ms()) && r.size <= SMALL_MAX => match r.blob {
            Some(hash) if store.has_blob(&hash)? => Some(if r.size <= IN_PLACE_MAX {
                read_small(&store, &hash)?
            } else {
                blocking(move || read_small(&store, &hash)).await?
            }),
            _ => None,
        },
        _ => None,
    };
    Ok(PeerResponse::Head {
        record: record.map(Box::new),
        inline: value,
    })
}

/// A read the key's primary answers alone: every write it acknowledged is
/// here (it acknowledges once stored), and every write of an earlier primary
/// once it has peered, which it does before its first read or write of the
/// key in its epoch. While its membership lease holds no other node is
/// primary of the key (`docs/consistency.md`).
async fn read_as_primary(
    space: &ObjectSpace,
    ns: Namespace,
    name: ObjectName,
    inline: bool,
) -> Result<PeerResponse> {
    let key = object_key(&ns, &name);
    let (map, _) = match as_primary(space, &key).await? {
        Ok(primary) => primary,
        Err(redirect) => return Ok(redirect),
    };
    if !space.inner.peered.done(&key, map.epoch()) {
        // Peering adopts what it gathered: under the key's lock, so a write
        // stored meanwhile is not overwritten by the older copy it read.
        let lock = space.key_lock(key);
        let _ordered = lock.lock().await;
        let (map, _) = match as_primary(space, &key).await? {
            Ok(primary) => primary,
            Err(redirect) => return Ok(redirect),
        };
        crate::peering::peer(space, &map, key, &ns, &name).await?;
    }
    head_here(space, ns, name, inline).await
}

/// This node's map and `key`'s owners in it if this node holds a lease and
/// is the key's primary in its map; else the redirect to the primary.
async fn as_primary(
    space: &ObjectSpace,
    key: &[u8; 32],
) -> Result<std::result::Result<(Arc<p3_membership::Map>, Vec<PeerId>), PeerResponse>> {
    space.check_lease().await?;
    let map = space.membership().map();
    let owners = space.owners_in(&map, key)?;
    if owners.first() != Some(&space.me()) {
        return Ok(Err(PeerResponse::NotPrimary(owners[0].to_string())));
    }
    Ok(Ok((map, owners)))
}

/// Compares a peer's versions with ours: which it should send, which are newer here.
async fn sync(space: &ObjectSpace, entries: Vec<SyncEntry>) -> Result<PeerResponse> {
    if entries.len() > SYNC_BATCH {
        return Err(SpaceError::Invalid(format!(
            "sync of {} entries is over the {SYNC_BATCH} limit",
            entries.len()
        )));
    }
    let store = space.store().clone();
    blocking(move || {
        let mut want = Vec::new();
        let mut newer = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match store.record(&entry.ns, &entry.name)? {
                Some(local) if local.order() > entry.order => newer.push(local),
                Some(local) if local.order() == entry.order => {}
                _ => want.push(i as u32),
            }
        }
        Ok(PeerResponse::Sync { want, newer })
    })
    .await
}
