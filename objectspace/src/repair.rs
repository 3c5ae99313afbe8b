//! Keeping every object at R copies, and the local store tidy.
//!
//! Volatile records take part like durable ones (their values travel inside
//! the messages), so a volatile object outlives any owner but the last.
//!
//! A repair round walks the local records in key order, a page at a time. For
//! each record it computes the owners from the live view; to every other owner
//! it sends the versions it holds ([`PeerRequest::Sync`]); the owner answers
//! which it lacks (they are pushed to it) and which it holds newer (they are
//! adopted). Records this node no longer owns are dropped once every owner has
//! confirmed holding them. Rounds run when the set of live peers changes and
//! every `repair_interval` otherwise.
//!
//! The same walk drops what should no longer be kept: expired objects and old
//! tombstones after a grace period, and objects of removed namespaces; and, for
//! the objects this node is primary of, checks that the search index knows
//! their current versions.

use std::{collections::HashMap, time::Duration};

use futures::future::join_all;
use p3_dht::{Connections, PeerId};

use crate::{
    blob::INLINE_MAX,
    error::Result,
    key::{blob_provider_key, object_key},
    name::Namespace,
    namespaces::Registry,
    object::{now_ms, ObjectRecord},
    protocol::{PeerRequest, PeerResponse, SyncEntry, SYNC_BATCH},
    read::read_small,
    replica::accept_replica,
    space::ObjectSpace,
    store::record_key,
    transfer::blocking,
};

/// How long tombstones are kept so late replicas cannot bring a removed object back.
const TOMBSTONE_KEEP_MS: u64 = 3_600_000;
/// How long an expired object lingers in storage (it is invisible at once).
const EXPIRED_KEEP_MS: u64 = 60_000;
/// Records younger than this are never dropped for their namespace: the
/// namespace may have been created after this node last read the list.
const NAMESPACE_GRACE_MS: u64 = 60_000;
/// How often the loop looks at the set of live peers.
const WATCH_PEERS: Duration = Duration::from_secs(1);

/// Runs repair rounds until the node stops.
pub async fn run(space: ObjectSpace) {
    let mut last_peers: Vec<PeerId> = Vec::new();
    let mut last_epoch = 0;
    let mut last_round = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(WATCH_PEERS).await;
        let Ok(mut peers) = space.node().connected().await else {
            return; // the node is stopping
        };
        // With on-demand connections peers connect and part as the work
        // goes; a member that was away comes back through the map instead
        // (a new epoch).
        if space.node().connections() == Connections::OnDemand {
            peers.clear();
        }
        peers.sort();
        // A new map moves owners; a peer that came back may have missed writes.
        let epoch = space.membership().map().epoch();
        let due = last_round.elapsed() >= space.config().repair_interval;
        if peers == last_peers && epoch == last_epoch && !due {
            continue;
        }
        last_peers = peers;
        last_epoch = epoch;
        last_round = tokio::time::Instant::now();
        if let Err(e) = round(&space).await {
            tracing::warn!(error = %e, "repair round failed");
        }
    }
}

/// One pass over every local record.
pub async fn round(space: &ObjectSpace) -> Result<()> {
    let me = space.me();
    let started = now_ms();
    let mut after: Option<Vec<u8>> = None;
    let (mut pushed, mut handed_off) = (0usize, 0usize);
    // Read once, and only when there are records: every node runs a round
    // at every new epoch, and a node holding nothing need not ask.
    let mut registry: Option<Option<Registry>> = None;
    loop {
        let store = space.store().clone();
        let from = after.clone();
        let page = blocking(move || store.all_records(from.as_deref(), SYNC_BATCH)).await?;
        let Some(last) = page.last() else { break };
        after = Some(record_key(&last.ns, &last.name));
        if registry.is_none() {
            // Without a fresh namespace list nothing is dropped for its namespace.
            let fetched = space.inner.namespaces.fetch(space).await;
            registry = Some(fetched.ok().map(|(r, _)| r));
        }
        let known = registry.as_ref().and_then(Option::as_ref);

        let mut per_owner: HashMap<PeerId, Vec<ObjectRecord>> = HashMap::new();
        let mut not_mine = Vec::new();
        let mut primary_of = Vec::new();
        for record in page {
            if should_drop(&record, known, started) {
                drop_record(space, &record).await?;
                continue;
            }
            let owners = space.owners_now(&object_key(&record.ns, &record.name));
            if owners.is_empty() {
                continue; // no map yet: nothing is anybody's to move
            }
            if owners.first() == Some(&me) && !record.volatile {
                primary_of.push(record.clone());
            }
            for owner in owners.iter().filter(|o| **o != me) {
                per_owner.entry(*owner).or_default().push(record.clone());
            }
            if !owners.contains(&me) {
                not_mine.push((record, owners));
            }
        }
        let syncs = per_owner
            .into_iter()
            .map(|(peer, records)| async move { (peer, sync_with(space, peer, records).await) });
        let mut confirmed: HashMap<PeerId, Vec<Vec<u8>>> = HashMap::new();
        for (peer, result) in join_all(syncs).await {
            match result {
                Ok((keys, n)) => {
                    pushed += n;
                    confirmed.insert(peer, keys);
                }
                Err(e) => tracing::debug!(%peer, error = %e, "repair sync failed"),
            }
        }
        space.audit_index(primary_of).await;
        for (record, owners) in not_mine {
            let key = record_key(&record.ns, &record.name);
            let everywhere = owners
                .iter()
                .all(|o| confirmed.get(o).is_some_and(|keys| keys.contains(&key)));
            if everywhere && drop_record(space, &record).await? {
                handed_off += 1;
            }
        }
    }
    sweep_index(space).await?;
    for hash in space.store().take_evicted() {
        let _ = space
            .node()
            .stop_providing(blob_provider_key(&hash.0))
            .await;
    }
    let store = space.store().clone();
    blocking(move || store.collect_garbage()).await?;
    crate::metrics::repair_round(pushed as u64, handed_off as u64);
    if pushed + handed_off > 0 {
        tracing::info!(pushed, handed_off, "repair round done");
    }
    Ok(())
}

/// Expires index rows of expired objects and forgets old removal markers,
/// a page at a time.
async fn sweep_index(space: &ObjectSpace) -> Result<()> {
    let now = now_ms();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let store = space.store().clone();
        let from = after.take();
        match blocking(move || store.sweep_index(now, from.as_deref(), SWEEP_PAGE)).await? {
            Some(last) => after = Some(last),
            None => return Ok(()),
        }
    }
}

/// Index rows one step of the sweep reads.
const SWEEP_PAGE: usize = 1024;

fn should_drop(record: &ObjectRecord, registry: Option<&Registry>, now: u64) -> bool {
    let old = |ms: u64, keep: u64| ms.saturating_add(keep) < now;
    if record.blob.is_none() && old(record.modified_ms, TOMBSTONE_KEEP_MS) {
        return true;
    }
    if record.expires_ms.is_some_and(|t| old(t, EXPIRED_KEEP_MS)) {
        return true;
    }
    registry
        .is_some_and(|r| namespace_gone(r, record) && old(record.modified_ms, NAMESPACE_GRACE_MS))
}

/// Whether `record`'s namespace (its incarnation) no longer exists. For a
/// signed record only a writer's signed removal says so: an owner that lies
/// about the registry (omitting the namespace) cannot forge one.
fn namespace_gone(registry: &Registry, record: &ObjectRecord) -> bool {
    if record.signature.is_some() {
        return registry
            .writers(&record.ns)
            .is_some_and(|w| w.is_closed() || w.incarnation != record.ns_incarnation);
    }
    registry.incarnation(&record.ns) != Some(record.ns_incarnation)
}

/// Drops the local copy of `record` if it is still that version, under the
/// key's lock: a write or adoption that stored a newer one meanwhile (repair
/// reads its pages without the lock) is kept. Whether it was dropped.
async fn drop_record(space: &ObjectSpace, record: &ObjectRecord) -> Result<bool> {
    let lock = space.key_lock(object_key(&record.ns, &record.name));
    let _ordered = lock.lock().await;
    let store = space.store().clone();
    let (ns, name, order) = (record.ns.clone(), record.name.clone(), record.order());
    blocking(move || {
        if store
            .record(&ns, &name)?
            .is_some_and(|r| r.order() == order)
        {
            store.delete_record(&ns, &name)?;
            return Ok(true);
        }
        Ok(false)
    })
    .await
}

/// Syncs `records` with `peer`; returns the keys it now holds at least as new,
/// and how many were pushed to it.
async fn sync_with(
    space: &ObjectSpace,
    peer: PeerId,
    records: Vec<ObjectRecord>,
) -> Result<(Vec<Vec<u8>>, usize)> {
    let entries = records
        .iter()
        .map(|r| SyncEntry {
            ns: r.ns.clone(),
            name: r.name.clone(),
            order: r.order(),
        })
        .collect();
    let PeerResponse::Sync { want, newer } = space.ask(peer, PeerRequest::Sync(entries)).await?
    else {
        return Ok((Vec::new(), 0));
    };
    let mut held: Vec<bool> = vec![true; records.len()];
    for &i in &want {
        if let Some(slot) = held.get_mut(i as usize) {
            *slot = false;
        }
    }
    let mut pushed = 0;
    for (i, record) in records.iter().enumerate() {
        if held[i] {
            continue;
        }
        let inline = match record.blob {
            Some(_) if record.volatile => space
                .store()
                .volatile(&record.ns, &record.name)
                .filter(|e| e.record.order() == record.order())
                .map(|e| e.value.as_ref().clone()),
            Some(hash) if record.size <= INLINE_MAX => {
                let store = space.store().clone();
                blocking(move || read_small(&store, &hash)).await.ok()
            }
            _ => None,
        };
        let request = PeerRequest::Replicate {
            record: record.clone(),
            inline,
            sources: vec![space.me_text().to_owned()],
            ordered: false,
        };
        match space.ask(peer, request).await {
            Ok(PeerResponse::Replicated) => {
                held[i] = true;
                pushed += 1;
            }
            Ok(_) => held[i] = true, // it holds something newer
            Err(e) => tracing::debug!(%peer, error = %e, "repair push failed"),
        }
    }
    for record in newer {
        if let Err(e) = accept_replica(space, record, None, &[peer], None).await {
            tracing::debug!(%peer, error = %e, "cannot adopt a newer version");
        }
    }
    let keys = records
        .iter()
        .zip(held)
        .filter(|(_, h)| *h)
        .map(|(r, _)| record_key(&r.ns, &r.name))
        .collect();
    Ok((keys, pushed))
}

/// Drops every local record of `ns` that the namespace list no longer covers.
pub async fn drop_namespace(space: &ObjectSpace, ns: &Namespace) -> Result<()> {
    let (registry, _) = space.inner.namespaces.fetch(space).await?;
    let keep = registry.incarnation(ns);
    if keep.is_none() && registry.writers(ns).is_none_or(|w| w.is_closed()) {
        let store = space.store().clone();
        let gone = ns.clone();
        blocking(move || store.drop_index(&gone)).await?;
    }
    loop {
        let store = space.store().clone();
        let scan = ns.clone();
        let page = blocking(move || store.list(&scan, "", None, SYNC_BATCH)).await?;
        let doomed: Vec<ObjectRecord> = page
            .into_iter()
            .filter(|r| namespace_gone(&registry, r))
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        for record in doomed {
            drop_record(space, &record).await?;
        }
    }
}
