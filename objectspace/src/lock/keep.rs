//! Keeping a held lock: renewing its lease, and knowing how long it holds.
//!
//! The holder's node renews every quarter to third of the lease (at
//! random). A renewal that fails (the primary is changing, a peer is slow)
//! is tried again while the lease may still hold; the lock is *lost* when
//! the primary says so (fenced) or when the latest moment its lease could
//! end passes first. Then renewals stop and the holder is told, so a client
//! learns of the loss when it happens, not at release.
//!
//! Lease ends are instants on the holder's node, never wall-clock times from
//! the primary. The holder is told the safe side: a renewal counts from when
//! it was *sent* (the primary extends from a later moment), and a fresh grant
//! from when its request was sent plus the time the primary says it waited
//! in line. Never from the answer's arrival: an answer held up in the network
//! (a partition healing delivers it seconds late) would otherwise start a
//! lease the next holder may already have. Renewals go on until the other
//! side: a full lease after the last answer arrived.

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
    /// Held at least until then: what the holder is told.
    until: Instant,
    /// Perhaps held until then (the primary counted from a later moment than
    /// `until` does): renewals keep trying until it, and only then is the
    /// lock lost, so a slow takeover by a new primary does not give it up.
    latest: Instant,
    lost: Option<SpaceError>,
}

impl Keeper {
    /// A lock granted with `lease`: its request was sent at `sent`, waited
    /// `waited` in the primary's line, and the grant arrived at `received`.
    pub fn granted(sent: Instant, waited: Duration, received: Instant, lease: Duration) -> Self {
        Keeper {
            lease,
            until: sent + waited + lease,
            latest: received + lease,
            lost: None,
        }
    }

    /// Whether at least half the lease surely remains at `now`. A grant
    /// whose answer arrived later than that is renewed before it is used.
    pub fn fresh(&self, now: Instant) -> bool {
        self.lost.is_none() && self.until >= now + self.lease / 2
    }

    /// What the holder knows now.
    pub fn held(&self) -> Held {
        match &self.lost {
            Some(e) => Held::Lost(e.clone()),
            None => Held::Until(self.until),
        }
    }

    /// When to send the next renewal: a third of a lease after the last
    /// success, less up to a quarter of that by `early` (a draw in
    /// `[0, 1)`), or soon after a failure (but never past the lease's end).
    /// Early only, so never less safe: locks taken together (the tasks of a
    /// job) would otherwise be renewed in one burst every interval for as
    /// long as they are held.
    pub fn next_renewal(&self, now: Instant, last_failed: bool, early: f64) -> Instant {
        if last_failed {
            (now + self.lease / 10).min(self.latest)
        } else {
            // A draw that is no number moves nothing (`mul_f64` would panic).
            let early = if early.is_finite() {
                early.clamp(0.0, 1.0)
            } else {
                0.0
            };
            now + self.lease / 3 - (self.lease / 12).mul_f64(early)
        }
    }

    /// How long a renewal sent now may take: until the lease may end.
    pub fn deadline(&self) -> Instant {
        self.latest
    }

    /// A renewal sent at `sent` succeeded, its answer arriving at `answered`.
    pub fn renewed(&mut self, sent: Instant, answered: Instant) {
        if self.lost.is_none() {
            self.until = self.until.max(sent + self.lease);
            self.latest = self.latest.max(answered + self.lease);
        }
    }

    /// A renewal failed at `now` with `error`; returns whether the lock is
    /// now lost.
    pub fn failed(&mut self, now: Instant, error: SpaceError) -> bool {
        if self.lost.is_none() && (matches!(error, SpaceError::Fenced(_)) || now >= self.latest) {
            self.lost = Some(error);
        }
        self.lost.is_some()
    }

    /// The clock reached `now` with no renewal in between; returns whether
    /// the lock is now lost.
    pub fn tick(&mut self, now: Instant) -> bool {
        if self.lost.is_none() && now >= self.latest {
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
    // Held for a client of this node while this runs (ended by release,
    // loss or abort).
    let _held = crate::metrics::Level::up("p3_locks_held");
    let mut last_failed = false;
    loop {
        let next = keeper.next_renewal(Instant::now(), last_failed, rand::random());
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
                keeper.renewed(sent, Instant::now());
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
    fn a_grant_counts_from_its_request_and_renewals_count_from_sending() {
        let t0 = Instant::now();
        let mut k = Keeper::granted(t0, Duration::ZERO, t0, LEASE);
        assert_eq!(k.held(), Held::Until(t0 + LEASE));
        assert_eq!(k.next_renewal(t0, false, 0.0), t0 + LEASE / 3);
        k.renewed(t0 + LEASE / 3, t0 + LEASE / 3);
        assert_eq!(k.held(), Held::Until(t0 + LEASE / 3 + LEASE));
        // A late answer to an older renewal never shortens the lease.
        k.renewed(t0, t0);
        assert_eq!(k.held(), Held::Until(t0 + LEASE / 3 + LEASE));
    }

    #[test]
    fn a_grant_whose_answer_was_held_up_is_not_fresh() {
        let t0 = Instant::now();
        // Sent at 0, waited 1 s in line: the lease began no earlier than 1 s.
        let waited = Duration::from_secs(1);
        let k = Keeper::granted(t0, waited, t0 + waited, LEASE);
        assert_eq!(k.held(), Held::Until(t0 + waited + LEASE));
        assert!(k.fresh(t0 + waited));
        // The same answer delivered 2 s late (a partition healing): most of
        // the lease may be gone, whatever the arrival time suggests.
        let late = t0 + waited + Duration::from_secs(2);
        let k = Keeper::granted(t0, waited, late, LEASE);
        assert_eq!(k.held(), Held::Until(t0 + waited + LEASE));
        assert!(!k.fresh(late), "renewed before it is used");
        assert_eq!(k.deadline(), late + LEASE, "but it may still hold");
    }

    #[test]
    fn renewals_come_a_quarter_to_a_third_of_a_lease_apart() {
        let t0 = Instant::now();
        let k = Keeper::granted(t0, Duration::ZERO, t0, LEASE);
        assert_eq!(k.next_renewal(t0, false, 1.0), t0 + LEASE / 4);
        let half = k.next_renewal(t0, false, 0.5);
        assert!(half > t0 + LEASE / 4 && half < t0 + LEASE / 3);
        // A retry after a failure is not moved by the draw.
        assert_eq!(k.next_renewal(t0, true, 1.0), k.next_renewal(t0, true, 0.0));
        // Draws out of range are held to it.
        assert_eq!(k.next_renewal(t0, false, 7.0), t0 + LEASE / 4);
        assert_eq!(k.next_renewal(t0, false, -1.0), t0 + LEASE / 3);
        assert_eq!(k.next_renewal(t0, false, f64::NAN), t0 + LEASE / 3);
    }

    #[test]
    fn a_failed_renewal_is_retried_while_the_lease_holds() {
        let t0 = Instant::now();
        let mut k = Keeper::granted(t0, Duration::ZERO, t0, LEASE);
        let t1 = t0 + LEASE / 3;
        assert!(!k.failed(t1, unavailable()), "the lease still holds");
        let retry = k.next_renewal(t1, true, 0.0);
        assert!(retry > t1 && retry <= t0 + LEASE, "soon, within the lease");
        k.renewed(retry, retry);
        assert!(matches!(k.held(), Held::Until(u) if u == retry + LEASE));
    }

    #[test]
    fn the_lock_is_lost_when_the_lease_runs_out_or_the_primary_fences_it() {
        let t0 = Instant::now();
        let mut k = Keeper::granted(t0, Duration::ZERO, t0, LEASE);
        assert!(!k.tick(t0 + LEASE / 4));
        // Renewals go on while the lease may still hold.
        assert!(!k.tick(t0 + LEASE / 2));
        assert!(!k.failed(t0 + LEASE / 2, unavailable()));
        assert!(k.tick(t0 + LEASE), "the lease ran out");
        assert!(matches!(k.held(), Held::Lost(SpaceError::Fenced(_))));
        // Nothing brings it back.
        k.renewed(t0 + LEASE, t0 + LEASE);
        assert!(matches!(k.held(), Held::Lost(_)));

        let mut k = Keeper::granted(t0, Duration::ZERO, t0, LEASE);
        assert!(k.failed(t0, SpaceError::Fenced("unknown holder".into())));
        assert_eq!(
            k.held(),
            Held::Lost(SpaceError::Fenced("unknown holder".into()))
        );

        let mut k = Keeper::granted(t0, Duration::ZERO, t0, LEASE);
        assert!(k.failed(t0 + LEASE, unavailable()), "failed after the end");
    }

    #[test]
    fn a_renewal_answered_late_extends_how_long_renewals_keep_trying() {
        let t0 = Instant::now();
        let mut k = Keeper::granted(t0, Duration::ZERO, t0, LEASE);
        // Sent at 1 s, answered at 2 s: held for sure until 1 s + lease,
        // perhaps until 2 s + lease.
        let (sent, answered) = (t0 + LEASE / 3, t0 + 2 * LEASE / 3);
        k.renewed(sent, answered);
        assert_eq!(k.held(), Held::Until(sent + LEASE));
        assert_eq!(k.deadline(), answered + LEASE);
        assert!(!k.failed(sent + LEASE, unavailable()));
        assert!(k.failed(answered + LEASE, unavailable()));
    }
}
