//! How a member outside the Raft group follows the map: the group's
//! members keep a window of the last committed changes, the leader answers
//! each lease renewal with what the member lacks (the changes after the
//! member's epoch, or the whole map when it is further behind than the
//! window), and the member applies them. Pure, so every epoch a member can
//! be at — inside the window, before it, ahead of it — has a deterministic
//! test; the glue is `raft/store.rs` (recording) and `service/` (answering,
//! applying).
//!
//! Why it is safe: the window holds only *applied* changes, so every change
//! in an answer is committed, and in commit order. A member applies a run of
//! changes only onto the epoch right before the run's first, and only if
//! every change moves the map by one epoch to the leader's; two maps at the
//! same epoch are then the same map, as with Raft's own replication.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::map::{Change, Map};

/// What a leader tells a member about the map, beside its epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Catchup {
    /// The member's map is current (or ahead of this answer).
    Current,
    /// The changes that take a map at epoch `from` to the leader's epoch,
    /// in order, one epoch each.
    Changes {
        /// The epoch the first change applies to.
        from: u64,
        /// The changes.
        changes: Vec<Change>,
    },
    /// The whole map: the member is further behind than the window.
    Whole(Map),
}

/// The last committed changes that moved the map, each one epoch, ending at
/// the map's epoch. Bounded: the oldest change leaves when a new one comes
/// past the capacity.
#[derive(Debug, Clone)]
pub struct Window {
    changes: VecDeque<Change>,
    /// The epoch after the newest change (the map's epoch).
    end: u64,
    capacity: usize,
}

impl Window {
    /// An empty window at `epoch` that keeps at most `capacity` changes (at
    /// least one).
    pub fn new(epoch: u64, capacity: usize) -> Self {
        Window {
            changes: VecDeque::new(),
            end: epoch,
            capacity: capacity.max(1),
        }
    }

    /// Starts again, empty, at `epoch`: the map was replaced whole (a
    /// snapshot), so the changes before it no longer lead to it.
    pub fn reset(&mut self, epoch: u64) {
        self.changes.clear();
        self.end = epoch;
    }

    /// Records `change`, which moved the map to `epoch`. A change that does
    /// not follow the newest one (a gap) starts the window again from it.
    pub fn record(&mut self, epoch: u64, change: Change) {
        if epoch != self.end.wrapping_add(1) {
            self.changes.clear();
        }
        self.changes.push_back(change);
        self.end = epoch;
        while self.changes.len() > self.capacity {
            self.changes.pop_front();
        }
    }

    /// The epoch of the oldest map the window leads from.
    fn start(&self) -> u64 {
        self.end - self.changes.len() as u64
    }

    /// What a member at `epoch` needs, with `map` (the map at this window's
    /// end) when the window does not reach back to it.
    pub fn catchup(&self, epoch: u64, map: &Map) -> Catchup {
        if epoch >= self.end {
            return Catchup::Current;
        }
        if epoch < self.start() {
            return Catchup::Whole(map.clone());
        }
        let skip = (epoch - self.start()) as usize;
        Catchup::Changes {
            from: epoch,
            changes: self.changes.iter().skip(skip).cloned().collect(),
        }
    }

    /// What a batch of members at `epochs` needs, with `map` (the map at
    /// this window's end).
    pub fn shared(&self, epochs: impl IntoIterator<Item = u64>, map: &Map) -> Shared {
        let start = self.start();
        let (mut oldest, mut behind) = (None::<u64>, false);
        for epoch in epochs.into_iter().filter(|e| *e < self.end) {
            if epoch < start {
                behind = true;
            } else {
                oldest = Some(oldest.map_or(epoch, |o| o.min(epoch)));
            }
        }
        Shared {
            run: oldest.map_or(Catchup::Current, |o| self.catchup(o, map)),
            whole: behind.then(|| map.clone()),
        }
    }
}

/// What a leader tells a relay about the map for a batch of heartbeats from
/// members at various epochs (`service/relay.rs`): one run of changes from
/// the oldest epoch inside the window, which every member inside it can
/// take its part of, and the whole map once if any member is further
/// behind. Answering each member separately would repeat the same changes
/// up to a relay's fan-in times in one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shared {
    /// The changes from the oldest epoch inside the window.
    pub run: Catchup,
    /// The map, when a member of the batch is behind the window.
    pub whole: Option<Map>,
}

impl Shared {
    /// What a member whose map is at `epoch` needs of this.
    pub fn for_member(&self, epoch: u64) -> Catchup {
        if let Catchup::Changes { from, changes } = &self.run {
            if epoch >= *from {
                let skip = usize::try_from(epoch - from).unwrap_or(usize::MAX);
                return match changes.get(skip..) {
                    Some(rest) if !rest.is_empty() => Catchup::Changes {
                        from: epoch,
                        changes: rest.to_vec(),
                    },
                    _ => Catchup::Current,
                };
            }
        }
        match &self.whole {
            Some(map) if epoch < map.epoch() => Catchup::Whole(map.clone()),
            _ => Catchup::Current,
        }
    }
}

/// The map a member holding `map` moves to with `catchup`; `None` when it
/// moves nothing (current, a run that does not start at or before `map`'s
/// epoch, a change that does not move the map by one epoch, or a whole map
/// not newer than `map`). Whatever a peer sent, the member's own map is
/// never changed in place.
pub fn follow(map: &Map, catchup: Catchup) -> Option<Map> {
    match catchup {
        Catchup::Current => None,
        Catchup::Whole(whole) => (whole.epoch() > map.epoch()).then_some(whole),
        Catchup::Changes { from, changes } => {
            let have = map.epoch();
            let end = from.checked_add(changes.len() as u64)?;
            if from > have || end <= have {
                return None;
            }
            let mut next = map.clone();
            for change in changes.iter().skip((have - from) as usize) {
                let before = next.epoch();
                if !next.apply(change) || next.epoch() != before + 1 {
                    return None;
                }
            }
            Some(next)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p3_dht::PeerId;

    /// A committed history: maps at epochs 0..=n, and the change into each.
    fn history(n: usize) -> (Vec<Map>, Vec<Change>) {
        let mut present: Vec<(PeerId, u64)> = Vec::new();
        let mut maps = vec![Map::default()];
        let mut changes = Vec::new();
        let mut map = Map::default();
        for i in 0..n {
            // Joins, address changes and removals: every kind of change.
            let change = match (i % 5, i % 7, present.first(), present.last()) {
                (4, _, Some(&(peer, incarnation)), _) => {
                    present.remove(0);
                    Change::Remove {
                        peer: peer.to_string(),
                        incarnation,
                    }
                }
                (_, 6, _, Some(&(peer, incarnation))) => Change::Join {
                    peer: peer.to_string(),
                    addrs: vec![format!("/ip4/127.0.0.1/tcp/{i}")],
                    incarnation,
                },
                _ => {
                    let peer = PeerId::random();
                    present.push((peer, i as u64));
                    Change::Join {
                        peer: peer.to_string(),
                        addrs: vec![],
                        incarnation: i as u64,
                    }
                }
            };
            assert!(map.apply(&change), "change {i} moves the map");
            maps.push(map.clone());
            changes.push(change);
        }
        (maps, changes)
    }

    #[test]
    fn a_member_at_every_epoch_reaches_the_leaders_map() {
        let (maps, changes) = history(40);
        let end = maps.len() - 1;
        for capacity in [1, 3, 10, 64] {
            let mut window = Window::new(0, capacity);
            for (i, change) in changes.iter().enumerate() {
                window.record(i as u64 + 1, change.clone());
            }
            for have in 0..=end {
                let catchup = window.catchup(have as u64, &maps[end]);
                let inside = end - have <= capacity;
                match (&catchup, have == end, inside) {
                    (Catchup::Current, true, _) => {}
                    (Catchup::Changes { changes, .. }, false, true) => {
                        assert_eq!(changes.len(), end - have)
                    }
                    (Catchup::Whole(_), false, false) => {}
                    _ => panic!("capacity {capacity}, member at {have}: {catchup:?}"),
                }
                let next = follow(&maps[have], catchup);
                if have == end {
                    assert_eq!(next, None);
                } else {
                    assert_eq!(next.as_ref(), Some(&maps[end]), "from {have}, {capacity}");
                }
            }
        }
    }

    /// A relay's batch holds members at every epoch: each gets what takes
    /// it to the leader's map from one shared answer.
    #[test]
    fn one_shared_answer_takes_every_member_of_a_batch_to_the_leaders_map() {
        let (maps, changes) = history(30);
        let end = maps.len() - 1;
        let mut window = Window::new(0, 10);
        for (i, change) in changes.iter().enumerate() {
            window.record(i as u64 + 1, change.clone());
        }
        let epochs = [3, 22, 25, 30, 31];
        let shared = window.shared(epochs, &maps[end]);
        assert!(matches!(shared.run, Catchup::Changes { from: 22, .. }));
        assert_eq!(
            shared.whole.as_ref(),
            Some(&maps[end]),
            "3 is behind the window"
        );
        for have in epochs.into_iter().filter(|e| *e < 30) {
            let next = follow(&maps[have as usize], shared.for_member(have));
            assert_eq!(next.as_ref(), Some(&maps[end]), "from {have}");
        }
        assert_eq!(shared.for_member(30), Catchup::Current);
        assert_eq!(
            shared.for_member(31),
            Catchup::Current,
            "ahead of the answer"
        );
        // Everyone inside the window: no map in the answer.
        let shared = window.shared([25, 28], &maps[end]);
        assert_eq!(shared.whole, None);
        assert_eq!(
            follow(&maps[28], shared.for_member(28)),
            Some(maps[end].clone())
        );
        // Everyone current: nothing at all.
        let shared = window.shared([30], &maps[end]);
        assert_eq!((shared.run, shared.whole), (Catchup::Current, None));
    }

    #[test]
    fn a_member_that_moved_on_meanwhile_applies_only_what_it_lacks() {
        let (maps, changes) = history(12);
        let run = Catchup::Changes {
            from: 4,
            changes: changes[4..].to_vec(),
        };
        // Asked at 4, got to 9 before the answer arrived.
        assert_eq!(follow(&maps[9], run.clone()), Some(maps[12].clone()));
        // Already there: nothing to do.
        assert_eq!(follow(&maps[12], run.clone()), None);
        // Behind the run's start: it cannot be applied.
        assert_eq!(follow(&maps[3], run), None);
    }

    #[test]
    fn a_gap_or_a_snapshot_starts_the_window_again() {
        let (maps, changes) = history(10);
        let mut window = Window::new(0, 8);
        for (i, change) in changes.iter().enumerate().take(5) {
            window.record(i as u64 + 1, change.clone());
        }
        window.reset(7);
        assert_eq!(window.catchup(5, &maps[7]), Catchup::Whole(maps[7].clone()));
        window.record(8, changes[7].clone());
        assert!(matches!(
            window.catchup(7, &maps[8]),
            Catchup::Changes { from: 7, .. }
        ));
        // Epoch 10 recorded after 8: the window holds only the newest.
        window.record(10, changes[9].clone());
        assert_eq!(
            window.catchup(8, &maps[10]),
            Catchup::Whole(maps[10].clone())
        );
        assert_eq!(
            window.catchup(9, &maps[10]),
            Catchup::Changes {
                from: 9,
                changes: vec![changes[9].clone()]
            }
        );
    }

    #[test]
    fn nothing_a_peer_sends_moves_the_map_wrongly() {
        let (maps, changes) = history(8);
        let have = &maps[3];
        // A change that moves nothing (a repeat) or is garbage.
        let repeat = Catchup::Changes {
            from: 3,
            changes: vec![changes[2].clone()],
        };
        assert_eq!(follow(have, repeat), None);
        let garbage = Catchup::Changes {
            from: 3,
            changes: vec![Change::Remove {
                peer: "not a peer".into(),
                incarnation: 0,
            }],
        };
        assert_eq!(follow(have, garbage), None);
        // A run with a change that moves nothing in the middle.
        let stutter = Catchup::Changes {
            from: 3,
            changes: vec![changes[3].clone(), changes[3].clone()],
        };
        assert_eq!(follow(have, stutter), None);
        // A run whose end overflows.
        let overflow = Catchup::Changes {
            from: u64::MAX,
            changes: vec![changes[3].clone()],
        };
        assert_eq!(follow(have, overflow), None);
        // A whole map not newer than the member's.
        assert_eq!(follow(have, Catchup::Whole(maps[2].clone())), None);
        assert_eq!(follow(have, Catchup::Whole(maps[3].clone())), None);
        assert_eq!(
            follow(have, Catchup::Whole(maps[6].clone())),
            Some(maps[6].clone())
        );
    }
}
