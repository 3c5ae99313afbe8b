//! Peering of object records: before a primary orders its first write to a
//! key in a membership epoch, it adopts the newest copy the key's other
//! owners hold, and needs answers from a majority of them.
//!
//! Why: a primary that came back from a crash or a pause (it rejoins at a new
//! epoch and is closest to its keys again) holds stale copies. Without this it
//! would give the next write a version its successor already used, and the
//! later write would replace an acknowledged one on the replicas (records of
//! equal version are ordered by time). When one node joins or leaves, a key's
//! owner sets of consecutive epochs share all but one owner, so a majority of
//! the new owners includes one that held every write acknowledged before.

use std::{collections::HashSet, sync::Mutex};

use futures::future::join_all;

use crate::{
    error::{Result, SpaceError},
    name::{Namespace, ObjectName},
    protocol::{PeerRequest, PeerResponse},
    service::adopt,
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

/// Adopts the newest copy of `ns/name` the other `owners` hold, once per key
/// and epoch; the caller holds the key's write lock. Fails when fewer than a
/// majority of the owners answer: the newest copy may be among the silent.
pub(crate) async fn peer(
    space: &ObjectSpace,
    key: [u8; 32],
    ns: &Namespace,
    name: &ObjectName,
    owners: &[PeerId],
) -> Result<()> {
    let epoch = space.membership().map().epoch();
    if space.inner.peered.done(&key, epoch) {
        return Ok(());
    }
    let me = space.me();
    let asks = owners.iter().filter(|p| **p != me).map(|&peer| {
        let request = PeerRequest::Head {
            ns: ns.clone(),
            name: name.clone(),
            inline: true,
        };
        async move { (peer, space.ask_remote(peer, request).await) }
    });
    let mut answered = 1;
    for (peer, answer) in join_all(asks).await {
        match answer {
            Ok(PeerResponse::Head { record, inline }) => {
                answered += 1;
                if let Some(record) = record {
                    adopt(space, *record, inline, &[peer]).await?;
                }
            }
            Ok(other) => tracing::debug!(%peer, ?other, "unexpected answer to a peering head"),
            Err(e) => tracing::debug!(%peer, error = %e, "owner silent while peering"),
        }
    }
    let needed = owners.len() / 2 + 1;
    if answered < needed {
        return Err(SpaceError::Unavailable(format!(
            "only {answered} of the {} owners of {ns}/{name} answered; the newest copy may be with the others — retry",
            owners.len()
        )));
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
