//! The replica's side of the object space: holding a record that a primary
//! ordered or repair brought, with its value, and refusing writes from a node
//! that is not the key's primary in this node's map.

use std::time::Duration;

use p3_dht::PeerId;

use crate::{
    blob::BlobHash,
    error::{Result, SpaceError},
    key::object_key,
    name::{Namespace, ObjectName},
    object::ObjectRecord,
    ordering::{self, Incoming},
    protocol::{PeerRequest, PeerResponse},
    read::read_small,
    space::ObjectSpace,
    store::Pin,
    transfer::{self, blocking},
};

/// Values up to this size are stored by the task that received them, not on
/// the blocking pool: a small write costs less than the hop.
pub(crate) const IN_PLACE_MAX: u64 = 16 << 10;

/// How long a node waits to apply a map a peer already acts on.
pub(crate) const MAP_WAIT: Duration = Duration::from_secs(2);

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
    if store.has_blob(&hash)? {
        return Ok(pin);
    }
    if size > space.config().max_object_bytes {
        return Err(SpaceError::TooLarge {
            size,
            max: space.config().max_object_bytes,
        });
    }
    if let Some(bytes) = inline {
        check_inline(hash, size, &bytes)?;
        let mut ingest = space.ingest();
        let store_it = move || {
            ingest.push(&bytes)?;
            let (_, _, pin) = ingest.finish()?;
            Ok(pin)
        };
        // Small values are stored in place; larger ones are worth the hop.
        let pin = if size <= IN_PLACE_MAX {
            store_it()?
        } else {
            blocking(store_it).await?
        };
        space.announce(hash, size);
        return Ok(pin);
    }
    let (manifest, pin) = transfer::fetch(space.node(), &store, hash, sources, None).await?;
    if manifest.size() != size {
        return Err(SpaceError::Corrupt(format!(
            "blob {hash} has {} bytes, not the {size} its record says",
            manifest.size()
        )));
    }
    space.announce(hash, size);
    Ok(pin)
}

/// Checks that a value that came inside a message is the one named.
fn check_inline(hash: BlobHash, size: u64, bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 != size || BlobHash::of(bytes) != hash {
        return Err(SpaceError::Corrupt(format!(
            "inline value does not match {hash}"
        )));
    }
    Ok(())
}

/// The value of a durable `record`, made local and pinned ([`ensure_blob`]);
/// `None` for a record without one.
async fn ensure_value(
    space: &ObjectSpace,
    record: &ObjectRecord,
    inline: Option<Vec<u8>>,
    sources: &[PeerId],
) -> Result<Option<Pin>> {
    match record.blob {
        Some(hash) => Ok(Some(
            ensure_blob(space, hash, record.size, inline, sources).await?,
        )),
        None => Ok(None),
    }
}

/// Stores a durable `record` with its value. A small value that came inside
/// the message is stored in the same write as the record
/// ([`crate::store::Store::put_record_with_value`]); any other is made local
/// first.
pub(crate) async fn store_with_value(
    space: &ObjectSpace,
    record: &ObjectRecord,
    inline: Option<Vec<u8>>,
    sources: &[PeerId],
) -> Result<()> {
    if let (Some(hash), Some(bytes)) = (record.blob, inline.as_deref()) {
        let max = space.config().max_object_bytes;
        if record.size <= IN_PLACE_MAX.min(max) {
            check_inline(hash, record.size, bytes)?;
            return space.store().put_record_with_value(record, bytes).await;
        }
    }
    let _pin = ensure_value(space, record, inline, sources).await?;
    store_record(space, record, None).await
}

/// Waits (up to [`MAP_WAIT`]) until this node has applied membership epoch
/// `epoch`: the map a peer ordered a write in, or peers a key in.
pub(crate) async fn reach(space: &ObjectSpace, epoch: u64) -> Result<()> {
    if space.membership().reach_epoch(epoch, MAP_WAIT).await {
        return Ok(());
    }
    Err(SpaceError::Unavailable(format!(
        "this node has not applied membership epoch {epoch} yet; retry"
    )))
}

/// Refuses a write `sender` ordered unless this node's current map makes
/// `sender` the key's primary and this node one of its owners: a primary that
/// lost the key must not reach a majority with owners that already serve its
/// successor.
///
/// Called under the key's lock (after [`reach`] for the write's epoch): a
/// primary of a later epoch peers the key through the same lock once this
/// node serves that epoch, so a write checked before the peering is held when
/// the peering reads the key, and one checked after it is refused. Checked
/// before taking the lock, a write could pass at the old epoch, wait for the
/// lock while the peering answered, then be stored and acknowledged unseen
/// by the new primary (an acknowledged CAS write lost under a partition).
pub(crate) fn check_primary(
    space: &ObjectSpace,
    sender: PeerId,
    (ns, name): (&Namespace, &ObjectName),
) -> Result<()> {
    let map = space.membership().map();
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
/// `ordered_by` is the primary that ordered it, checked against this node's
/// map ([`check_primary`]); `None` for a copy repair brought.
pub(crate) async fn accept_replica(
    space: &ObjectSpace,
    record: ObjectRecord,
    inline: Option<Vec<u8>>,
    sources: &[PeerId],
    ordered_by: Option<PeerId>,
) -> Result<PeerResponse> {
    let started = std::time::Instant::now();
    let accepted = async {
        if ordered_by.is_some() {
            reach(space, record.epoch).await?;
        }
        space.check_lease().await?;
        let lock = space.key_lock(object_key(&record.ns, &record.name));
        let _ordered = lock.lock().await;
        if let Some(sender) = ordered_by {
            check_primary(space, sender, (&record.ns, &record.name))?;
        }
        // Boxed: this runs inside repair's and the service's large futures.
        Box::pin(adopt(space, record, inline, sources)).await
    }
    .await;
    // Beside the primary's "write acknowledged": its wait for the replicas
    // less this is the trip.
    tracing::debug!(
        took_us = started.elapsed().as_micros(),
        ok = accepted.is_ok(),
        "replica"
    );
    crate::metrics::replica_stored(accepted.is_ok());
    accepted
}

/// [`accept_replica`] for a caller that holds the key's lock already.
pub(crate) async fn adopt(
    space: &ObjectSpace,
    record: ObjectRecord,
    inline: Option<Vec<u8>>,
    sources: &[PeerId],
) -> Result<PeerResponse> {
    let local = space.store().record(&record.ns, &record.name)?;
    match ordering::incoming(local.as_ref(), &record) {
        Incoming::Same => return Ok(PeerResponse::Replicated),
        Incoming::Stale(ours) => return Ok(PeerResponse::Stale(ours)),
        Incoming::Store => {}
    }
    // Nothing unsigned, or signed by someone who never was a writer, enters
    // a writer-only namespace, whoever sends it.
    (space.inner.namespaces)
        .check(space, &record.ns, |w| w.check_record(&record, false))
        .await?;
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
    if crate::namespaces::is_registry(&record) {
        // The check reads the new value from the store: it goes first.
        let _pin = ensure_value(space, &record, inline, sources).await?;
        check_registry(space, local.as_ref(), &record, None).await?;
        store_record(space, &record, None).await?;
    } else {
        store_with_value(space, &record, inline, sources).await?;
    }
    Ok(PeerResponse::Replicated)
}

/// An owner's check of a new version of the namespace registry (its value
/// `value`, or else read from the local store) against the version it
/// holds: no writer-only namespace's history may be dropped or rewritten.
pub(crate) async fn check_registry(
    space: &ObjectSpace,
    current: Option<&ObjectRecord>,
    record: &ObjectRecord,
    value: Option<&[u8]>,
) -> Result<()> {
    let store = space.store().clone();
    let read = |r: Option<&ObjectRecord>| -> Result<Option<Vec<u8>>> {
        match r
            .filter(|r| r.is_live(crate::object::now_ms()))
            .and_then(|r| r.blob)
        {
            Some(hash) => read_small(&store, &hash).map(Some),
            None => Ok(None),
        }
    };
    let old = read(current)?;
    let new = match value {
        Some(bytes) => Some(bytes.to_vec()),
        None => read(Some(record))?,
    };
    crate::namespaces::check_registry_change(old.as_deref(), new.as_deref())
}

/// The value of a volatile record from one of `sources` that holds the same
/// version (repair and adoption learn of records without their values).
pub(crate) async fn fetch_volatile(
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
pub(crate) fn volatile_value(hash: BlobHash, size: u64, inline: Option<&[u8]>) -> Result<()> {
    let bytes = inline.ok_or_else(|| {
        SpaceError::Invalid("a volatile value must come inside the message".into())
    })?;
    check_inline(hash, size, bytes)
}

/// Stores a record: volatile ones in memory with their (checked) value, the
/// others durably (their blob must be here).
pub(crate) async fn store_record(
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
    if record.volatile {
        return blocking(move || store.put_volatile(record, value)).await;
    }
    store.put_record_async(&record).await
}
