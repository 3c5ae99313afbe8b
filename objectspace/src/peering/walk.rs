//! The peering rule, as a pure function of what the owners answered: may a
//! new primary start ordering writes to a key, or must it wait?
//!
//! A write is acknowledged once every owner of the interval in which it was
//! ordered holds it, stamped with that interval's epoch (an owner that dies
//! holds writes up until the group removes it: a new interval). So any one
//! owner of the last interval in which writes were ordered holds the newest
//! acknowledged write. Walking the key's intervals from the newest: an
//! interval whose answering owners hold no copy stamped in it or later
//! ordered no acknowledged write, so the walk goes on to the one before; the
//! first interval with such a copy is the last active one, and the newest
//! copy among the answers holds every acknowledged write. An interval none of
//! whose owners answered may hold writes nobody else has: the primary must
//! not serve until one of them does.
//!
//! Intervals from when the map had fewer members than a key has owners (the
//! group forming) are not waited for: what was written then was held by
//! fewer owners than asked for anyway, and repair has carried it on; waiting
//! for them would stop every key once a founding node is gone.

use std::collections::HashMap;

use p3_dht::PeerId;
use p3_membership::placement::Interval;

/// Whether the answers so far are enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The newest answer holds every acknowledged write.
    Settled,
    /// None of the owners of the interval that began at epoch `since`
    /// answered.
    Blocked {
        /// The interval's first epoch.
        since: u64,
        /// Its owners.
        of: usize,
    },
}

/// Decides from `answers` (each answering owner and the epoch stamp of its
/// copy, 0 when it has none) over `intervals` (newest first) of a key with
/// `r` owners. Intervals the map no longer remembers are not waited for.
pub fn walk(intervals: &[Interval], answers: &HashMap<PeerId, u64>, r: usize) -> Verdict {
    for (i, interval) in intervals.iter().enumerate() {
        if i > 0 && interval.owners.len() < r {
            continue;
        }
        let stamps: Vec<u64> = interval
            .owners
            .iter()
            .filter_map(|owner| answers.get(owner).copied())
            .collect();
        if stamps.is_empty() {
            return Verdict::Blocked {
                since: interval.since,
                of: interval.owners.len(),
            };
        }
        if stamps.iter().any(|stamp| *stamp >= interval.since) {
            return Verdict::Settled;
        }
    }
    Verdict::Settled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn interval(since: u64, owners: &[PeerId]) -> Interval {
        Interval {
            since,
            owners: owners.to_vec(),
        }
    }

    #[test]
    fn one_old_owner_is_enough_and_none_blocks() {
        // Owners a, b, c wrote at epoch 3; a 2|3 split removed a and b at
        // epoch 9: c holds every write they acknowledged.
        let p = peers(5);
        let (a, b, c, d, e) = (p[0], p[1], p[2], p[3], p[4]);
        let history = [interval(9, &[c, d, e]), interval(3, &[a, b, c])];
        let answers = HashMap::from([(c, 3), (d, 0), (e, 0)]);
        assert_eq!(walk(&history, &answers, 3), Verdict::Settled);
        // A split that cut off all three old owners blocks the new ones.
        let history = [interval(9, &[c, d, e]), interval(3, &[a, b, p[4]])];
        let answers = HashMap::from([(c, 0), (d, 0)]);
        assert_eq!(
            walk(&history, &answers, 3),
            Verdict::Blocked { since: 3, of: 3 },
            "a, b and e may hold writes c and d never saw"
        );
    }

    #[test]
    fn an_interval_without_a_stamped_copy_ordered_nothing_and_is_passed() {
        let p = peers(6);
        // [3..5] ordered nothing (its answering owner has no copy of it);
        // [1..3] did: its owner p[0] holds a copy stamped 2.
        let history = [
            interval(7, &p[3..6]),
            interval(5, &p[2..5]),
            interval(2, &p[0..3]),
        ];
        let answers = HashMap::from([(p[3], 0), (p[2], 0), (p[0], 2)]);
        assert_eq!(walk(&history, &answers, 3), Verdict::Settled);
        // Had p[1] answered with nothing from epoch 2 on, nothing would have
        // been acknowledged then (every owner holds an acknowledged write).
        let nothing_written = HashMap::from([(p[3], 0), (p[1], 0)]);
        assert_eq!(walk(&history, &nothing_written, 3), Verdict::Settled);
        let only_current = HashMap::from([(p[5], 0)]);
        assert_eq!(
            walk(&history, &only_current, 3),
            Verdict::Blocked { since: 5, of: 3 }
        );
    }

    #[test]
    fn a_copy_stamped_in_the_current_interval_settles_at_once() {
        let p = peers(4);
        let history = [interval(5, &p[1..4]), interval(2, &p[0..3])];
        let answers = HashMap::from([(p[1], 7)]);
        assert_eq!(walk(&history, &answers, 3), Verdict::Settled);
    }

    #[test]
    fn the_forming_groups_small_intervals_are_not_waited_for() {
        let p = peers(4);
        // The founder alone, then two members, then three: the founder is
        // gone, and a key never written is still writable.
        let history = [
            interval(4, &p[1..4]),
            interval(3, &p[0..3]),
            interval(2, &p[0..2]),
            interval(1, &p[0..1]),
        ];
        let answers = HashMap::from([(p[1], 0), (p[2], 0)]);
        assert_eq!(walk(&history, &answers, 3), Verdict::Settled);
        // A cluster smaller than R still needs its current owners.
        let small = [interval(2, &p[0..2])];
        assert_eq!(
            walk(&small, &HashMap::new(), 3),
            Verdict::Blocked { since: 2, of: 2 }
        );
    }
}
