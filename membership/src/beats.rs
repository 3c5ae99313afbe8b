//! What a member's heartbeat loop decides, apart from I/O: whether to renew
//! its lease or join the map again, whom to ask, and how soon to ask again.
//! Pure, so the sequences that matter (a member removed while cut off, a
//! leader reached only through redirects) have deterministic tests; the loop
//! that sends is `service/heartbeat.rs`.

use std::time::{Duration, Instant};

use p3_dht::PeerId;

/// What the member asks the leader for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Renew the lease of a member the map holds.
    Heartbeat,
    /// Add this node (this incarnation) to the map.
    Join,
}

/// An answer to an [`Ask`], as far as the loop's decisions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The lease is renewed; the leader's map is at this epoch.
    Renewed(u64),
    /// The join is committed at this epoch.
    Joined(u64),
    /// The peer asked does not lead; it names the leader if it knows one.
    NotLeader(Option<PeerId>),
    /// The leader does not hold this node (this incarnation) in its map.
    NotMember,
    /// The leader refused for now (it could not decide in time).
    Refused,
    /// No answer: the peer is unreachable or too slow.
    Failed,
}

/// When to ask next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// At the lease's heartbeat interval.
    Beat,
    /// Soon: something is in the way of the lease (no leader found, not a
    /// member yet).
    Soon,
}

/// What the loop does with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    /// Renew the lease as of the send, at this epoch.
    pub renew: Option<u64>,
    /// When to ask again.
    pub pace: Pace,
}

/// The heartbeat loop's state between asks.
#[derive(Debug, Default)]
pub struct Beats {
    /// Set when the leader no longer holds this node, or its map lags the
    /// group's; kept until a join is acknowledged, however many redirects it
    /// takes to reach the leader. (Clearing it on the first redirect sent a
    /// heartbeat to the leader instead, which answered "not a member" again:
    /// a node cut off and removed could go on like that for ever.)
    rejoin: bool,
    /// The leader as the last peer that was not it named it: asked until it
    /// fails or names another. A node outside the group learns of no leader
    /// through Raft, so this is how it finds one.
    hint: Option<PeerId>,
    /// Since when the leader has acknowledged epochs this node's map has not
    /// reached: a member that no longer receives the group's entries
    /// (dropped from the group by mistake) joins again to get them back.
    lagging: Option<Instant>,
    /// Round robin over connected peers when no leader is known.
    next_peer: usize,
}

impl Beats {
    /// What to ask for, given whether this node's map holds it (as this
    /// incarnation).
    pub fn ask(&self, in_map: bool) -> Ask {
        if self.rejoin || !in_map {
            Ask::Join
        } else {
            Ask::Heartbeat
        }
    }

    /// Whether a leader is known, by a peer's word or by Raft's
    /// (`raft_leader`): if not, [`Beats::target`] needs the connected peers.
    pub fn knows_leader(&self, raft_leader: Option<PeerId>) -> bool {
        self.hint.or(raft_leader).is_some()
    }

    /// Whom to ask: the leader a peer named, else the one Raft knows, else
    /// the connected peers in turn (any of them redirects).
    pub fn target(&mut self, raft_leader: Option<PeerId>, peers: &[PeerId]) -> Option<PeerId> {
        if let Some(leader) = self.hint.or(raft_leader) {
            return Some(leader);
        }
        if peers.is_empty() {
            return None;
        }
        self.next_peer = self.next_peer.wrapping_add(1);
        Some(peers[self.next_peer % peers.len()])
    }

    /// Takes `answer` to what was asked of `target` at `sent`; `map_epoch`
    /// is this node's map's epoch now, `lease` the lease's length.
    pub fn answered(
        &mut self,
        target: PeerId,
        answer: Answer,
        map_epoch: u64,
        sent: Instant,
        now: Instant,
        lease: Duration,
    ) -> Next {
        let soon = |renew| Next {
            renew,
            pace: Pace::Soon,
        };
        match answer {
            Answer::Renewed(epoch) | Answer::Joined(epoch) => {
                let joined = matches!(answer, Answer::Joined(_));
                if joined {
                    self.rejoin = false;
                }
                if map_epoch >= epoch {
                    self.lagging = None;
                } else if now.duration_since(*self.lagging.get_or_insert(sent)) > lease {
                    tracing::warn!(
                        epoch,
                        have = map_epoch,
                        "the map lags the group's; joining again"
                    );
                    self.rejoin = true;
                    self.lagging = None;
                }
                // A joined node gets the map through Raft shortly: beat soon.
                let pace = if joined { Pace::Soon } else { Pace::Beat };
                Next {
                    renew: Some(epoch),
                    pace,
                }
            }
            Answer::NotLeader(leader) => {
                self.hint = leader.filter(|l| *l != target);
                soon(None)
            }
            Answer::NotMember => {
                self.rejoin = true;
                soon(None)
            }
            Answer::Refused => soon(None),
            Answer::Failed => {
                if self.hint == Some(target) {
                    self.hint = None;
                }
                soon(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(3);

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn a_member_renews_with_the_leader_raft_knows() {
        let mut beats = Beats::default();
        let [leader, other] = peers(2)[..] else {
            unreachable!()
        };
        assert_eq!(beats.ask(true), Ask::Heartbeat);
        assert_eq!(beats.target(Some(leader), &[other]), Some(leader));
        let now = Instant::now();
        let next = beats.answered(leader, Answer::Renewed(4), 4, now, now, LEASE);
        assert_eq!(
            next,
            Next {
                renew: Some(4),
                pace: Pace::Beat
            }
        );
        assert_eq!(beats.ask(true), Ask::Heartbeat);
    }

    /// The nemesis failure: a node removed while cut off knows no leader
    /// (it is a candidate in a group that left it), asks peers in turn, and
    /// must reach the leader with a join however the redirects fall.
    #[test]
    fn a_removed_member_joins_again_through_redirects() {
        let ps = peers(4);
        let (leader, candidate) = (ps[0], ps[3]);
        let now = Instant::now();
        let mut beats = Beats::default();
        // Asks a follower, which names the leader.
        let first = beats.target(None, &ps[1..3]).unwrap();
        beats.answered(first, Answer::NotLeader(Some(leader)), 4, now, now, LEASE);
        assert_eq!(beats.target(None, &ps), Some(leader));
        assert_eq!(beats.ask(true), Ask::Heartbeat);
        beats.answered(leader, Answer::NotMember, 4, now, now, LEASE);
        // The map still lists this node, yet it joins from now on...
        assert_eq!(beats.ask(true), Ask::Join);
        assert_eq!(beats.target(None, &ps), Some(leader));
        // ...through a change of leader and a peer that knows none...
        beats.answered(leader, Answer::NotLeader(None), 4, now, now, LEASE);
        assert_eq!(beats.ask(true), Ask::Join);
        let asked = beats.target(None, &[candidate]).unwrap();
        beats.answered(asked, Answer::NotLeader(None), 4, now, now, LEASE);
        assert_eq!(beats.ask(true), Ask::Join);
        let asked = beats.target(None, &ps[1..3]).unwrap();
        beats.answered(asked, Answer::NotLeader(Some(leader)), 4, now, now, LEASE);
        assert_eq!(
            (beats.ask(true), beats.target(None, &ps)),
            (Ask::Join, Some(leader))
        );
        // ...until the join is acknowledged.
        let next = beats.answered(leader, Answer::Joined(7), 4, now, now, LEASE);
        assert_eq!(
            next,
            Next {
                renew: Some(7),
                pace: Pace::Soon
            }
        );
        assert_eq!(beats.ask(true), Ask::Heartbeat);
    }

    #[test]
    fn a_named_leader_that_fails_is_forgotten() {
        let ps = peers(3);
        let now = Instant::now();
        let mut beats = Beats::default();
        beats.answered(ps[1], Answer::NotLeader(Some(ps[0])), 1, now, now, LEASE);
        assert_eq!(beats.target(Some(ps[2]), &[]), Some(ps[0]));
        beats.answered(ps[0], Answer::Failed, 1, now, now, LEASE);
        assert_eq!(beats.target(Some(ps[2]), &[]), Some(ps[2]));
        // A peer naming itself as the leader it is not is not believed.
        beats.answered(ps[1], Answer::NotLeader(Some(ps[1])), 1, now, now, LEASE);
        assert_eq!(beats.target(None, &[ps[2]]), Some(ps[2]));
    }

    #[test]
    fn a_member_whose_map_lags_for_a_lease_joins_again() {
        let leader = PeerId::random();
        let start = Instant::now();
        let mut beats = Beats::default();
        beats.answered(leader, Answer::Renewed(9), 5, start, start, LEASE);
        assert_eq!(
            beats.ask(true),
            Ask::Heartbeat,
            "a map may lag for a moment"
        );
        let later = start + LEASE + Duration::from_millis(1);
        beats.answered(leader, Answer::Renewed(9), 5, later, later, LEASE);
        assert_eq!(beats.ask(true), Ask::Join);
        // A map that caught up in between resets the clock.
        let mut beats = Beats::default();
        beats.answered(leader, Answer::Renewed(9), 5, start, start, LEASE);
        beats.answered(leader, Answer::Renewed(9), 9, start, start, LEASE);
        beats.answered(leader, Answer::Renewed(10), 9, later, later, LEASE);
        assert_eq!(beats.ask(true), Ask::Heartbeat);
    }

    #[test]
    fn a_node_missing_from_its_map_joins_and_no_peer_means_no_target() {
        let mut beats = Beats::default();
        assert_eq!(beats.ask(false), Ask::Join);
        assert_eq!(beats.target(None, &[]), None);
    }
}
