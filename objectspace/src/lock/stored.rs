//! A key's lock state as the owners hold it: read, changed only from the
//! newest copy (peering with the owners of earlier epochs when this primary
//! did not write it in the current one), and committed to every owner before
//! a change counts.

use std::cmp::Ordering;

use p3_dht::PeerId;
use p3_membership::Map;

use super::LockState;
use crate::{
    error::{Result, SpaceError},
    key::object_key,
    name::{Namespace, ObjectName},
    object::now_ms,
    protocol::{PeerRequest, PeerResponse},
    replica::{check_primary, reach},
    space::ObjectSpace,
};

/// The map a lock-state change is made under and the key's owners in it,
/// this node first (see [`ObjectSpace::serving`]).
pub(super) struct Serving {
    map: std::sync::Arc<Map>,
    owners: Vec<PeerId>,
}

impl Serving {
    /// The membership epoch: it stamps the state and its fencing tokens.
    pub(super) fn epoch(&self) -> u64 {
        self.map.epoch()
    }
}

impl ObjectSpace {
    /// The lock state of a key as stored here.
    pub(crate) async fn lock_state(&self, key: [u8; 32]) -> Result<LockState> {
        // A small read: in place, like record reads.
        Ok(self.store().lock_state(&key)?.unwrap_or_default())
    }

    /// Applies `change` to the key's state under the key's lock; if it returns
    /// `Some`, stores the new state and replicates it before returning.
    pub(super) async fn change_state<T>(
        &self,
        ns: &Namespace,
        name: &ObjectName,
        change: impl FnOnce(&mut LockState) -> Option<T>,
    ) -> Result<Option<T>> {
        let key = object_key(ns, name);
        let lock = self.key_lock(key);
        let _ordered = lock.lock().await;
        let serving = self.serving(ns, name).await?;
        let mut state = self.peered_state(ns, name, &serving).await?;
        let before = state.clone();
        let pruned = state.prune(now_ms());
        let result = change(&mut state);
        if result.is_some() || pruned {
            if state.only_removes_from(&before) {
                self.commit_removal(ns, name, &mut state, &serving)?;
            } else {
                self.commit_state(ns, name, &mut state, &serving).await?;
            }
        }
        Ok(result)
    }

    /// Commits a change that only takes grants away (a release, expired
    /// leases) without waiting: applied here at once, synced with this
    /// node's next durable write, and sent to the other owners in the
    /// background. The next grant is committed to every owner as usual and
    /// carries it along. Lost (this node dies first), it leaves the removed
    /// grants in the owners' copies until their leases end: the next holder
    /// waits longer, no two hold at once (see `docs/consistency.md`).
    fn commit_removal(
        &self,
        ns: &Namespace,
        name: &ObjectName,
        state: &mut LockState,
        serving: &Serving,
    ) -> Result<()> {
        let key = object_key(ns, name);
        stamp(state, serving.epoch());
        self.store().apply_lock_state(&key, state)?;
        self.inner.queues.wake();
        let others: Vec<PeerId> = (serving.owners.iter())
            .filter(|p| **p != self.me())
            .copied()
            .collect();
        let (space, request) = (
            self.clone(),
            PeerRequest::LockState {
                ns: ns.clone(),
                name: name.clone(),
                state: state.clone(),
            },
        );
        tokio::spawn(async move {
            let sends = (others.into_iter()).map(|peer| space.ask_owner(peer, request.clone()));
            for sent in futures::future::join_all(sends).await {
                // Refused as older when the next commit overtook it: that
                // one holds this change too.
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "a released lock state did not reach an owner");
                }
            }
        });
        Ok(())
    }

    /// The map this node changes `ns/name`'s lock state under, read once
    /// under the key's lock (the caller's) and checked to make this node the
    /// key's primary while it holds a lease. The state is peered, stamped and
    /// sent to owners under this one map: a node back from a pause once read
    /// its stale copy at its old epoch (its map had not moved yet) and
    /// committed it at the next (it had, and made it the primary again),
    /// erasing a grant the interim primary had given; the nemesis suite saw
    /// two write-lock holds overlap.
    pub(super) async fn serving(&self, ns: &Namespace, name: &ObjectName) -> Result<Serving> {
        // The lease holds only once the map has reached the epoch of the
        // leader's last answer: a returning node's old map does not serve.
        self.check_lease().await?;
        let map = self.membership().map();
        let owners = self.owners_in(&map, &object_key(ns, name))?;
        if owners[0] != self.me() {
            return Err(SpaceError::Unavailable(format!(
                "this node is no longer the primary of {ns}/{name} (membership epoch {}); retry",
                map.epoch()
            )));
        }
        Ok(Serving { map, owners })
    }

    /// The key's state as this primary may change it: the stored one if this
    /// node changed it in the current epoch, else the newest any member
    /// holds. Without that, a node that just became primary (a node joined
    /// closer to the key) would find the lock free, and one that returned
    /// from a crash or a pause would serve its stale copy and grant again
    /// what the interim primary granted.
    pub(super) async fn peered_state(
        &self,
        ns: &Namespace,
        name: &ObjectName,
        serving: &Serving,
    ) -> Result<LockState> {
        let state = self.lock_state(object_key(ns, name)).await?;
        if state.revision > 0 && state.epoch >= serving.map.epoch() {
            return Ok(state);
        }
        self.owners_lock_state(ns, name, state, &serving.map).await
    }

    /// The newest of `mine` and the lock states the owners of the key's
    /// recent intervals in `map` hold, stored here if newer; fails while too
    /// few of them answer ([`crate::peering::gather`]).
    ///
    /// Not only the owners now: when the map changes, the owners that hold
    /// the grants may all have left the owner set (a 2|3 split, or a node
    /// that joined closer to the key pushes one out), and a primary that read
    /// only the new owners would find the lock free.
    pub(super) async fn owners_lock_state(
        &self,
        ns: &Namespace,
        name: &ObjectName,
        mine: LockState,
        map: &Map,
    ) -> Result<LockState> {
        let key = object_key(ns, name);
        let ask = |peer: PeerId| {
            let request = PeerRequest::LockStateOf {
                ns: ns.clone(),
                name: name.clone(),
                epoch: map.epoch(),
            };
            async move {
                match self.ask_remote(peer, request).await? {
                    PeerResponse::HeldLockState(state) => Ok(state),
                    other => Err(SpaceError::Unavailable(format!(
                        "unexpected answer to a lock peering: {other:?}"
                    ))),
                }
            }
        };
        let path = format!("{ns}/{name}");
        let answers =
            crate::peering::gather(self, map, &key, &path, mine.epoch, ask, |s: &LockState| {
                s.epoch
            })
            .await?;
        let newest = answers
            .into_iter()
            .map(|(_, s)| s)
            .fold(mine, |best, state| {
                if state.order() > best.order() {
                    state
                } else {
                    best
                }
            });
        tracing::debug!(
            %path,
            epoch = map.epoch(),
            adopted = ?newest.order(),
            grants = ?newest.grants.iter().map(|g| g.token).collect::<Vec<_>>(),
            "lock state peered"
        );
        if newest.revision > 0 {
            self.store().put_lock_state_async(&key, &newest).await?;
        }
        Ok(newest)
    }

    /// Stores a changed state here and on every owner of `serving`'s map,
    /// stamped with its epoch (see `docs/consistency.md`: any one owner of an
    /// interval then holds it).
    pub(super) async fn commit_state(
        &self,
        ns: &Namespace,
        name: &ObjectName,
        state: &mut LockState,
        serving: &Serving,
    ) -> Result<()> {
        let key = object_key(ns, name);
        let owners = &serving.owners;
        stamp(state, serving.epoch());
        self.store().apply_lock_state(&key, state)?;
        let sends = owners.iter().filter(|p| **p != self.me()).map(|&peer| {
            let request = PeerRequest::LockState {
                ns: ns.clone(),
                name: name.clone(),
                state: state.clone(),
            };
            async move { self.ask_owner(peer, request).await }
        });
        // The other owners store it while this one syncs its copy, as a
        // write's primary does: the change counts only once all hold it, so
        // this copy need not be on disk first. The requests go out first.
        let (answers, synced) = tokio::join!(
            futures::future::join_all(sends),
            self.store().durable_async()
        );
        synced?;
        let acked = 1 + answers
            .iter()
            .filter(|r| matches!(r, Ok(PeerResponse::Done)))
            .count();
        let needed = owners.len();
        tracing::debug!(
            path = %format!("{ns}/{name}"),
            order = ?state.order(),
            grants = ?state.grants.iter().map(|g| (g.token, g.lease_until_ms)).collect::<Vec<_>>(),
            acked,
            needed,
            "lock state committed"
        );
        if acked < needed {
            return Err(SpaceError::NotEnoughOwners {
                path: format!("{ns}/{name} (lock)"),
                acked,
                needed,
            });
        }
        self.inner.queues.wake();
        Ok(())
    }

    /// A replica's side: keep a newer state and refuse an older one (see
    /// [`LockState::accepts`]), if `sender` is the key's
    /// primary in this node's map once it has applied the state's epoch
    /// (checked under the key's lock; see [`check_primary`]).
    pub(crate) async fn hold_lock_state(
        &self,
        sender: PeerId,
        ns: Namespace,
        name: ObjectName,
        state: LockState,
    ) -> Result<PeerResponse> {
        reach(self, state.epoch).await?;
        self.check_lease().await?;
        let key = object_key(&ns, &name);
        let lock = self.key_lock(key);
        let _ordered = lock.lock().await;
        check_primary(self, sender, (&ns, &name))?;
        (self.inner.namespaces)
            .check(self, &ns, |writers| {
                state.grants.iter().try_for_each(|grant| {
                    let (holder, mode) = (grant.holder, grant.mode);
                    let signature = grant.signature.as_ref();
                    super::line::check_grant(writers, (&ns, &name), holder, mode, signature, false)
                })
            })
            .await?;
        let held = self.lock_state(key).await?;
        match held.accepts(&state) {
            // A release (or expired leases) the primary answered without
            // waiting for owners: kept like the primary keeps it, synced with
            // this node's next durable write (see `commit_removal`).
            Ordering::Greater if state.only_removes_from(&held) => {
                self.store().apply_lock_state(&key, &state)?
            }
            Ordering::Greater => self.store().put_lock_state_async(&key, &state).await?,
            Ordering::Equal => {}
            Ordering::Less => {
                return Err(SpaceError::Fenced(format!(
                    "{ns}/{name}: this owner holds a newer lock state (epoch {}, revision {}) than the one sent (epoch {}, revision {})",
                    held.epoch, held.revision, state.epoch, state.revision
                )))
            }
        }
        Ok(PeerResponse::Done)
    }

    /// An owner's answer to a peering primary of `epoch`: its state, once
    /// it has applied that epoch (so it refuses commits of earlier primaries
    /// from then on) and any commit in flight here has finished.
    pub(crate) async fn lock_state_for_peering(
        &self,
        ns: Namespace,
        name: ObjectName,
        epoch: u64,
    ) -> Result<PeerResponse> {
        reach(self, epoch).await?;
        let key = object_key(&ns, &name);
        let lock = self.key_lock(key);
        let _ordered = lock.lock().await;
        self.lock_state(key).await.map(PeerResponse::HeldLockState)
    }
}

/// Makes `state` the next revision of `epoch`: the first of that epoch if
/// it was last changed in an earlier one.
fn stamp(state: &mut LockState, epoch: u64) {
    if state.epoch < epoch {
        state.epoch = epoch;
        state.revision = 0;
    }
    state.revision += 1;
}
