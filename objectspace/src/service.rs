//! The owner's side of the object space: answering other nodes' requests
//! (ordering writes as primary, heads, listings, repair syncs; holding
//! replicas is [`crate::replica`]) and the tasks a node runs in the background.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::stream::{FuturesUnordered, StreamExt};
use p3_dht::{Inbound, InboundRequest, PeerId};
use tokio::sync::Semaphore;

use crate::{
    admission::{FairQueue, Parked, PeerBounds},
    blob::SMALL_MAX,
    error::{Result, SpaceError},
    key::object_key,
    lock::LockRequest,
    name::{Namespace, ObjectName},
    object::now_ms,
    ordering::{self, Attempt, Tally},
    protocol::{
        PeerRequest, PeerResponse, SyncEntry, WriteOp, WriteRequest, LIST_BATCH, MAX_PREFIX,
        SYNC_BATCH,
    },
    read::read_small,
    repair,
    replica::{
        accept_replica, adopt, check_registry, reach, store_record, store_with_value,
        volatile_value, IN_PLACE_MAX,
    },
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

/// The primary's part of a write: order it after every earlier write of the
/// key, store it, and have the other owners store it before answering. Each
/// acknowledged write is logged at debug level with how long each phase took
/// (`RUST_LOG=p3_objectspace::service=debug`): the profile of the write path.
/// Its own copy and the replicas' run at once, so they overlap.
async fn handle_write(space: &ObjectSpace, write: WriteRequest) -> Result<PeerResponse> {
    let started = Instant::now();
    let me = space.me();
    let key = object_key(&write.ns, &write.name);
    // A redirect before the value is fetched; decided again under the lock.
    if let Err(redirect) = as_primary(space, &key).await? {
        return Ok(redirect);
    }
    // The value moves once the write is ordered: this node and the other
    // owners then fetch it from the writer at once (they used to fetch it
    // from this node after it had, so a large value crossed the network in
    // two rounds, one after the other).
    let durable_value = match &write.op {
        WriteOp::Put {
            blob,
            size,
            volatile: true,
            ..
        } => {
            volatile_value(*blob, *size, write.inline.as_deref())?;
            false
        }
        WriteOp::Put { size, .. } => {
            let max = space.config().max_object_bytes;
            if *size > max {
                return Err(SpaceError::TooLarge { size: *size, max });
            }
            true
        }
        WriteOp::Remove => false,
    };
    let origin: Vec<PeerId> = write
        .origin
        .parse()
        .into_iter()
        .filter(|p| *p != me)
        .collect();
    // Where a replica fetches a value that did not come with the request;
    // one that did needs none (and each costs a replica a base58 decode).
    let sources: Vec<String> = match write.inline {
        Some(_) => Vec::new(),
        None => origin
            .iter()
            .map(|p| p.to_string())
            .chain([space.me_text().to_owned()])
            .collect(),
    };
    let path = format!("{}/{}", write.ns, write.name);
    let lock = space.key_lock(key);
    let _ordered = lock.lock().await;
    // One map for the whole write (its owners, its stamp and its peering),
    // taken under the key's lock: while this write waited for it, the map
    // may have moved the key to a successor that has peered it since (this
    // node answered under the same lock). Ordered on the older map, the
    // write would reach owners that have not applied the new one yet, be
    // acknowledged, and be missed by the successor: two acknowledged
    // increments from one read in the nemesis suite's 2|3 split.
    let (map, owners) = match as_primary(space, &key).await? {
        Ok(primary) => primary,
        Err(redirect) => return Ok(redirect),
    };
    // An origin that is an owner here too stores the ordered record itself
    // (checking, as any replica does, that this node is its primary) and
    // only then answers its client: it is sent no replica.
    let origin_stores = origin
        .first()
        .copied()
        .filter(|o| write.origin_stores && owners.contains(o));
    crate::peering::peer(space, &map, key, &write.ns, &write.name).await?;
    space
        .lock_state(key)
        .await?
        .admits(&path, write.token, now_ms())?;
    let signed = space
        .inner
        .namespaces
        .writers(space, &write.ns)
        .await?
        .is_some();
    for attempt in 0..3 {
        // A record read hits the memtable or block cache: microseconds,
        // less than a trip through the blocking pool costs.
        let current = space.store().record(&write.ns, &write.name)?;
        let mut record =
            ordering::next_record(current.as_ref(), &write, attempt > 0, now_ms(), map.epoch())?;
        if signed {
            record.signature = Some(crate::signing::obtain(space, &write, &record).await?);
            (space.inner.namespaces)
                .check(space, &write.ns, |w| w.check_record(&record, true))
                .await?;
        }
        if crate::namespaces::is_registry(&record) {
            check_registry(space, current.as_ref(), &record, write.inline.as_deref()).await?;
        }
        // This node stores the write while the other owners do: it
        // acknowledges only once everyone holds it, so its own copy need not
        // come first.
        let mut replicas: FuturesUnordered<_> = owners
            .iter()
            .filter(|p| **p != me && Some(**p) != origin_stores)
            .map(|&peer| {
                let request = PeerRequest::Replicate {
                    record: record.clone(),
                    inline: write.inline.clone(),
                    sources: sources.clone(),
                    ordered: true,
                };
                let space = space.clone();
                async move { (peer, space.ask_owner(peer, request).await) }
            })
            .collect();
        let mut tally = Tally::new(me, &owners);
        if let Some(origin) = origin_stores {
            tally.leave_to(origin);
        }
        let sent = Instant::now();
        let prepared = sent - started;
        let answers = async {
            while !tally.complete() {
                let Some((peer, answer)) = replicas.next().await else {
                    break;
                };
                if let Err(e) = &answer {
                    tracing::debug!(%peer, error = %e, "replica unreachable");
                }
                tally.answer(peer, &answer);
            }
            sent.elapsed()
        };
        let store = async {
            let stored = if durable_value {
                store_with_value(space, &record, write.inline.clone(), &origin).await
            } else {
                store_record(space, &record, write.inline.as_deref()).await
            };
            (stored, sent.elapsed())
        };
        // The requests go out first; then this node's own write.
        let (replicated, (stored, stored_in)) = tokio::join!(answers, store);
        if !replicas.is_empty() {
            tokio::spawn(async move { while replicas.next().await.is_some() {} });
        }
        if let Err(e) = stored {
            // Other owners may hold it now.
            return Err(SpaceError::OutcomeUnknown(format!(
                "the write to {path} may or may not have been applied (its primary could not store it: {e}); read it before retrying"
            )));
        }
        match tally.outcome() {
            Attempt::Acknowledged(acked) => {
                space.written(&record, write.inline.as_deref());
                tracing::debug!(
                    %path,
                    version = record.version,
                    prepared_us = prepared.as_micros(),
                    stored_us = stored_in.as_micros(),
                    replicated_us = replicated.as_micros(),
                    total_us = started.elapsed().as_micros(),
                    "write acknowledged"
                );
                return Ok(match origin_stores {
                    Some(_) => PeerResponse::Ordered {
                        record,
                        acked: acked - 1,
                    },
                    None => PeerResponse::Written { record, acked },
                });
            }
            // An owner saw a write this node missed (it was not primary
            // then): adopt it and order this write after it.
            Attempt::Adopt(peer, theirs) => {
                adopt(space, theirs, None, &[peer]).await?;
            }
            Attempt::Short { acked, needed } => {
                return Err(SpaceError::NotEnoughOwners {
                    path,
                    acked,
                    needed,
                })
            }
        }
    }
    Err(SpaceError::Unavailable(format!(
        "the owners of {path} keep disagreeing about its newest version; retry"
    )))
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
) -> Result<std::result::Result<(p3_membership::Map, Vec<PeerId>), PeerResponse>> {
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
