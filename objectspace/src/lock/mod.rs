//! Read/write locks held by an object's primary owner, with leases and fencing
//! tokens (P³'s p3readLock / p3writeLock).
//!
//! - The primary keeps each key's [`LockState`]: the grants (holder, mode, token,
//!   lease end) and the next token. Every change is stored (fsync) and sent to the
//!   other owners before it is answered, so a lock outlives its primary.
//! - Acquirers wait in one FIFO queue per key at the primary; a request is granted
//!   only when it is compatible with the grants *and* first in line, so readers
//!   arriving after a waiting writer queue behind it (no writer starvation).
//! - Every grant gets a fencing token above the last one of that key and above
//!   `epoch << 32` (the membership epoch), so tokens grow across changes of
//!   primary. The holder's node renews the lease while the holder lives; a
//!   holder that dies (or whose node dies) loses the lock when its lease ends.
//! - A primary changes a key's state only from the newest copy: one it wrote
//!   in the current membership epoch, or else the newest any member holds
//!   (peering; see `peered_state`), so a new or returning primary never
//!   grants what another granted.
//! - Writes check the state: while any lock is held, a write must carry the
//!   token of the write lock; a token that no longer matches a live grant is
//!   refused (see [`LockState::admits`]).
//!
//! Waiting queues live only in the primary's memory: when it dies, waiters'
//! requests fail and their nodes ask the new primary, which has the grants.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, FutureExt};
use p3_dht::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

mod keep;
mod state;

pub use keep::Held;
pub(crate) use keep::{keep, Keeper};

use crate::{
    error::{Result, SpaceError},
    key::object_key,
    name::{Namespace, ObjectName, ObjectPath},
    object::now_ms,
    protocol::{PeerRequest, PeerResponse},
    space::ObjectSpace,
    transfer::blocking,
};

pub use state::{Grant, LockMode, LockState};

/// What a node asks a key's primary about locks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LockRequest {
    /// Acquire, waiting up to `wait_ms` in line.
    Acquire {
        /// Namespace.
        ns: Namespace,
        /// Name.
        name: ObjectName,
        /// Holder id.
        holder: u64,
        /// Mode.
        mode: LockMode,
        /// Lease length.
        lease_ms: u64,
        /// How long to wait in line.
        wait_ms: u64,
    },
    /// Extend a held lease.
    Renew {
        /// Namespace.
        ns: Namespace,
        /// Name.
        name: ObjectName,
        /// Holder id.
        holder: u64,
        /// New lease length from now.
        lease_ms: u64,
    },
    /// Give a lock back.
    Release {
        /// Namespace.
        ns: Namespace,
        /// Name.
        name: ObjectName,
        /// Holder id.
        holder: u64,
    },
}

/// Someone waiting in line at the primary.
struct Waiter {
    holder: u64,
    mode: LockMode,
    lease_ms: u64,
    granted: oneshot::Sender<Grant>,
}

/// The waiting lines of the keys this node is primary of, and which keys have
/// a pump task serving their line.
#[derive(Default)]
struct Lines {
    waiting: HashMap<[u8; 32], VecDeque<Waiter>>,
    pumps: HashSet<[u8; 32]>,
}

/// The primary's waiting lines and what wakes their pumps.
#[derive(Default)]
pub(crate) struct Queues {
    lines: Mutex<Lines>,
    changed: Notify,
}

impl Queues {
    fn lines(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Longest lease a holder may ask for, and longest a request waits in line.
const MAX_LEASE: Duration = Duration::from_secs(3600);

impl ObjectSpace {
    /// The primary's side of every [`LockRequest`].
    pub(crate) async fn handle_lock(&self, request: LockRequest) -> Result<PeerResponse> {
        let (ns, name) = match &request {
            LockRequest::Acquire { ns, name, .. }
            | LockRequest::Renew { ns, name, .. }
            | LockRequest::Release { ns, name, .. } => (ns.clone(), name.clone()),
        };
        let key = object_key(&ns, &name);
        self.check_lease().await?;
        let owners = self.owners(&key).await?;
        if owners[0] != self.me() {
            return Ok(PeerResponse::NotPrimary(owners[0].to_string()));
        }
        match request {
            LockRequest::Acquire {
                holder,
                mode,
                lease_ms,
                wait_ms,
                ..
            } => {
                let lease_ms = lease_ms.min(MAX_LEASE.as_millis() as u64).max(1);
                let (tx, rx) = oneshot::channel();
                self.inner
                    .queues
                    .lines()
                    .waiting
                    .entry(key)
                    .or_default()
                    .push_back(Waiter {
                        holder,
                        mode,
                        lease_ms,
                        granted: tx,
                    });
                self.serve_line(&ns, &name).await?;
                let wait = Duration::from_millis(wait_ms).min(MAX_LEASE);
                match tokio::time::timeout(wait, rx).await {
                    Ok(Ok(grant)) => Ok(PeerResponse::Granted(grant)),
                    _ => {
                        self.leave_line(key, holder);
                        Err(SpaceError::TimedOut(format!(
                            "{ns}/{name} is still locked after waiting {wait:?}"
                        )))
                    }
                }
            }
            LockRequest::Renew {
                holder, lease_ms, ..
            } => {
                let lease_ms = lease_ms.min(MAX_LEASE.as_millis() as u64);
                let grant = self
                    .change_state(&ns, &name, |state| {
                        let grant = state.grants.iter_mut().find(|g| g.holder == holder)?;
                        grant.lease_until_ms = now_ms() + lease_ms;
                        Some(grant.clone())
                    })
                    .await?;
                grant.map(PeerResponse::Granted).ok_or_else(|| {
                    SpaceError::Fenced(format!(
                        "the lock on {ns}/{name} was lost (its lease ended before it was renewed)"
                    ))
                })
            }
            LockRequest::Release { holder, .. } => {
                self.change_state(&ns, &name, |state| {
                    let before = state.grants.len();
                    state.grants.retain(|g| g.holder != holder);
                    (state.grants.len() != before).then_some(())
                })
                .await?;
                self.serve_line(&ns, &name).await?;
                Ok(PeerResponse::Done)
            }
        }
    }

    /// The lock state of a key as stored here.
    pub(crate) async fn lock_state(&self, key: [u8; 32]) -> Result<LockState> {
        let store = self.store().clone();
        Ok(blocking(move || store.lock_state(&key))
            .await?
            .unwrap_or_default())
    }

    /// Applies `change` to the key's state under the key's lock; if it returns
    /// `Some`, stores the new state and replicates it before returning.
    async fn change_state<T>(
        &self,
        ns: &Namespace,
        name: &ObjectName,
        change: impl FnOnce(&mut LockState) -> Option<T>,
    ) -> Result<Option<T>> {
        let key = object_key(ns, name);
        let lock = self.key_lock(key);
        let _ordered = lock.lock().await;
        let mut state = self.peered_state(ns, name).await?;
        let pruned = state.prune(now_ms());
        let result = change(&mut state);
        if result.is_some() || pruned {
            self.commit_state(ns, name, &mut state).await?;
        }
        Ok(result)
    }

    /// The key's state as this primary may change it: the stored one if this
    /// node changed it in the current epoch, else the newest any member
    /// holds. Without that, a node that just became primary (a node joined
    /// closer to the key) would find the lock free, and one that returned
    /// from a crash or a pause would serve its stale copy and grant again
    /// what the interim primary granted.
    async fn peered_state(&self, ns: &Namespace, name: &ObjectName) -> Result<LockState> {
        let state = self.lock_state(object_key(ns, name)).await?;
        if state.revision > 0 && state.epoch >= self.membership().map().epoch() {
            return Ok(state);
        }
        self.owners_lock_state(ns, name, state).await
    }

    /// The newest of `mine` and the lock states the owners of the key's
    /// recent intervals hold, stored here if newer; fails while too few of
    /// them answer ([`crate::peering::gather`]).
    ///
    /// Not only the owners now: when the map changes, the owners that hold
    /// the grants may all have left the owner set (a 2|3 split, or a node
    /// that joined closer to the key pushes one out), and a primary that read
    /// only the new owners would find the lock free.
    async fn owners_lock_state(
        &self,
        ns: &Namespace,
        name: &ObjectName,
        mine: LockState,
    ) -> Result<LockState> {
        let key = object_key(ns, name);
        let map = self.membership().map();
        let ask = |peer: PeerId| {
            let request = PeerRequest::LockStateOf {
                ns: ns.clone(),
                name: name.clone(),
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
            crate::peering::gather(self, &map, &key, &path, mine.epoch, ask, |s: &LockState| {
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
        if newest.revision > 0 {
            let (store, stored) = (self.store().clone(), newest.clone());
            blocking(move || store.put_lock_state(&key, &stored)).await?;
        }
        Ok(newest)
    }

    /// Stores a changed state here and on every owner (see
    /// `docs/consistency.md`: any one owner of an interval then holds it).
    async fn commit_state(
        &self,
        ns: &Namespace,
        name: &ObjectName,
        state: &mut LockState,
    ) -> Result<()> {
        let key = object_key(ns, name);
        // One map for the stamp and the owners.
        let map = self.membership().map();
        let epoch = map.epoch();
        if state.epoch < epoch {
            state.epoch = epoch;
            state.revision = 0;
        }
        state.revision += 1;
        let store = self.store().clone();
        let stored = state.clone();
        blocking(move || store.put_lock_state(&key, &stored)).await?;
        let owners = self.owners_in(&map, &key)?;
        let sends = owners.iter().filter(|p| **p != self.me()).map(|&peer| {
            let request = PeerRequest::LockState {
                ns: ns.clone(),
                name: name.clone(),
                state: state.clone(),
            };
            async move { self.ask_owner(peer, request).await }
        });
        let acked = 1 + futures::future::join_all(sends)
            .await
            .iter()
            .filter(|r| matches!(r, Ok(PeerResponse::Done)))
            .count();
        let needed = owners.len();
        if acked < needed {
            return Err(SpaceError::NotEnoughOwners {
                path: format!("{ns}/{name} (lock)"),
                acked,
                needed,
            });
        }
        self.inner.queues.changed.notify_waiters();
        Ok(())
    }

    /// A replica's side: keep the newest state.
    pub(crate) async fn hold_lock_state(
        &self,
        ns: Namespace,
        name: ObjectName,
        state: LockState,
    ) -> Result<PeerResponse> {
        let key = object_key(&ns, &name);
        let lock = self.key_lock(key);
        let _ordered = lock.lock().await;
        if self.lock_state(key).await?.order() < state.order() {
            let store = self.store().clone();
            blocking(move || store.put_lock_state(&key, &state)).await?;
        }
        Ok(PeerResponse::Done)
    }

    /// Grants the head of the key's line for as long as it is compatible; if
    /// anyone is left waiting, makes sure one pump task serves the line as
    /// leases run out and locks are released.
    ///
    /// Boxed with an explicit `Send` type: through [`ObjectSpace::ask`] a lock
    /// operation can lead back to another, which the compiler cannot prove
    /// `Send` for an unboxed future.
    fn serve_line(&self, ns: &Namespace, name: &ObjectName) -> BoxFuture<'static, Result<()>> {
        let (space, ns, name) = (self.clone(), ns.clone(), name.clone());
        async move {
            let key = object_key(&ns, &name);
            if space.serve_line_once(&ns, &name, false).await?.is_none() {
                return Ok(());
            }
            let first = space.inner.queues.lines().pumps.insert(key);
            if first {
                tokio::spawn(async move { space.pump(&ns, &name).await });
            }
            Ok(())
        }
        .boxed()
    }

    /// Serves one key's line until nobody waits in it.
    async fn pump(&self, ns: &Namespace, name: &ObjectName) {
        loop {
            // Armed before the step, so a change during it is not missed.
            let changed = self.inner.queues.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let next = match self.serve_line_once(ns, name, true).await {
                Ok(Some(next)) => next,
                Ok(None) => return, // the step retired this pump
                Err(e) => {
                    tracing::debug!(error = %e, "serving a lock line failed; retrying");
                    Duration::from_millis(200)
                }
            };
            let _ = tokio::time::timeout(next, changed).await;
        }
    }

    /// One pass over the line. Returns `None` when nobody waits any more (and,
    /// for the pump, retires it in the same breath so no waiter is left
    /// without one), else how long until the next lease ends.
    async fn serve_line_once(
        &self,
        ns: &Namespace,
        name: &ObjectName,
        as_pump: bool,
    ) -> Result<Option<Duration>> {
        let key = object_key(ns, name);
        let lock = self.key_lock(key);
        let _ordered = lock.lock().await;
        let epoch = self.membership().map().epoch();
        let mut state = self.peered_state(ns, name).await?;
        let mut changed = state.prune(now_ms());
        let mut granted = Vec::new();
        {
            let mut lines = self.inner.queues.lines();
            let line = lines.waiting.entry(key).or_default();
            line.retain(|w| !w.granted.is_closed());
            while line.front().is_some_and(|head| state.compatible(head.mode)) {
                let Some(w) = line.pop_front() else { break };
                let grant = Grant {
                    holder: w.holder,
                    mode: w.mode,
                    token: state.next_token(epoch),
                    lease_until_ms: now_ms() + w.lease_ms,
                };
                state.grants.push(grant.clone());
                granted.push((w, grant));
                changed = true;
            }
            if line.is_empty() {
                lines.waiting.remove(&key);
            }
        }
        if changed {
            if let Err(e) = self.commit_state(ns, name, &mut state).await {
                // Not granted after all: the waiters go back to the head of
                // the line, in order, for the next pass.
                let mut lines = self.inner.queues.lines();
                let line = lines.waiting.entry(key).or_default();
                for (w, _) in granted.into_iter().rev() {
                    line.push_front(w);
                }
                return Err(e);
            }
        }
        // A grant's lease was counted from before its commit, which may have
        // waited on a slow owner: a holder told of it now must still have at
        // least half of it, or the next waiter could be granted while it
        // thinks it holds the lock. Otherwise it waits for the stale grant to
        // run out, at the head of the line.
        let now = now_ms();
        let (fresh, stale): (Vec<_>, Vec<_>) = granted
            .into_iter()
            .partition(|(w, grant)| grant.lease_until_ms >= now + w.lease_ms / 2);
        if !stale.is_empty() {
            tracing::debug!(count = stale.len(), "grants committed too late to hand out");
            let mut lines = self.inner.queues.lines();
            let line = lines.waiting.entry(key).or_default();
            for (w, _) in stale.into_iter().rev() {
                line.push_front(w);
            }
        }
        for (w, grant) in fresh {
            let _ = w.granted.send(grant);
        }
        let mut lines = self.inner.queues.lines();
        if !lines.waiting.contains_key(&key) {
            if as_pump {
                lines.pumps.remove(&key);
            }
            return Ok(None);
        }
        let next_expiry = state.grants.iter().map(|g| g.lease_until_ms).min();
        Ok(Some(next_expiry.map_or(Duration::from_secs(1), |t| {
            Duration::from_millis(t.saturating_sub(now_ms()) + 1)
        })))
    }

    fn leave_line(&self, key: [u8; 32], holder: u64) {
        let mut lines = self.inner.queues.lines();
        if let Some(line) = lines.waiting.get_mut(&key) {
            line.retain(|w| w.holder != holder);
            if line.is_empty() {
                lines.waiting.remove(&key);
            }
        }
    }

    /// Sends a lock request to the key's primary, following redirects and
    /// retrying while the primary changes, until `deadline`.
    async fn to_primary(
        &self,
        path: &ObjectPath,
        request: LockRequest,
        deadline: Instant,
    ) -> Result<PeerResponse> {
        let key = object_key(&path.namespace, &path.name);
        let mut target: Option<PeerId> = None;
        loop {
            let primary = match target.take() {
                Some(p) => p,
                None => self.owners(&key).await?[0],
            };
            match self.ask(primary, PeerRequest::Lock(request.clone())).await {
                Ok(PeerResponse::NotPrimary(p)) => target = p.parse().ok(),
                Ok(answer) => return Ok(answer),
                // Lock requests carry the holder's id, so asking again
                // (here or at the next primary) does not grant twice.
                Err(SpaceError::Unavailable(e) | SpaceError::OutcomeUnknown(e))
                    if Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "lock primary unreachable; asking again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Acquires a lock on `path` for a new holder, waiting up to `wait`.
    pub async fn acquire(
        &self,
        path: &ObjectPath,
        mode: LockMode,
        lease: Duration,
        wait: Duration,
    ) -> Result<Grant> {
        let holder = rand::random::<u64>();
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let request = LockRequest::Acquire {
                ns: path.namespace.clone(),
                name: path.name.clone(),
                holder,
                mode,
                lease_ms: lease.as_millis() as u64,
                wait_ms: left.as_millis() as u64,
            };
            match self.to_primary(path, request, deadline).await {
                Ok(PeerResponse::Granted(grant)) => return Ok(grant),
                Ok(other) => {
                    return Err(SpaceError::Unavailable(format!(
                        "unexpected answer {other:?}"
                    )))
                }
                // The primary died while this request waited: ask the new one.
                Err(SpaceError::Unavailable(_) | SpaceError::OutcomeUnknown(_))
                    if Instant::now() < deadline => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Renews a held lock's lease, trying until `deadline`.
    pub async fn renew(
        &self,
        path: &ObjectPath,
        holder: u64,
        lease: Duration,
        deadline: Instant,
    ) -> Result<Grant> {
        let request = LockRequest::Renew {
            ns: path.namespace.clone(),
            name: path.name.clone(),
            holder,
            lease_ms: lease.as_millis() as u64,
        };
        match self.to_primary(path, request, deadline).await? {
            PeerResponse::Granted(grant) => Ok(grant),
            other => Err(SpaceError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Releases a held lock.
    pub async fn release(&self, path: &ObjectPath, holder: u64) -> Result<()> {
        let request = LockRequest::Release {
            ns: path.namespace.clone(),
            name: path.name.clone(),
            holder,
        };
        let deadline = Instant::now() + self.config().rpc_timeout;
        self.to_primary(path, request, deadline).await.map(drop)
    }
}
