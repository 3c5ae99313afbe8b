//! The peering rule, as a pure function of what the owners answered: may a
//! new primary start ordering writes to a key, or must it wait?
//!
//! Writes are acknowledged when a majority of the owners of the interval in
//! which they were ordered hold them, stamped with that interval's epoch. So
//! the newest acknowledged write of a key is held by a majority of the owners
//! of the last interval in which some primary ordered writes to it. Walking
//! the key's intervals from the newest: an interval of which a majority
//! answered and none holds a copy stamped in it or later ordered no write
//! (any acknowledged write would sit on a member of every majority), so the
//! walk goes on to the one before; the first interval of which an answering
//! owner holds such a copy is the last active one, and the newest copy among
//! the answers holds every acknowledged write. An interval of which no
//! majority answered may hold writes nobody else has: the primary must not
//! serve until it hears from it.

use std::collections::HashMap;

use p3_dht::PeerId;
use p3_membership::placement::{majority, Interval};

/// Whether the answers so far are enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The newest answer holds every acknowledged write.
    Settled,
    /// Too few owners of the interval that began at epoch `since` answered.
    Blocked {
        /// The interval's first epoch.
        since: u64,
        /// Its owners that answered.
        reached: usize,
        /// Its owners.
        of: usize,
    },
}

/// Decides from `answers` (each answering owner and the epoch stamp of its
/// copy, 0 when it has none) over `intervals` (newest first). Intervals the
/// map no longer remembers are not waited for.
pub fn walk(intervals: &[Interval], answers: &HashMap<PeerId, u64>) -> Verdict {
    for interval in intervals {
        let stamps: Vec<u64> = interval
            .owners
            .iter()
            .filter_map(|owner| answers.get(owner).copied())
            .collect();
        let needed = majority(interval.owners.len());
        if stamps.len() < needed {
            return Verdict::Blocked {
                since: interval.since,
                reached: stamps.len(),
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
    fn two_of_three_owners_cut_off_block_the_survivors() {
        // Owners a, b, c wrote at epoch 3; a 2|3 split removed a and b at
        // epoch 9, and the new owners c, d, e never held a write.
        let p = peers(5);
        let (a, b, c, d, e) = (p[0], p[1], p[2], p[3], p[4]);
        let history = [interval(9, &[c, d, e]), interval(3, &[a, b, c])];
        let answers = HashMap::from([(c, 3), (d, 0), (e, 0)]);
        assert_eq!(
            walk(&history, &answers),
            Verdict::Blocked {
                since: 3,
                reached: 1,
                of: 3
            },
            "a and b may hold writes c missed"
        );
        let answers = HashMap::from([(c, 3), (d, 0), (b, 3)]);
        assert_eq!(walk(&history, &answers), Verdict::Settled);
    }

    #[test]
    fn an_interval_with_a_stamped_copy_ends_the_walk() {
        let p = peers(5);
        let (a, b, c, d, e) = (p[0], p[1], p[2], p[3], p[4]);
        // c, d, e took over at 9 and wrote: an answer stamped 9 settles it,
        // however few of a, b, c are reachable.
        let history = [interval(9, &[c, d, e]), interval(3, &[a, b, c])];
        let answers = HashMap::from([(d, 9), (e, 0)]);
        assert_eq!(walk(&history, &answers), Verdict::Settled);
    }

    #[test]
    fn the_current_owners_must_answer_by_a_majority_first() {
        let p = peers(3);
        let history = [interval(4, &p)];
        let answers = HashMap::from([(p[0], 4)]);
        assert!(matches!(
            walk(&history, &answers),
            Verdict::Blocked {
                reached: 1,
                of: 3,
                ..
            }
        ));
        let answers = HashMap::from([(p[0], 0), (p[1], 0)]);
        assert_eq!(walk(&history, &answers), Verdict::Settled, "a new key");
    }

    #[test]
    fn a_copy_stamped_later_than_an_interval_settles_it_too() {
        // b re-confirmed the key at epoch 7 (a later interval's primary wrote
        // to it): that interval is at least as new.
        let p = peers(4);
        let history = [interval(5, &p[1..4]), interval(2, &p[0..3])];
        let answers = HashMap::from([(p[1], 7), (p[2], 0)]);
        assert_eq!(walk(&history, &answers), Verdict::Settled);
    }
}
