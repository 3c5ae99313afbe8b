//! The owner's side of the object space: answering other nodes' requests
//! (ordering writes as primary, holding replicas, heads, listings, repair syncs)
//! and the tasks a node runs in the background.

use std::{sync::Arc, time::Duration};

use futures::stream::{FuturesUnordered, StreamExt};
use p3_dht::{Inbound, InboundRequest, PeerId};
use tokio::sync::Semaphore;

use crate::{
    blob::{BlobHash, INLINE_MAX},
    error::{Result, SpaceError},
    key::object_key,
    name::{Namespace, ObjectName},
    object::{now_ms, ObjectRecord},
    protocol::{
        PeerRequest, PeerResponse, SyncEntry, WriteOp, WriteRequest, LIST_BATCH, MAX_PREFIX,
        SYNC_BATCH,
    },
    read::read_small,
    repair,
    space::ObjectSpace,
    store::Pin,
    transfer::{self, blocking},
};

/// Longest a blocking read waits at the primary in one request.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// How long a node waits to apply a map a peer already acts on.
const MAP_WAIT: Duration = Duration::from_secs(2);

/// Peer requests handled at once; more wait in the network layer's queue.
const MAX_HANDLING: usize = 128;
/// Blocking reads parked here at once; more are refused (the reader retries).
const MAX_WAITING: usize = 4096;

/// Starts serving peers (requests and blob streams) and the repair loop.
pub fn start(space: &ObjectSpace, mut inbound: Inbound) -> Result<()> {
    let blobs = space.clone();
    let incoming = space.node().accept_streams(p3_dht::BLOB_PROTOCOL)?;
    tokio::spawn(async move {
        transfer::serve(incoming, blobs.store().clone()).await;
    });
    let requests = space.clone();
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_HANDLING));
        // Blocking reads park for long; they get their own, larger allowance so
        // they never hold up writes.
        let waits = Arc::new(Semaphore::new(MAX_WAITING));
        while let Some(request) = inbound.requests.recv().await {
            let decoded = request.decode::<PeerRequest>();
            let slot = if matches!(decoded, Ok(PeerRequest::WaitNewer { .. })) {
                match waits.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => {
                        let busy = SpaceError::Unavailable("too many blocking reads here".into());
                        let _ = request.respond(&PeerResponse::Error(busy));
                        continue;
                    }
                }
            } else {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                slot
            };
            let space = requests.clone();
            tokio::spawn(async move {
                answer(&space, request, decoded).await;
                drop(slot);
            });
        }
    });
    tokio::spawn(repair::run(space.clone()));
    tokio::spawn(crate::interest::keep(space.clone()));
    Ok(())
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

/// Answers one request from `peer` (which may be this node itself).
pub(crate) async fn handle(
    space: &ObjectSpace,
    peer: PeerId,
    request: PeerRequest,
) -> PeerResponse {
    let result = match request {
        PeerRequest::Write(write) => handle_write(space, write).await,
        PeerRequest::Replicate {
            record,
            inline,
            sources,
            ordered,
        } => {
            let mut sources: Vec<PeerId> = sources.iter().filter_map(|s| s.parse().ok()).collect();
            sources.push(peer);
            match ordered {
                true => match check_primary(space, peer, (&record.ns, &record.name), record.epoch)
                    .await
                {
                    Ok(()) => accept_replica(space, record, inline, &sources).await,
                    Err(e) => Err(e),
                },
                false => accept_replica(space, record, inline, &sources).await,
            }
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
                    if !space.membership().reach_epoch(epoch, MAP_WAIT).await {
                        return PeerResponse::Error(SpaceError::Unavailable(format!(
                            "this node has not applied membership epoch {epoch} yet; retry"
                        )));
                    }
                    Some(space.key_lock(object_key(&ns, &name)).lock_owned().await)
                }
            };
            let store = space.store().clone();
            blocking(move || {
                let record = store.record(&ns, &name)?;
                let value = match &record {
                    Some(r) if inline && r.is_live(now_ms()) && r.volatile => store
                        .volatile(&ns, &name)
                        .map(|entry| entry.value.as_ref().clone()),
                    Some(r) if inline && r.is_live(now_ms()) && r.size <= INLINE_MAX => {
                        match r.blob {
                            Some(hash) if store.has_blob(&hash)? => {
                                Some(read_small(&store, &hash)?)
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                Ok(PeerResponse::Head {
                    record: record.map(Box::new),
                    inline: value,
                })
            })
            .await
        }
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
        PeerRequest::Lock(request) => space.handle_lock(request).await,
        PeerRequest::LockState { ns, name, state } => {
            match check_primary(space, peer, (&ns, &name), state.epoch).await {
                Ok(()) => match space.check_lease() {
                    Ok(()) => space.hold_lock_state(ns, name, state).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        PeerRequest::LockStateOf { ns, name } => space
            .lock_state(crate::key::object_key(&ns, &name))
            .await
            .map(PeerResponse::HeldLockState),
        PeerRequest::DropNamespace(ns) => repair::drop_namespace(space, &ns)
            .await
            .map(|()| PeerResponse::Done),
    };
    result.unwrap_or_else(PeerResponse::Error)
}

/// Makes sure the blob is here (from the message or from `sources`), pinned.
async fn ensure_blob(
    space: &ObjectSpace,
    hash: BlobHash,
    size: u64,
    inline: Option<Vec<u8>>,
    sources: &[PeerId],
) -> Result<Pin> {
    let store = space.store().clone();
    let pin = store.pin(hash);
    let check = store.clone();
    if blocking(move || check.has_blob(&hash)).await? {
        return Ok(pin);
    }
    if size > space.config().max_object_bytes {
        return Err(SpaceError::TooLarge {
            size,
            max: space.config().max_object_bytes,
        });
    }
    if let Some(bytes) = inline {
        if bytes.len() as u64 != size || BlobHash::of(&bytes) != hash {
            return Err(SpaceError::Corrupt(format!(
                "inline value does not match {hash}"
            )));
        }
        let mut ingest = space.ingest();
        let pin = blocking(move || {
            ingest.push(&bytes)?;
            let (_, _, pin) = ingest.finish()?;
            Ok(pin)
        })
        .await?;
        space.announce(hash);
        return Ok(pin);
    }
    let (manifest, pin) = transfer::fetch(space.node(), &store, hash, sources, None).await?;
    if manifest.size() != size {
        return Err(SpaceError::Corrupt(format!(
            "blob {hash} has {} bytes, not the {size} its record says",
            manifest.size()
        )));
    }
    space.announce(hash);
    Ok(pin)
}

/// The primary's part of a write: order it after every earlier write of the
/// key, store it, and have the other owners store it before answering.
async fn handle_write(space: &ObjectSpace, write: WriteRequest) -> Result<PeerResponse> {
    let me = space.me();
    let key = object_key(&write.ns, &write.name);
    // One map for the whole write: its owners, its stamp and its peering.
    let map = space.membership().map();
    let owners = space.owners_in(&map, &key)?;
    space.check_lease()?;
    if owners.first() != Some(&me) {
        return Ok(PeerResponse::NotPrimary(owners[0].to_string()));
    }
    let origin: Option<PeerId> = write.origin.parse().ok();
    let _pin = match &write.op {
        WriteOp::Put {
            blob,
            size,
            volatile: true,
            ..
        } => {
            volatile_value(*blob, *size, write.inline.as_deref())?;
            None
        }
        WriteOp::Put { blob, size, .. } => {
            let sources: Vec<PeerId> = origin.into_iter().collect();
            Some(ensure_blob(space, *blob, *size, write.inline.clone(), &sources).await?)
        }
        WriteOp::Remove => None,
    };
    let path = format!("{}/{}", write.ns, write.name);
    let lock = space.key_lock(key);
    let _ordered = lock.lock().await;
    crate::peering::peer(space, &map, key, &write.ns, &write.name).await?;
    space
        .lock_state(key)
        .await?
        .admits(&path, write.token, now_ms())?;
    for attempt in 0..3 {
        let store = space.store().clone();
        let (ns, name) = (write.ns.clone(), write.name.clone());
        let current = blocking(move || store.record(&ns, &name)).await?;
        let now = now_ms();
        let live_version = current.as_ref().map_or(0, |c| c.live_version(now));
        if let Some(expected) = write.if_version {
            if expected != live_version && attempt > 0 {
                // The first attempt is already on some owners (and may be
                // read before the newer copy replaces it): not a conflict
                // the client can trust.
                return Err(SpaceError::Unavailable(format!(
                    "the write to {path} may or may not have been applied: an owner held a newer version ({live_version}) than this primary; read it and retry"
                )));
            }
            if expected != live_version {
                return Err(SpaceError::VersionConflict {
                    path,
                    expected,
                    current: live_version,
                });
            }
        }
        let version = current.as_ref().map_or(0, |c| c.version) + 1;
        let created = match &current {
            Some(c) if live_version > 0 => c.created_ms,
            _ => now,
        };
        let record = match &write.op {
            WriteOp::Put {
                blob,
                size,
                type_tag,
                meta,
                ttl_ms,
                volatile,
            } => ObjectRecord {
                ns: write.ns.clone(),
                name: write.name.clone(),
                version,
                ns_incarnation: write.ns_incarnation,
                blob: Some(*blob),
                size: *size,
                type_tag: type_tag.clone(),
                meta: meta.clone(),
                created_ms: created,
                modified_ms: now,
                expires_ms: ttl_ms.map(|t| now.saturating_add(t)),
                volatile: *volatile,
                epoch: map.epoch(),
            },
            WriteOp::Remove => {
                if live_version == 0 {
                    return Err(SpaceError::NotFound(path));
                }
                ObjectRecord {
                    ns: write.ns.clone(),
                    name: write.name.clone(),
                    version,
                    ns_incarnation: write.ns_incarnation,
                    blob: None,
                    size: 0,
                    type_tag: String::new(),
                    meta: Default::default(),
                    created_ms: created,
                    modified_ms: now,
                    expires_ms: None,
                    // A removal is as durable as what it removes.
                    volatile: current.as_ref().is_some_and(|c| c.volatile),
                    epoch: map.epoch(),
                }
            }
        };
        store_record(space, &record, write.inline.as_deref()).await?;

        let mut replicas: FuturesUnordered<_> = owners
            .iter()
            .filter(|p| **p != me)
            .map(|&peer| {
                let request = PeerRequest::Replicate {
                    record: record.clone(),
                    inline: write.inline.clone(),
                    sources: vec![me.to_string()],
                    ordered: true,
                };
                let space = space.clone();
                async move { (peer, space.ask_owner(peer, request).await) }
            })
            .collect();
        // Acknowledged once every owner holds it, as Ceph does: then any one
        // owner of the interval holds every acknowledged write, so a key
        // stays writable after a change of owners as long as one of the old
        // owners answers (a majority would leave the newest write on the
        // side of a partition that lost the key). An owner that is down holds
        // writes up until the group removes it (its lease plus drift).
        let needed = owners.len();
        let mut acked = 1;
        let mut newer: Option<(PeerId, ObjectRecord)> = None;
        while acked < needed {
            let Some((peer, answer)) = replicas.next().await else {
                break;
            };
            match answer {
                Ok(PeerResponse::Replicated) => acked += 1,
                Ok(PeerResponse::Stale(theirs)) => {
                    if newer
                        .as_ref()
                        .is_none_or(|(_, n)| theirs.order() > n.order())
                    {
                        newer = Some((peer, *theirs));
                    }
                }
                Ok(other) => tracing::warn!(%peer, ?other, "unexpected answer to replicate"),
                Err(e) => tracing::debug!(%peer, error = %e, "replica unreachable"),
            }
        }
        if !replicas.is_empty() {
            tokio::spawn(async move { while replicas.next().await.is_some() {} });
        }
        if let Some((peer, theirs)) = newer {
            // An owner saw a write this node missed (it was not primary then):
            // adopt it and order this write after it.
            adopt(space, theirs, None, &[peer]).await?;
            continue;
        }
        if acked < needed {
            return Err(SpaceError::NotEnoughOwners {
                path,
                acked,
                needed,
            });
        }
        space.written(&record);
        return Ok(PeerResponse::Written { record, acked });
    }
    Err(SpaceError::Unavailable(format!(
        "the owners of {path} keep disagreeing about its newest version; retry"
    )))
}

/// Refuses a write `sender` ordered unless this node's map (once it has
/// applied the map the write was ordered in) makes `sender` the key's primary
/// and this node one of its owners: a primary that lost the key must not
/// reach a majority with owners that already serve its successor.
async fn check_primary(
    space: &ObjectSpace,
    sender: PeerId,
    (ns, name): (&Namespace, &ObjectName),
    epoch: u64,
) -> Result<()> {
    let membership = space.membership();
    if !membership.reach_epoch(epoch, MAP_WAIT).await {
        return Err(SpaceError::Unavailable(format!(
            "this node has not applied membership epoch {epoch} yet; retry"
        )));
    }
    let map = membership.map();
    let owners = space.owners_in(&map, &object_key(ns, name))?;
    if owners.first() == Some(&sender) && owners.contains(&space.me()) {
        return Ok(());
    }
    Err(SpaceError::Unavailable(format!(
        "{sender} is not the primary of {ns}/{name} at membership epoch {}; refused",
        map.epoch()
    )))
}

/// A replica's part: hold `record` unless a newer version is already here.
pub(crate) async fn accept_replica(
    space: &ObjectSpace,
    record: ObjectRecord,
    inline: Option<Vec<u8>>,
    sources: &[PeerId],
) -> Result<PeerResponse> {
    space.check_lease()?;
    let lock = space.key_lock(object_key(&record.ns, &record.name));
    let _ordered = lock.lock().await;
    adopt(space, record, inline, sources).await
}

/// [`accept_replica`] for a caller that holds the key's lock already.
pub(crate) async fn adopt(
    space: &ObjectSpace,
    record: ObjectRecord,
    inline: Option<Vec<u8>>,
    sources: &[PeerId],
) -> Result<PeerResponse> {
    let store = space.store().clone();
    let (ns, name) = (record.ns.clone(), record.name.clone());
    let local = blocking(move || store.record(&ns, &name)).await?;
    if let Some(local) = local {
        if local.order() == record.order() {
            return Ok(PeerResponse::Replicated);
        }
        if local.order() > record.order() {
            return Ok(PeerResponse::Stale(Box::new(local)));
        }
    }
    if record.volatile {
        let mut inline = inline;
        if let Some(hash) = record.blob {
            if inline.is_none() {
                inline = fetch_volatile(space, &record, sources).await;
            }
            volatile_value(hash, record.size, inline.as_deref())?;
        }
        store_record(space, &record, inline.as_deref()).await?;
        return Ok(PeerResponse::Replicated);
    }
    let _pin = match record.blob {
        Some(hash) => Some(ensure_blob(space, hash, record.size, inline, sources).await?),
        None => None,
    };
    store_record(space, &record, None).await?;
    Ok(PeerResponse::Replicated)
}

/// The value of a volatile record from one of `sources` that holds the same
/// version (repair and adoption learn of records without their values).
async fn fetch_volatile(
    space: &ObjectSpace,
    record: &ObjectRecord,
    sources: &[PeerId],
) -> Option<Vec<u8>> {
    for &peer in sources {
        let head = PeerRequest::Head {
            ns: record.ns.clone(),
            name: record.name.clone(),
            inline: true,
            epoch: 0,
        };
        if let Ok(PeerResponse::Head {
            record: Some(theirs),
            inline: Some(value),
        }) = Box::pin(space.ask(peer, head)).await
        {
            if theirs.order() == record.order() {
                return Some(value);
            }
        }
    }
    None
}

/// Checks that a volatile value came with its message and is the one named.
fn volatile_value(hash: BlobHash, size: u64, inline: Option<&[u8]>) -> Result<()> {
    let bytes = inline.ok_or_else(|| {
        SpaceError::Invalid("a volatile value must come inside the message".into())
    })?;
    if bytes.len() as u64 != size || BlobHash::of(bytes) != hash {
        return Err(SpaceError::Corrupt(format!(
            "volatile value does not match {hash}"
        )));
    }
    Ok(())
}

/// Stores a record: volatile ones in memory with their (checked) value, the
/// others durably (their blob must be here).
async fn store_record(
    space: &ObjectSpace,
    record: &ObjectRecord,
    inline: Option<&[u8]>,
) -> Result<()> {
    let store = space.store().clone();
    let record = record.clone();
    // A volatile write may still delete a durable record of the name.
    let value = match (&record.blob, inline) {
        (Some(_), Some(bytes)) if record.volatile => bytes.to_vec(),
        _ => Vec::new(),
    };
    blocking(move || {
        if record.volatile {
            store.put_volatile(record, value)
        } else {
            store.put_record(&record)
        }
    })
    .await
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
