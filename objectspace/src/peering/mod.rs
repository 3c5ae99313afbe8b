//! Peering: before a primary orders its first write to a key in a
//! membership epoch (or grants its first lock on it), it hears from the
//! owners of the key's recent intervals and adopts the newest copy they hold.
//! [`walk`] decides when it has heard enough.
//!
//! Why: when owners change (a node left, joined, or came back from a crash
//! or a pause), the new primary may hold a stale copy or none. Ordering a
//! write on it would give the write a version its predecessor already used,
//! or lose acknowledged writes that only the old owners hold.

pub mod walk;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::Mutex,
};

use futures::{stream::FuturesUnordered, StreamExt};
use p3_membership::{placement, Map};

use crate::{
    error::{Result, SpaceError},
    name::{Namespace, ObjectName},
    object::ObjectRecord,
    protocol::{PeerRequest, PeerResponse},
    replica::adopt,
    space::ObjectSpace,
};
use p3_dht::PeerId;

/// Keys this node has peered in the current epoch.
#[derive(Debug, Default)]
pub(crate) struct Peered {
    inner: Mutex<(u64, HashSet<[u8; 32]>)>,
}

/// Beyond this many keys in one epoch the record starts over (each key is
/// then peered once more): memory stays bounded.
const MAX_KEYS: usize = 100_000;

impl Peered {
    /// Whether `key` was peered at `epoch` (a later epoch forgets every key).
    pub(crate) fn done(&self, key: &[u8; 32], epoch: u64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.0 != epoch {
            *inner = (epoch, HashSet::new());
        }
        inner.1.contains(key)
    }

    /// Records that `key` was peered at `epoch`.
    pub(crate) fn mark(&self, key: [u8; 32], epoch: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.0 != epoch || inner.1.len() >= MAX_KEYS {
            *inner = (epoch, HashSet::new());
        }
        inner.1.insert(key);
    }
}

/// Asks the owners of `key`'s intervals in `map` with `ask` until [`walk`]
/// settles; the answers so far (the caller adopts the newest). `mine` is this
/// node's own stamp. Fails with a one-line reason naming `path` when too few
/// owners of an interval answer.
pub(crate) async fn gather<T, F>(
    space: &ObjectSpace,
    map: &Map,
    key: &[u8],
    path: &str,
    mine: u64,
    ask: impl Fn(PeerId) -> F,
    stamp: impl Fn(&T) -> u64,
) -> Result<Vec<(PeerId, T)>>
where
    F: Future<Output = Result<T>>,
{
    let r = space.config().replicas.max(1);
    let intervals = placement::intervals(map, key, r);
    let me = space.me();
    let mut answers = HashMap::from([(me, mine)]);
    let mut asked: Vec<PeerId> = Vec::new();
    for owner in intervals.iter().flat_map(|i| &i.owners) {
        if *owner != me && !asked.contains(owner) {
            asked.push(*owner);
        }
    }
    let mut pending: FuturesUnordered<_> = asked
        .into_iter()
        .map(|peer| {
            let answer = ask(peer);
            async move { (peer, answer.await) }
        })
        .collect();
    let mut got = Vec::new();
    loop {
        let verdict = walk::walk(&intervals, &answers, r);
        if verdict == walk::Verdict::Settled {
            return Ok(got);
        }
        let Some((peer, answer)) = pending.next().await else {
            let walk::Verdict::Blocked { of, since } = verdict else {
                unreachable!("settled above")
            };
            return Err(SpaceError::Unavailable(format!(
                "unavailable: 0 of the {of} owners of {path} since epoch {since} reachable, and they may hold its newest writes; retry later"
            )));
        };
        match answer {
            Ok(value) => {
                answers.insert(peer, stamp(&value));
                got.push((peer, value));
            }
            Err(e) => tracing::debug!(%peer, error = %e, "owner silent while peering"),
        }
    }
}

/// Adopts the newest copy of `ns/name` the owners of its recent intervals in
/// `map` hold, once per key and epoch; the caller holds the key's write lock.
pub(crate) async fn peer(
    space: &ObjectSpace,
    map: &Map,
    key: [u8; 32],
    ns: &Namespace,
    name: &ObjectName,
) -> Result<()> {
    let epoch = map.epoch();
    if space.inner.peered.done(&key, epoch) {
        return Ok(());
    }
    let mine = space.store().record(ns, name)?;
    let ask = |peer: PeerId| {
        let request = PeerRequest::Head {
            ns: ns.clone(),
            name: name.clone(),
            inline: true,
            epoch,
        };
        async move {
            match space.ask_remote(peer, request).await? {
                PeerResponse::Head { record, inline } => Ok((record, inline)),
                other => Err(SpaceError::Unavailable(format!(
                    "unexpected answer to a peering head: {other:?}"
                ))),
            }
        }
    };
    let stamp = |(record, _): &(Option<Box<ObjectRecord>>, Option<Vec<u8>>)| {
        record.as_ref().map_or(0, |r| r.epoch)
    };
    let path = format!("{ns}/{name}");
    let mine = mine.map_or(0, |r| r.epoch);
    let answers = gather(space, map, &key, &path, mine, ask, stamp).await?;
    let newest = answers
        .into_iter()
        .filter_map(|(peer, (record, inline))| Some((peer, *record?, inline)))
        .max_by_key(|(_, record, _)| record.order());
    if let Some((peer, record, inline)) = newest {
        adopt(space, record, inline, &[peer]).await?;
    }
    space.inner.peered.mark(key, epoch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_peered_once_per_epoch() {
        let peered = Peered::default();
        let key = [7u8; 32];
        assert!(!peered.done(&key, 3));
        peered.mark(key, 3);
        assert!(peered.done(&key, 3));
        assert!(!peered.done(&key, 4), "a new epoch forgets");
        assert!(!peered.done(&key, 3), "and does not go back");
    }
}
