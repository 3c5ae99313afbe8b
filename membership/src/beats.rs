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
    /// At once: a peer named the leader, and asking it is the next step of
    /// the same ask. (Waiting a tick there was 100 ms of every join: p50
    /// 209 ms at N = 200 in `p3sim`, 110 ms without it.)
    Now,
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
    /// A join of this incarnation was acknowledged. Until the leader says
    /// "not a member", heartbeats renew the lease while this node's map
    /// catches up with the entry that added it (a map still lagging after
    /// a lease means a join again, see `lagging`). Joining again instead
    /// made every 100 ms of a new member's wait one more entry replicated
    /// to every member: at N = 150 the joins fed on themselves.
    joined: bool,
    /// The leader as the last peer that was not it named it, with the leader
    /// Raft knew of then: asked until it fails, refuses or names another, or
    /// Raft learns of a leader since. A node outside the group learns of no
    /// leader through Raft (or only of one that no longer leads), so this
    /// is how it finds one.
    hint: Option<(PeerId, Option<PeerId>)>,
    /// Since when, and at which epoch of its own, this node's map has stood
    /// still behind epochs the leader acknowledged: a member that no longer
    /// receives the group's entries (dropped from the group by mistake)
    /// joins again to get them back. A map that moves is receiving them,
    /// however far behind it is: while nodes join every few hundred
    /// milliseconds a loaded member may never catch up with the newest
    /// epoch, and each join again it made was one more entry for everybody.
    lagging: Option<(Instant, u64)>,
    /// The peer that last renewed this node's lease or took its join: the
    /// leader, for a node Raft tells nothing (it does not vote). Forgotten
    /// when it fails, refuses or says it does not lead.
    followed: Option<PeerId>,
    /// Round robin over connected peers when no leader is known, from a
    /// place of this node's own ([`Beats::starting_at`]).
    next_peer: usize,
    /// The relay through which the lease was last renewed; `None` when it
    /// was renewed with the leader directly.
    relayed_by: Option<PeerId>,
    /// Whom [`Beats::target`] or [`Beats::relay`] chose last.
    asked: Option<Asked>,
    /// Which of the relays [`crate::relays::choose`] ranks to ask: the
    /// first, or the next after each that failed.
    relay_at: usize,
    /// Relays that failed in a row since the last renewal through one.
    relay_misses: u32,
    /// Renew with the leader directly until then: the relays asked in a
    /// row failed ([`RELAY_TRIES`]).
    direct_until: Option<Instant>,
    /// Redirects followed at once since an answer that was not one: peers
    /// that name each other (a stale view of who leads) are asked at
    /// [`Pace::Soon`] after [`QUICK_REDIRECTS`], not in a tight loop.
    redirects: u32,
}

/// Whom the loop asked last.
#[derive(Debug, Clone, Copy)]
struct Asked {
    peer: PeerId,
    /// The leader Raft knew of then.
    raft_leader: Option<PeerId>,
    /// Whether `peer` was asked as a relay.
    relayed: bool,
}

/// Relays asked in a row before renewing with the leader directly: a
/// relay that hangs costs a heartbeat period, and a lease has three.
pub const RELAY_TRIES: u32 = 2;

/// How many leases a member renews directly after [`RELAY_TRIES`] relays
/// failed, before it tries relays again: long enough for the leader to
/// remove a dead relay and the map to name another.
const DIRECT_LEASES: u32 = 3;

/// Redirects in a row followed at once ([`Pace::Now`]); a peer names the
/// leader itself when it knows one, so one is what a healthy group needs.
const QUICK_REDIRECTS: u32 = 2;

impl Beats {
    /// A loop that, knowing no leader, asks the peers in turn from the
    /// `offset`-th on. Members list the same peers in the same order (the
    /// map's, sorted), so from the same place every member that lost its
    /// leader at once asked the same peer first: at N = 1,000 in `p3sim`,
    /// 700–800 members failed their handshakes with one node within
    /// seconds. A random offset per node spreads them over the members.
    pub fn starting_at(offset: usize) -> Self {
        Beats {
            next_peer: offset,
            ..Beats::default()
        }
    }

    /// What to ask for, given whether this node's map holds it (as this
    /// incarnation).
    pub fn ask(&self, in_map: bool) -> Ask {
        if self.rejoin || !(in_map || self.joined) {
            Ask::Join
        } else {
            Ask::Heartbeat
        }
    }

    /// The relay through which the lease was last renewed, if it was.
    pub fn relayed_by(&self) -> Option<PeerId> {
        self.relayed_by
    }

    /// The leader this node follows when Raft tells it of none.
    pub fn followed(&self) -> Option<PeerId> {
        self.followed
    }

    /// Whether a leader is known, by a peer's word, by Raft's
    /// (`raft_leader`) or by having renewed the lease: if not,
    /// [`Beats::target`] needs the connected peers.
    pub fn knows_leader(&mut self, raft_leader: Option<PeerId>) -> bool {
        self.leader(raft_leader).is_some()
    }

    /// The named leader while Raft has learnt nothing newer, else Raft's,
    /// else the one followed.
    fn leader(&mut self, raft_leader: Option<PeerId>) -> Option<PeerId> {
        match self.hint {
            Some((named, raft_then)) if raft_then == raft_leader => Some(named),
            _ => {
                self.hint = None;
                raft_leader.or(self.followed)
            }
        }
    }

    /// The relay to renew through, from `relays` as
    /// [`crate::relays::choose`] ranks them for this node: `None` when there
    /// are none, or while renewing directly after relays failed. Asked only
    /// for a heartbeat ([`Ask::Heartbeat`]): a join goes to the leader.
    pub fn relay(&mut self, relays: &[PeerId], now: Instant) -> Option<PeerId> {
        if relays.is_empty() || self.direct_until.is_some_and(|until| now < until) {
            return None;
        }
        let relay = relays[self.relay_at % relays.len()];
        self.asked = Some(Asked {
            peer: relay,
            raft_leader: None,
            relayed: true,
        });
        Some(relay)
    }

    /// Whom to ask: the leader a peer named, else the one Raft knows, else
    /// the connected peers in turn (any of them redirects).
    pub fn target(&mut self, raft_leader: Option<PeerId>, peers: &[PeerId]) -> Option<PeerId> {
        let target = self.leader(raft_leader).or_else(|| {
            (!peers.is_empty()).then(|| {
                self.next_peer = self.next_peer.wrapping_add(1);
                peers[self.next_peer % peers.len()]
            })
        });
        self.asked = target.map(|peer| Asked {
            peer,
            raft_leader,
            relayed: false,
        });
        target
    }

    /// Takes `answer` from the last [`Beats::target`] or [`Beats::relay`],
    /// asked at `sent`;
    /// `map_epoch` is this node's map's epoch now, `lease` the lease's length.
    pub fn answered(
        &mut self,
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
        let Some(asked) = self.asked.take() else {
            return soon(None);
        };
        if asked.relayed {
            return self.relayed(asked.peer, answer, map_epoch, sent, now, lease);
        }
        let Asked {
            peer: target,
            raft_leader,
            ..
        } = asked;
        if !matches!(answer, Answer::NotLeader(_)) {
            self.redirects = 0;
        }
        match answer {
            Answer::Renewed(epoch) | Answer::Joined(epoch) => {
                let joined = matches!(answer, Answer::Joined(_));
                if joined {
                    self.rejoin = false;
                    self.joined = true;
                }
                self.followed = Some(target);
                self.relayed_by = None;
                self.track_lag(epoch, map_epoch, sent, now, lease);
                // A joined node gets the map through Raft shortly: beat soon.
                let pace = if joined { Pace::Soon } else { Pace::Beat };
                Next {
                    renew: Some(epoch),
                    pace,
                }
            }
            Answer::NotLeader(leader) => {
                self.hint = leader.filter(|l| *l != target).map(|l| (l, raft_leader));
                self.forget(target);
                if self.hint.is_some() && self.redirects < QUICK_REDIRECTS {
                    self.redirects += 1;
                    return Next {
                        renew: None,
                        pace: Pace::Now,
                    };
                }
                soon(None)
            }
            Answer::NotMember => {
                self.rejoin = true;
                soon(None)
            }
            // A leader that cannot confirm its leadership refuses until it
            // learns it was deposed: ask Raft's leader, or around, instead.
            Answer::Refused | Answer::Failed => {
                if self.hint.is_some_and(|(named, _)| named == target) {
                    self.hint = None;
                }
                self.forget(target);
                soon(None)
            }
        }
    }

    /// Takes the answer of a relay: a renewal as the leader's own, a failure
    /// as a reason to ask the next relay, and after [`RELAY_TRIES`] of them
    /// the leader directly for a while.
    fn relayed(
        &mut self,
        relay: PeerId,
        answer: Answer,
        map_epoch: u64,
        sent: Instant,
        now: Instant,
        lease: Duration,
    ) -> Next {
        self.redirects = 0;
        match answer {
            Answer::Renewed(epoch) => {
                self.relay_misses = 0;
                self.relayed_by = Some(relay);
                self.track_lag(epoch, map_epoch, sent, now, lease);
                Next {
                    renew: Some(epoch),
                    pace: Pace::Beat,
                }
            }
            Answer::NotMember => {
                self.rejoin = true;
                Next {
                    renew: None,
                    pace: Pace::Soon,
                }
            }
            // A relay that knows no leader, cannot reach it, or is gone.
            Answer::Joined(_) | Answer::NotLeader(_) | Answer::Refused | Answer::Failed => {
                self.relay_at = self.relay_at.wrapping_add(1);
                self.relay_misses += 1;
                if self.relay_misses >= RELAY_TRIES {
                    self.relay_misses = 0;
                    self.direct_until = Some(now + lease * DIRECT_LEASES);
                }
                Next {
                    renew: None,
                    pace: Pace::Soon,
                }
            }
        }
    }

    /// Notes whether this node's map keeps up with the `epoch` a renewal
    /// (sent at `sent`) acknowledged; one that stands still behind it for a
    /// lease makes this node join again ([`Beats::lagging`]).
    fn track_lag(
        &mut self,
        epoch: u64,
        map_epoch: u64,
        sent: Instant,
        now: Instant,
        lease: Duration,
    ) {
        match self.lagging {
            _ if map_epoch >= epoch => self.lagging = None,
            Some((since, at)) if at == map_epoch => {
                if now.duration_since(since) > lease {
                    tracing::warn!(
                        epoch,
                        have = map_epoch,
                        "the map lags the group's and stands still; joining again"
                    );
                    self.rejoin = true;
                    self.lagging = None;
                }
            }
            _ => self.lagging = Some((sent, map_epoch)),
        }
    }

    /// Stops following `target`, which no longer leads or cannot be reached.
    fn forget(&mut self, target: PeerId) {
        if self.followed == Some(target) {
            self.followed = None;
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

    /// Asks (Raft knowing of `raft_leader`, these `peers` connected), gets
    /// `answer` at once; returns whom it asked and what to do.
    fn exchange(
        beats: &mut Beats,
        raft_leader: Option<PeerId>,
        peers: &[PeerId],
        answer: Answer,
    ) -> (Option<PeerId>, Next) {
        let now = Instant::now();
        let asked = beats.target(raft_leader, peers);
        (asked, beats.answered(answer, 4, now, now, LEASE))
    }

    #[test]
    fn a_member_renews_with_the_leader_raft_knows() {
        let mut beats = Beats::default();
        let [leader, other] = peers(2)[..] else {
            unreachable!()
        };
        assert_eq!(beats.ask(true), Ask::Heartbeat);
        let (asked, next) = exchange(&mut beats, Some(leader), &[other], Answer::Renewed(4));
        assert_eq!(asked, Some(leader));
        assert_eq!(
            next,
            Next {
                renew: Some(4),
                pace: Pace::Beat
            }
        );
        assert_eq!(beats.ask(true), Ask::Heartbeat);
    }

    /// Without a leader, peers are asked in turn from each node's own
    /// offset: members listing the same peers do not all ask the same one.
    #[test]
    fn without_a_leader_peers_are_asked_in_turn_from_the_nodes_offset() {
        let ps = peers(5);
        let firsts: Vec<Option<PeerId>> = (0..5)
            .map(|offset| Beats::starting_at(offset).target(None, &ps))
            .collect();
        let mut distinct = firsts.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            5,
            "five offsets, five first peers: {firsts:?}"
        );
        let mut beats = Beats::starting_at(3);
        let turns: Vec<Option<PeerId>> = (0..5).map(|_| beats.target(None, &ps)).collect();
        let mut all = turns.clone();
        all.sort();
        let mut expected: Vec<Option<PeerId>> = ps.iter().copied().map(Some).collect();
        expected.sort();
        assert_eq!(all, expected, "each once");
        assert_eq!(turns[0], firsts[3], "the same offset, the same first peer");
    }

    /// The nemesis failure: a node removed while cut off knows no leader
    /// (it is a candidate in a group that left it), asks peers in turn, and
    /// must reach the leader with a join however the redirects fall.
    #[test]
    fn a_removed_member_joins_again_through_redirects() {
        let ps = peers(4);
        let (leader, followers, candidate) = (ps[0], &ps[1..3], ps[3]);
        let mut beats = Beats::default();
        // A follower names the leader; the leader says "not a member".
        exchange(&mut beats, None, followers, Answer::NotLeader(Some(leader)));
        assert_eq!(beats.ask(true), Ask::Heartbeat);
        let (asked, _) = exchange(&mut beats, None, &ps, Answer::NotMember);
        assert_eq!(asked, Some(leader));
        // The map still lists this node, yet it joins from now on...
        assert_eq!(beats.ask(true), Ask::Join);
        // ...through a change of leader and a peer that knows none...
        let (asked, _) = exchange(&mut beats, None, &ps, Answer::NotLeader(None));
        assert_eq!(asked, Some(leader));
        assert_eq!(beats.ask(true), Ask::Join);
        exchange(&mut beats, None, &[candidate], Answer::NotLeader(None));
        assert_eq!(beats.ask(true), Ask::Join);
        exchange(&mut beats, None, followers, Answer::NotLeader(Some(leader)));
        assert_eq!(beats.ask(true), Ask::Join);
        // ...until the join is acknowledged.
        let (asked, next) = exchange(&mut beats, None, &ps, Answer::Joined(7));
        assert_eq!(asked, Some(leader));
        assert_eq!(
            next,
            Next {
                renew: Some(7),
                pace: Pace::Soon
            }
        );
        assert_eq!(beats.ask(true), Ask::Heartbeat);
    }

    /// A node Raft still tells of a leader that was deposed meanwhile
    /// follows the leader that one names, not Raft's stale word.
    #[test]
    fn a_named_leader_outranks_what_raft_knew_when_it_was_named() {
        let [stale, leader, newer] = peers(3)[..] else {
            unreachable!()
        };
        let mut beats = Beats::default();
        let (asked, _) = exchange(
            &mut beats,
            Some(stale),
            &[],
            Answer::NotLeader(Some(leader)),
        );
        assert_eq!(asked, Some(stale));
        assert_eq!(beats.target(Some(stale), &[]), Some(leader));
        // Once Raft learns of a leader (again), Raft is newer.
        assert_eq!(beats.target(Some(newer), &[]), Some(newer));
        assert_eq!(beats.target(Some(stale), &[]), Some(stale));
    }

    /// A join goes from a seed to the leader it names without waiting a
    /// tick; peers that name each other are asked at a tick's pace after
    /// two quick redirects.
    #[test]
    fn a_redirect_is_followed_at_once_but_not_in_a_loop() {
        let [seed, leader, other] = peers(3)[..] else {
            unreachable!()
        };
        let mut beats = Beats::default();
        let (_, next) = exchange(&mut beats, None, &[seed], Answer::NotLeader(Some(leader)));
        assert_eq!(next.pace, Pace::Now);
        let (asked, next) = exchange(&mut beats, None, &[seed], Answer::Joined(5));
        assert_eq!((asked, next.pace), (Some(leader), Pace::Soon));
        // A redirect that names no one gives nobody to ask at once.
        let mut beats = Beats::default();
        let (_, next) = exchange(&mut beats, None, &[seed], Answer::NotLeader(None));
        assert_eq!(next.pace, Pace::Soon);
        // Two peers that each name the other.
        let mut paces = Vec::new();
        let mut named = leader;
        for _ in 0..4 {
            named = if named == leader { other } else { leader };
            let (_, next) = exchange(&mut beats, None, &[seed], Answer::NotLeader(Some(named)));
            paces.push(next.pace);
        }
        assert_eq!(paces, [Pace::Now, Pace::Now, Pace::Soon, Pace::Soon]);
        // Any other answer starts the count again.
        exchange(&mut beats, None, &[seed], Answer::Failed);
        let (_, next) = exchange(&mut beats, None, &[seed], Answer::NotLeader(Some(leader)));
        assert_eq!(next.pace, Pace::Now);
    }

    #[test]
    fn a_named_leader_that_fails_or_refuses_is_forgotten() {
        let ps = peers(3);
        for answer in [Answer::Failed, Answer::Refused] {
            let mut beats = Beats::default();
            exchange(&mut beats, None, &ps[1..2], Answer::NotLeader(Some(ps[0])));
            let (asked, _) = exchange(&mut beats, None, &[], answer);
            assert_eq!(asked, Some(ps[0]));
            assert_eq!(beats.target(None, &ps[2..]), Some(ps[2]), "{answer:?}");
        }
        // A peer naming itself as the leader it is not is not believed.
        let mut beats = Beats::default();
        exchange(&mut beats, None, &ps[1..2], Answer::NotLeader(Some(ps[1])));
        assert_eq!(beats.target(None, &ps[2..]), Some(ps[2]));
    }

    /// A node that does not vote learns of no leader from Raft: it keeps
    /// asking the one that renewed its lease, and looks around once that
    /// one fails or no longer leads.
    #[test]
    fn a_node_outside_the_group_follows_the_leader_that_renewed_it() {
        let [first, leader, other] = peers(3)[..] else {
            unreachable!()
        };
        let mut beats = Beats::default();
        exchange(&mut beats, None, &[first], Answer::NotLeader(Some(leader)));
        exchange(&mut beats, None, &[], Answer::Joined(3));
        assert_eq!(beats.followed(), Some(leader));
        for epoch in 4..8 {
            let (asked, _) = exchange(&mut beats, None, &[other], Answer::Renewed(epoch));
            assert_eq!(asked, Some(leader), "no peer asked while the leader renews");
        }
        // Deposed: it names its successor, who renews from then on.
        let (asked, _) = exchange(&mut beats, None, &[], Answer::NotLeader(Some(other)));
        assert_eq!((asked, beats.followed()), (Some(leader), None));
        let (asked, _) = exchange(&mut beats, None, &[], Answer::Renewed(9));
        assert_eq!((asked, beats.followed()), (Some(other), Some(other)));
        // Gone: asked once more, then peers in turn.
        let (asked, _) = exchange(&mut beats, None, &[first], Answer::Failed);
        assert_eq!((asked, beats.followed()), (Some(other), None));
        assert_eq!(beats.target(None, &[first]), Some(first));
    }

    #[test]
    fn a_member_whose_map_lags_for_a_lease_joins_again() {
        let leader = PeerId::random();
        let start = Instant::now();
        let later = start + LEASE + Duration::from_millis(1);
        let mut beats = Beats::default();
        let renewed = |beats: &mut Beats, epoch, have, at| {
            beats.target(Some(leader), &[]);
            beats.answered(Answer::Renewed(epoch), have, at, at, LEASE)
        };
        renewed(&mut beats, 9, 5, start);
        assert_eq!(
            beats.ask(true),
            Ask::Heartbeat,
            "a map may lag for a moment"
        );
        renewed(&mut beats, 9, 5, later);
        assert_eq!(beats.ask(true), Ask::Join);
        // A map that caught up in between resets the clock.
        let mut beats = Beats::default();
        renewed(&mut beats, 9, 5, start);
        renewed(&mut beats, 9, 9, start);
        renewed(&mut beats, 10, 9, later);
        assert_eq!(beats.ask(true), Ask::Heartbeat);
        // A map that moves, however far behind, is receiving the entries.
        let mut beats = Beats::default();
        renewed(&mut beats, 9, 5, start);
        renewed(&mut beats, 12, 7, start + LEASE / 2);
        renewed(&mut beats, 15, 8, later);
        assert_eq!(beats.ask(true), Ask::Heartbeat);
        renewed(&mut beats, 16, 8, later + LEASE / 2);
        assert_eq!(beats.ask(true), Ask::Heartbeat, "still for half a lease");
        renewed(&mut beats, 16, 8, later + LEASE + Duration::from_millis(1));
        assert_eq!(beats.ask(true), Ask::Join, "still for a lease");
    }

    #[test]
    fn a_joined_node_beats_while_its_map_catches_up_and_joins_if_not_a_member() {
        let leader = PeerId::random();
        let mut beats = Beats::default();
        assert_eq!(beats.ask(false), Ask::Join);
        exchange(&mut beats, Some(leader), &[], Answer::Joined(5));
        // The entry that added this node has not reached its map yet.
        assert_eq!(beats.ask(false), Ask::Heartbeat);
        exchange(&mut beats, Some(leader), &[], Answer::Renewed(5));
        assert_eq!(beats.ask(false), Ask::Heartbeat);
        // Removed meanwhile: join again, map or not.
        exchange(&mut beats, Some(leader), &[], Answer::NotMember);
        assert_eq!(beats.ask(false), Ask::Join);
        assert_eq!(beats.ask(true), Ask::Join);
    }

    /// Relayed renewals: a renewal through a relay renews the lease but
    /// does not make the relay the leader followed; a relay that fails
    /// sends the next heartbeat to the next relay, and two in a row to the
    /// leader for a while, after which relays are asked again.
    #[test]
    fn a_member_renews_through_its_relays_and_the_leader_when_they_fail() {
        let [leader, first, second] = peers(3)[..] else {
            unreachable!()
        };
        let relays = [first, second];
        let start = Instant::now();
        let mut beats = Beats::default();
        let relayed = |beats: &mut Beats, answer, at| {
            let asked = beats.relay(&relays, at);
            (asked, beats.answered(answer, 4, at, at, LEASE))
        };
        let (asked, next) = relayed(&mut beats, Answer::Renewed(4), start);
        assert_eq!(asked, Some(first));
        assert_eq!(
            next,
            Next {
                renew: Some(4),
                pace: Pace::Beat
            }
        );
        assert_eq!(beats.followed(), None, "a relay is not the leader");
        assert_eq!(beats.relayed_by(), Some(first));
        // The first relay fails: the next beat goes to the second, which
        // then stays the one asked.
        let (_, next) = relayed(&mut beats, Answer::Failed, start);
        assert_eq!(
            next,
            Next {
                renew: None,
                pace: Pace::Soon
            }
        );
        let (asked, _) = relayed(&mut beats, Answer::Renewed(4), start);
        assert_eq!(asked, Some(second));
        let (asked, _) = relayed(&mut beats, Answer::Renewed(4), start);
        assert_eq!(asked, Some(second));
        // Two relays fail in a row: the leader, directly, for three leases.
        relayed(&mut beats, Answer::Refused, start);
        relayed(&mut beats, Answer::NotLeader(None), start);
        assert_eq!(beats.relay(&relays, start), None);
        let (asked, next) = exchange(&mut beats, Some(leader), &[], Answer::Renewed(5));
        assert_eq!((asked, next.renew), (Some(leader), Some(5)));
        assert_eq!(beats.relayed_by(), None);
        let later = start + LEASE * DIRECT_LEASES;
        assert_eq!(beats.relay(&relays, later - Duration::from_millis(1)), None);
        assert!(beats.relay(&relays, later).is_some(), "relays again");
        // No relays (a small map, or this node relays): always direct.
        assert_eq!(Beats::default().relay(&[], start), None);
    }

    #[test]
    fn a_member_its_relay_reports_unknown_joins_again() {
        let relay = PeerId::random();
        let mut beats = Beats::default();
        let now = Instant::now();
        beats.relay(&[relay], now);
        let next = beats.answered(Answer::NotMember, 4, now, now, LEASE);
        assert_eq!(next.renew, None);
        assert_eq!(beats.ask(true), Ask::Join);
    }

    #[test]
    fn a_node_missing_from_its_map_joins_and_no_peer_means_no_target() {
        let mut beats = Beats::default();
        assert_eq!(beats.ask(false), Ask::Join);
        assert_eq!(beats.target(None, &[]), None);
    }
}
