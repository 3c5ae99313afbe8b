//! The primary's part of a write: ordering it, storing it here and on the
//! other owners at once, and answering once every owner holds it.

use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use p3_dht::PeerId;

use super::as_primary;
use crate::{
    error::{Result, SpaceError},
    key::object_key,
    object::now_ms,
    ordering::{self, Attempt, Tally},
    protocol::{PeerRequest, PeerResponse, WriteOp, WriteRequest},
    replica::{adopt, check_registry, store_record, store_with_value, volatile_value},
    space::ObjectSpace,
};

/// The primary's part of a write: order it after every earlier write of the
/// key, store it, and have the other owners store it before answering. Each
/// acknowledged write is logged at debug level with how long each phase took
/// (`RUST_LOG=p3_objectspace::service=debug`): the profile of the write path.
/// Its own copy and the replicas' run at once, so they overlap.
pub(super) async fn handle_write(space: &ObjectSpace, write: WriteRequest) -> Result<PeerResponse> {
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
