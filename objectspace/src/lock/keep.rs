//! Keeping a held lock: renewing its lease, and knowing how long it holds.
//!
//! The holder's node renews every third of the lease. A renewal that fails
//! (the primary is changing, a peer is slow) is tried again while the lease
//! still holds; the lock is *lost* when the primary says so (fenced) or when
//! the lease runs out first. Then renewals stop and the holder is told, so a
//! client learns of the loss when it happens, not at release.
//!
//! Lease ends are instants on the holder's node, never wall-clock times from
//! the primary, and always on the safe side: a renewal counts from when it was
//! *sent* (the primary extends from a later moment), and a fresh grant from
//! its arrival with half its lease (a primary hands out no grant with less
//! left; see `serve_line_once`).

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::state::Grant;
use crate::{error::SpaceError, name::ObjectPath, space::ObjectSpace};

/// What the holder knows of its lock.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// Held at least until this instant (on the holder's node).
    Until(Instant),
    /// Lost: no renewal got through before the lease ended, or the primary
    /// no longer knows the holder. Renewals have stopped.
    Lost(SpaceError),
}

/// Resolves once `held` says the lock is lost (or its keeper is gone).
pub async fn lost(held: &watch::Receiver<Held>) -> SpaceError {
    let mut held = held.clone();
    loop {
        if let Held::Lost(e) = &*held.borrow_and_update() {
            return e.clone();
        }
        if held.changed().await.is_err() {
            return SpaceError::Stopped;
        }
    }
}

/// The renewal decisions for one held lock, without I/O.
#[derive(Debug, Clone)]
pub struct Keeper {
    lease: Duration,
    until: Instant,
    lost: Option<SpaceError>,
}

impl Keeper {
    /// A lock granted with `lease`, whose grant arrived at `received`.
    pub fn granted(received: Instant, lease: Duration) -> Self {
        Keeper {
            lease,
            until: received + lease / 2,
            lost: None,
        }
    }

    /// What the holder knows now.
    pub fn held(&self) -> Held {
        match &self.lost {
            Some(e) => Held::Lost(e.clone()),
            None => Held::Until(self.until),
        }
    }

    /// When to send the next renewal: a third of a lease after the last
    /// success, or soon after a failure (but never past the lease's end).
    pub fn next_renewal(&self, now: Instant, last_failed: bool) -> Instant {
        if last_failed {
            (now + self.lease / 10).min(self.until)
        } else {
            now + self.lease / 3
        }
    }

    /// How long a renewal sent now may take: until the lease ends.
    pub fn deadline(&self) -> Instant {
        self.until
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&mut self, sent: Instant) {
        if self.lost.is_none() {
            self.until = self.until.max(sent + self.lease);
        }
    }

    /// A renewal failed at `now` with `error`; returns whether the lock is
    /// now lost.
    pub fn failed(&mut self, now: Instant, error: SpaceError) -> bool {
        if self.lost.is_none() && (matches!(error, SpaceError::Fenced(_)) || now >= self.until) {
            self.lost = Some(error);
        }
        self.lost.is_some()
    }

    /// The clock reached `now` with no renewal in between; returns whether
    /// the lock is now lost.
    pub fn tick(&mut self, now: Instant) -> bool {
        if self.lost.is_none() && now >= self.until {
            self.lost = Some(SpaceError::Fenced(format!(
                "the lock's lease ran out ({:?}) before a renewal got through",
                self.lease
            )));
        }
        self.lost.is_some()
    }
}

/// Renews `grant` on `path` until the lock is lost or the task is aborted,
/// publishing what the holder knows on `held`.
pub(crate) async fn keep(
    space: ObjectSpace,
    path: ObjectPath,
    grant: Grant,
    mut keeper: Keeper,
    held: watch::Sender<Held>,
) {
    let mut last_failed = false;
    loop {
        let next = keeper.next_renewal(Instant::now(), last_failed);
        tokio::time::sleep_until(next.into()).await;
        if keeper.tick(Instant::now()) {
            break;
        }
        let sent = Instant::now();
        match space
            .renew(&path, grant.holder, keeper.lease, keeper.deadline())
            .await
        {
            Ok(_) => {
                keeper.renewed(sent);
                last_failed = false;
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, "cannot renew a lock");
                last_failed = true;
                if keeper.failed(Instant::now(), e) {
                    break;
                }
            }
        }
        held.send_replace(keeper.held());
    }
    tracing::warn!(%path, token = grant.token, "lost a lock");
    held.send_replace(keeper.held());
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(3);

    fn unavailable() -> SpaceError {
        SpaceError::Unavailable("no answer".into())
    }

    #[test]
    fn a_fresh_grant_counts_half_its_lease_and_renewals_count_from_sending() {
        let t0 = Instant::now();
        let mut k = Keeper::granted(t0, LEASE);
        assert_eq!(k.held(), Held::Until(t0 + LEASE / 2));
        assert_eq!(k.next_renewal(t0, false), t0 + LEASE / 3);
        k.renewed(t0 + LEASE / 3);
        assert_eq!(k.held(), Held::Until(t0 + LEASE / 3 + LEASE));
        // A late answer to an older renewal never shortens the lease.
        k.renewed(t0);
        assert_eq!(k.held(), Held::Until(t0 + LEASE / 3 + LEASE));
    }

    #[test]
    fn a_failed_renewal_is_retried_while_the_lease_holds() {
        let t0 = Instant::now();
        let mut k = Keeper::granted(t0, LEASE);
        let t1 = t0 + LEASE / 3;
        assert!(!k.failed(t1, unavailable()), "the lease still holds");
        let retry = k.next_renewal(t1, true);
        assert!(
            retry > t1 && retry <= t0 + LEASE / 2,
            "soon, within the lease"
        );
        k.renewed(retry);
        assert!(matches!(k.held(), Held::Until(u) if u == retry + LEASE));
    }

    #[test]
    fn the_lock_is_lost_when_the_lease_runs_out_or_the_primary_fences_it() {
        let t0 = Instant::now();
        let mut k = Keeper::granted(t0, LEASE);
        assert!(!k.tick(t0 + LEASE / 4));
        assert!(k.tick(t0 + LEASE / 2), "the lease ran out");
        assert!(matches!(k.held(), Held::Lost(SpaceError::Fenced(_))));
        // Nothing brings it back.
        k.renewed(t0 + LEASE);
        assert!(matches!(k.held(), Held::Lost(_)));

        let mut k = Keeper::granted(t0, LEASE);
        assert!(k.failed(t0, SpaceError::Fenced("unknown holder".into())));
        assert_eq!(
            k.held(),
            Held::Lost(SpaceError::Fenced("unknown holder".into()))
        );

        let mut k = Keeper::granted(t0, LEASE);
        assert!(k.failed(t0 + LEASE, unavailable()), "failed after the end");
    }
}
