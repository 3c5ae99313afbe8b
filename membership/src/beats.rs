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

/// Ask again soon, renewing nothing: what every answer that is not a
/// renewal or a redirect comes to.
const SOON: Next = Next {
    renew: None,
    pace: Pace::Soon,
};

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
        let Some(asked) = self.asked.take() else {
            return SOON;
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
                SOON
            }
            Answer::NotMember => {
                self.rejoin = true;
                SOON
            }
            // A leader that cannot confirm its leadership refuses until it
            // learns it was deposed: ask Raft's leader, or around, instead.
            Answer::Refused | Answer::Failed => {
                if self.hint.is_some_and(|(named, _)| named == target) {
                    self.hint = None;
                }
                self.forget(target);
                SOON
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
                SOON
            }
            // A relay that knows no leader, cannot reach it, or is gone.
            Answer::Joined(_) | Answer::NotLeader(_) | Answer::Refused | Answer::Failed => {
                self.relay_at = self.relay_at.wrapping_add(1);
                self.relay_misses += 1;
                if self.relay_misses >= RELAY_TRIES {
                    self.relay_misses = 0;
                    self.direct_until = Some(now + lease * DIRECT_LEASES);
                }
                SOON
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
mod tests;
