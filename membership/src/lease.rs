//! Membership leases, as pure arithmetic on instants the caller supplies.
//!
//! A member serves as an owner only while it holds a lease: `lease` from the
//! moment it *sent* a heartbeat that the group's leader acknowledged after
//! confirming its leadership with a quorum. The leader removes a member only
//! when it has heard nothing from it for `lease + drift`, measured from when
//! it began to lead at the earliest. So by the time a map without a member is
//! committed, that member's own view of its lease has run out (clocks may
//! run at different speeds by at most `drift` over a lease).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use p3_dht::PeerId;

use crate::map::Map;

/// How long leases last and how much clocks may disagree about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    /// How long a member may serve after sending an acknowledged heartbeat.
    pub lease: Duration,
    /// Bound on how much two nodes' clocks drift apart over one lease.
    pub drift: Duration,
}

impl Default for LeaseTimes {
    fn default() -> Self {
        LeaseTimes {
            lease: Duration::from_millis(1500),
            drift: Duration::from_millis(300),
        }
    }
}

impl LeaseTimes {
    /// How often a member sends heartbeats: three chances per lease.
    pub fn heartbeat_every(&self) -> Duration {
        self.lease / 3
    }

    /// How long the leader waits without a heartbeat before removing a member.
    pub fn removal_after(&self) -> Duration {
        self.lease + self.drift
    }

    /// The Raft group's heartbeat interval: ten per lease, so a leader
    /// confirms a renewal within a small part of the lease it extends.
    ///
    /// Every period of the membership layer is a fixed fraction of the
    /// lease, so scaling the lease scales the whole protocol in time and
    /// keeps every ratio its safety argument rests on (the simulator's
    /// `--time-scale` relies on this).
    pub fn raft_heartbeat(&self) -> Duration {
        self.lease / 10
    }

    /// The Raft election timeout's range: four to eight heartbeats.
    pub fn election_timeout(&self) -> (Duration, Duration) {
        (self.lease * 2 / 5, self.lease * 4 / 5)
    }

    /// How often the leader looks for silent members and voter changes,
    /// and how soon a member that could not renew tries again.
    pub fn lead_every(&self) -> Duration {
        self.lease / 15
    }

    /// How long the leader works on one join or heartbeat: a leader that
    /// lost its quorum cannot commit or confirm anything, and must not pile
    /// up tasks.
    pub fn handle_deadline(&self) -> Duration {
        self.lease * 4 / 3
    }
}

/// A member's own lease.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    until: Option<Instant>,
    epoch: u64,
}

impl Lease {
    /// Records that a heartbeat sent at `sent` was acknowledged at `epoch`.
    /// A late answer to an older heartbeat never shortens the lease.
    pub fn renewed(&mut self, sent: Instant, epoch: u64, times: &LeaseTimes) {
        let until = sent + times.lease;
        if self.until.is_none_or(|u| u < until) {
            self.until = Some(until);
        }
        self.epoch = self.epoch.max(epoch);
    }

    /// Whether the lease holds at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// Whether a member whose map is at `map_epoch` may act as an owner at
    /// `now`: the lease holds, and the map is at least as new as the epoch
    /// the leader acknowledged. A node removed while away and let back in
    /// gets its lease with the answer to its join, before the entries that
    /// removed and re-added it reach it; its old map would still make it the
    /// primary of keys the group has given to others meanwhile.
    pub fn serves(&self, now: Instant, map_epoch: u64) -> bool {
        self.valid(now) && map_epoch >= self.epoch
    }

    /// How long the lease still holds at `now` (zero when it does not).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
    }

    /// The newest epoch a leader acknowledged.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// The leader's record of when it last heard from each member.
#[derive(Debug, Default)]
pub struct Liveness {
    heard: HashMap<PeerId, Instant>,
    leading_since: Option<Instant>,
}

impl Liveness {
    /// This node began to lead at `now`: it knows nothing of anyone's last
    /// heartbeat, so it counts every member as heard now.
    pub fn lead(&mut self, now: Instant) {
        self.heard.clear();
        self.leading_since = Some(now);
    }

    /// This node stopped leading.
    pub fn follow(&mut self) {
        self.heard.clear();
        self.leading_since = None;
    }

    /// Whether this node leads (as far as the record goes).
    pub fn leading(&self) -> bool {
        self.leading_since.is_some()
    }

    /// `peer`'s heartbeat or join was answered at `at`. Any time at or
    /// after the request arrived is safe: the member's lease runs from
    /// before it sent the request, so a later time only removes it later.
    /// The time of the answer keeps a leader that was slow to answer (a
    /// slow commit, a slow confirmation) from counting its own delay
    /// against the member.
    pub fn heard(&mut self, peer: PeerId, at: Instant) {
        let last = self.heard.entry(peer).or_insert(at);
        if *last < at {
            *last = at;
        }
    }

    /// Members (with their incarnation) whose leases have surely run out at
    /// `now`; never `me`, and nobody while this node does not lead.
    pub fn expired(
        &self,
        map: &Map,
        me: &PeerId,
        now: Instant,
        times: &LeaseTimes,
    ) -> Vec<(PeerId, u64)> {
        let Some(since) = self.leading_since else {
            return Vec::new();
        };
        map.members()
            .filter(|(peer, _)| *peer != me)
            .filter(|(peer, _)| {
                let last = self.heard.get(peer).copied().unwrap_or(since).max(since);
                now.saturating_duration_since(last) > times.removal_after()
            })
            .map(|(peer, member)| (*peer, member.incarnation))
            .collect()
    }

    /// Whether `peer` was heard from within a lease at `now` (a candidate
    /// to become a voter).
    pub fn alive(&self, peer: &PeerId, now: Instant, times: &LeaseTimes) -> bool {
        self.heard
            .get(peer)
            .is_some_and(|last| now.saturating_duration_since(*last) <= times.lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::map_of;

    const MS: Duration = Duration::from_millis(1);
    /// Explicit times, so the arithmetic is tested, not the defaults.
    const TIMES: LeaseTimes = LeaseTimes {
        lease: Duration::from_secs(3),
        drift: Duration::from_millis(500),
    };

    #[test]
    fn a_lease_counts_from_the_heartbeat_sent_not_from_the_answer() {
        let times = TIMES;
        let t0 = Instant::now();
        let mut lease = Lease::default();
        assert!(!lease.valid(t0), "no lease before the first answer");
        lease.renewed(t0, 4, &times);
        assert!(lease.valid(t0 + 2999 * MS));
        assert!(!lease.valid(t0 + 3000 * MS));
        // A slow answer to an older heartbeat does not shorten a newer lease.
        lease.renewed(t0 + 1000 * MS, 5, &times);
        lease.renewed(t0 + 500 * MS, 4, &times);
        assert_eq!(lease.remaining(t0 + 3000 * MS), 1000 * MS);
        assert_eq!(lease.epoch(), 5);
    }

    #[test]
    fn a_lease_serves_only_a_map_as_new_as_the_epoch_it_was_granted_at() {
        let t0 = Instant::now();
        let mut lease = Lease::default();
        lease.renewed(t0, 7, &TIMES);
        assert!(!lease.serves(t0, 5), "a map from before the node's removal");
        assert!(lease.serves(t0, 7));
        assert!(lease.serves(t0, 8), "a map newer than the answer");
        assert!(!lease.serves(t0 + 3000 * MS, 7), "and only while it holds");
    }

    #[test]
    fn the_leader_removes_only_members_silent_for_lease_plus_drift() {
        let times = TIMES;
        let (me, quiet, talking) = (PeerId::random(), PeerId::random(), PeerId::random());
        let map = map_of(&[me, quiet, talking]);
        let t0 = Instant::now();
        let mut liveness = Liveness::default();
        assert!(
            liveness
                .expired(&map, &me, t0 + 10_000 * MS, &times)
                .is_empty(),
            "not leading"
        );
        liveness.lead(t0);
        liveness.heard(talking, t0 + 3000 * MS);
        assert!(liveness
            .expired(&map, &me, t0 + 3500 * MS, &times)
            .is_empty());
        let expired = liveness.expired(&map, &me, t0 + 3501 * MS, &times);
        assert_eq!(expired, vec![(quiet, 1)]);
        assert!(liveness.alive(&talking, t0 + 3501 * MS, &times));
        assert!(!liveness.alive(&quiet, t0 + 3501 * MS, &times));
    }

    #[test]
    fn a_new_leader_waits_a_full_lease_whatever_an_old_one_heard() {
        let times = TIMES;
        let (me, other) = (PeerId::random(), PeerId::random());
        let map = map_of(&[me, other]);
        let t0 = Instant::now();
        let mut liveness = Liveness::default();
        liveness.lead(t0);
        liveness.heard(other, t0);
        liveness.follow();
        liveness.lead(t0 + 10_000 * MS);
        assert!(liveness
            .expired(&map, &me, t0 + 13_500 * MS, &times)
            .is_empty());
        assert_eq!(
            liveness.expired(&map, &me, t0 + 13_501 * MS, &times).len(),
            1
        );
    }

    #[test]
    fn every_period_scales_with_the_lease_and_the_defaults_stay_as_they_were() {
        let d = LeaseTimes::default();
        assert_eq!(d.raft_heartbeat(), 150 * MS);
        assert_eq!(d.election_timeout(), (600 * MS, 1200 * MS));
        assert_eq!(d.lead_every(), 100 * MS);
        assert_eq!(d.handle_deadline(), 2000 * MS);
        // The shortest lease a node accepts still makes a valid Raft
        // configuration: a heartbeat below the election timeout's range.
        let short = LeaseTimes {
            lease: 300 * MS,
            drift: 0 * MS,
        };
        let (low, high) = short.election_timeout();
        assert!(short.raft_heartbeat() > 0 * MS && short.raft_heartbeat() < low && low < high);
        // Four times the lease: four times every period, same ratios.
        let slow = LeaseTimes {
            lease: d.lease * 4,
            drift: d.drift * 4,
        };
        assert_eq!(slow.raft_heartbeat(), d.raft_heartbeat() * 4);
        assert_eq!(slow.election_timeout().1, d.election_timeout().1 * 4);
        assert_eq!(slow.lead_every(), d.lead_every() * 4);
        assert_eq!(slow.removal_after(), d.removal_after() * 4);
    }
}
