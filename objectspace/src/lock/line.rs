//! The primary's waiting lines: one FIFO queue per key, served by a pump
//! task that grants whoever is first in line once it is compatible with the
//! grants, and the primary's answer to every [`LockRequest`].

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, FutureExt};
use p3_dht::PeerId;
use tokio::sync::{oneshot, Notify};

use super::{Grant, LockMode, LockRequest};
use crate::{
    error::{Result, SpaceError},
    key::object_key,
    name::{Namespace, ObjectName},
    object::now_ms,
    protocol::PeerResponse,
    space::ObjectSpace,
    writers::{lock_statement, Signature, Writers},
};

/// Someone waiting in line at the primary.
struct Waiter {
    holder: u64,
    /// The node that sent the request.
    node: PeerId,
    mode: LockMode,
    lease_ms: u64,
    signature: Option<Signature>,
    /// The grant, and the instant its lease began.
    granted: oneshot::Sender<(Grant, Instant)>,
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

    /// Wakes the pumps: a key's state changed, so a waiter may be grantable.
    pub(super) fn wake(&self) {
        self.changed.notify_waiters();
    }
}

/// Longest lease a holder may ask for, and longest a request waits in line.
const MAX_LEASE: Duration = Duration::from_secs(3600);

impl ObjectSpace {
    /// The primary's side of every [`LockRequest`] (sent by node `peer`).
    pub(crate) async fn handle_lock(
        &self,
        peer: PeerId,
        request: LockRequest,
    ) -> Result<PeerResponse> {
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
                signature,
                ..
            } => {
                (self.inner.namespaces)
                    .check(self, &ns, |writers| {
                        let signature = signature.as_ref();
                        check_grant(writers, (&ns, &name), holder, mode, signature, true)
                    })
                    .await?;
                let arrived = Instant::now();
                let lease_ms = lease_ms.min(MAX_LEASE.as_millis() as u64).max(1);
                let (tx, mut rx) = oneshot::channel();
                self.inner
                    .queues
                    .lines()
                    .waiting
                    .entry(key)
                    .or_default()
                    .push_back(Waiter {
                        holder,
                        node: peer,
                        mode,
                        lease_ms,
                        signature,
                        granted: tx,
                    });
                self.serve_line(&ns, &name).await?;
                let wait = Duration::from_millis(wait_ms).min(MAX_LEASE);
                let granted = |grant, began: Instant| PeerResponse::Granted {
                    grant,
                    waited_ms: began.saturating_duration_since(arrived).as_millis() as u64,
                };
                let moved = match self.wait_in_line(key, &mut rx, wait).await {
                    Waited::Granted(grant, began) => return Ok(granted(grant, began)),
                    Waited::Over => None,
                    Waited::Moved(primary) => Some(primary),
                };
                // Out of line, and no grant may be sent any more; one sent
                // before is still this holder's and must reach it (one the
                // pump cannot send it takes back, see `serve_line_once`).
                self.leave_line(key, holder);
                rx.close();
                if let Ok((grant, began)) = rx.try_recv() {
                    return Ok(granted(grant, began));
                }
                match moved {
                    // The key moved while this request waited: the holder's
                    // node follows it to the new primary's line.
                    Some(primary) => Ok(PeerResponse::NotPrimary(primary.to_string())),
                    None => {
                        let mut state = self.lock_state(key).await?;
                        state.prune(now_ms());
                        Err(SpaceError::Locked {
                            path: format!("{ns}/{name}"),
                            waited_ms: arrived.elapsed().as_millis() as u64,
                            by: state.grants.into_iter().filter_map(|g| g.node).collect(),
                        })
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
                // The new lease counts from after the request arrived.
                let granted = |grant| PeerResponse::Granted {
                    grant,
                    waited_ms: 0,
                };
                grant.map(granted).ok_or_else(|| {
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

    /// Grants the head of the key's line for as long as it is compatible; if
    /// anyone is left waiting, makes sure one pump task serves the line as
    /// leases run out and locks are released.
    ///
    /// Boxed with an explicit `Send` type: through [`ObjectSpace::ask`] a lock
    /// operation can lead back to another, which the compiler cannot prove
    /// `Send` for an unboxed future.
    pub(super) fn serve_line(
        &self,
        ns: &Namespace,
        name: &ObjectName,
    ) -> BoxFuture<'static, Result<()>> {
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
    pub(super) async fn pump(&self, ns: &Namespace, name: &ObjectName) {
        loop {
            // Armed before the step, so a change during it is not missed.
            let changed = self.inner.queues.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let next = match self.serve_line_once(ns, name, true).await {
                Ok(Some(next)) => next,
                Ok(None) => return, // the step retired this pump
                // A line whose waiters all left (timed out, or followed the
                // key to its next primary) needs no pump, even while this
                // node cannot serve it.
                Err(_) if self.retire_if_idle(ns, name) => return,
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
    pub(super) async fn serve_line_once(
        &self,
        ns: &Namespace,
        name: &ObjectName,
        as_pump: bool,
    ) -> Result<Option<Duration>> {
        let key = object_key(ns, name);
        let lock = self.key_lock(key);
        let _ordered = lock.lock().await;
        let serving = self.serving(ns, name).await?;
        let epoch = serving.epoch();
        let mut state = self.peered_state(ns, name, &serving).await?;
        let mut changed = state.prune(now_ms());
        let mut granted = Vec::new();
        {
            let mut lines = self.inner.queues.lines();
            let line = lines.waiting.entry(key).or_default();
            line.retain(|w| !w.granted.is_closed());
            while line.front().is_some_and(|head| state.compatible(head.mode)) {
                let Some(w) = line.pop_front() else { break };
                let began = Instant::now();
                let grant = Grant {
                    holder: w.holder,
                    mode: w.mode,
                    token: state.next_token(epoch),
                    lease_until_ms: now_ms() + w.lease_ms,
                    node: Some(w.node.to_string()),
                    signature: w.signature.clone(),
                };
                state.grants.push(grant.clone());
                granted.push((w, grant, began));
                changed = true;
            }
            if line.is_empty() {
                lines.waiting.remove(&key);
            }
        }
        if changed {
            if let Err(e) = self.commit_state(ns, name, &mut state, &serving).await {
                // Not granted after all: the waiters go back to the head of
                // the line, in order, for the next pass.
                let mut lines = self.inner.queues.lines();
                let line = lines.waiting.entry(key).or_default();
                for (w, ..) in granted.into_iter().rev() {
                    line.push_front(w);
                }
                return Err(e);
            }
        }
        // A grant's lease was counted from before its commit, which may have
        // waited on a slow owner. The holder counts it from then too (see
        // `Keeper::granted`), so one with less than half of it left would be
        // of little use: its waiter stays at the head of the line until it
        // runs out and is granted afresh.
        let now = now_ms();
        let (fresh, stale): (Vec<_>, Vec<_>) = granted
            .into_iter()
            .partition(|(w, grant, _)| grant.lease_until_ms >= now + w.lease_ms / 2);
        if !stale.is_empty() {
            tracing::debug!(count = stale.len(), "grants committed too late to hand out");
            let mut lines = self.inner.queues.lines();
            let line = lines.waiting.entry(key).or_default();
            for (w, ..) in stale.into_iter().rev() {
                line.push_front(w);
            }
        }
        for (w, grant, _) in &fresh {
            tracing::debug!(path = %format!("{ns}/{name}"), holder = w.holder, token = grant.token, epoch, "lock granted");
        }
        // A request that stopped waiting (timed out, or moved to the key's
        // next primary) between its grant's commit and now never hears of
        // it: nobody holds that grant, so it is taken back.
        let unclaimed: Vec<u64> = fresh
            .into_iter()
            .filter_map(|(w, grant, began)| w.granted.send((grant, began)).err())
            .map(|(grant, _)| grant.holder)
            .collect();
        if !unclaimed.is_empty() {
            tracing::debug!(
                count = unclaimed.len(),
                "grants nobody waits for any more; taken back"
            );
            state.grants.retain(|g| !unclaimed.contains(&g.holder));
            self.commit_state(ns, name, &mut state, &serving).await?;
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

    /// Retires the key's pump if nobody waits in its line any more; whether
    /// it did. Under the lines' lock, so a request that joins the line
    /// afterwards finds no pump and starts one.
    fn retire_if_idle(&self, ns: &Namespace, name: &ObjectName) -> bool {
        let key = object_key(ns, name);
        let mut lines = self.inner.queues.lines();
        let idle = lines.waiting.get_mut(&key).is_none_or(|line| {
            line.retain(|w| !w.granted.is_closed());
            line.is_empty()
        });
        if idle {
            lines.waiting.remove(&key);
            lines.pumps.remove(&key);
        }
        idle
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

    /// Waits up to `wait` for the grant on `rx`, or until the membership map
    /// makes another node `key`'s primary: the request must wait in that
    /// node's line then, or it waits here for a grant that cannot come.
    async fn wait_in_line(
        &self,
        key: [u8; 32],
        rx: &mut oneshot::Receiver<(Grant, Instant)>,
        wait: Duration,
    ) -> Waited {
        let mut maps = self.membership().watch();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                granted = &mut *rx => return match granted {
                    Ok((grant, began)) => Waited::Granted(grant, began),
                    Err(_) => Waited::Over,
                },
                _ = &mut deadline => return Waited::Over,
                changed = maps.changed() => {
                    if changed.is_err() {
                        // The membership service stopped, and the node with it.
                        (&mut deadline).await;
                        return Waited::Over;
                    }
                    if let Ok(owners) = self.owners(&key).await {
                        if owners[0] != self.me() {
                            return Waited::Moved(owners[0]);
                        }
                    }
                }
            }
        }
    }
}

/// How a request's wait in line ended.
enum Waited {
    /// Granted, its lease counted from that instant.
    Granted(Grant, Instant),
    /// Its time is up (or its place in line is gone).
    Over,
    /// The key has another primary now.
    Moved(PeerId),
}

/// Checks that a lock in writer-only namespace `ns` was asked for by a
/// writer: `current` for a new request, else (a state an owner is sent) by
/// anyone who was a writer when it asked.
pub(super) fn check_grant(
    writers: &Writers,
    (ns, name): (&Namespace, &ObjectName),
    holder: u64,
    mode: LockMode,
    signature: Option<&Signature>,
    current: bool,
) -> Result<()> {
    let signature = signature.ok_or_else(|| {
        SpaceError::Forbidden(format!(
            "refused: {ns}/{name} is in a writer-only namespace and the lock request is not signed"
        ))
    })?;
    let statement = lock_statement(ns, writers.incarnation, name, holder, mode);
    let signer = signature.verify(&statement)?;
    writers.check_signer(ns, signer, current)
}
