//! One leadership confirmation for every heartbeat that waits on it.
//!
//! The leader renews a lease only once a quorum has confirmed it still
//! leads, after the heartbeat arrived (a deposed leader must not extend
//! anybody's lease). openraft's `ensure_linearizable` sends a round of
//! messages to every voter per call, so with one call per heartbeat the
//! leader ran 2N rounds a second (N members, a beat every third of the
//! lease): at N = 200 the confirmations timed out and joins stopped
//! (`docs/scale.md`). Here heartbeats that arrive while a round runs wait
//! for the next one, which starts after they arrived, and that one round
//! answers them all: one round at a time, whatever N.
//!
//! Pure bookkeeping; the service runs the rounds.

/// Callers waiting for a confirmation round, `W` being how each is answered.
#[derive(Debug)]
pub struct Rounds<W> {
    /// Whether a round runs (or is about to start).
    running: bool,
    /// Callers that arrived since the running round started.
    waiting: Vec<W>,
}

impl<W> Default for Rounds<W> {
    fn default() -> Self {
        Self {
            running: false,
            waiting: Vec::new(),
        }
    }
}

impl<W> Rounds<W> {
    /// A caller arrives. Returns `true` when no round runs: the caller must
    /// then run rounds (taking each with [`Rounds::next`]) until `next`
    /// says none is left.
    pub fn arrive(&mut self, waiter: W) -> bool {
        self.waiting.push(waiter);
        !std::mem::replace(&mut self.running, true)
    }

    /// The callers the next round answers: every one that arrived before it
    /// starts, none of whom a running round can answer. `None` when nobody
    /// waits; rounds then stop until the next caller arrives.
    pub fn next(&mut self) -> Option<Vec<W>> {
        if self.waiting.is_empty() {
            self.running = false;
            None
        } else {
            Some(std::mem::take(&mut self.waiting))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_caller_starts_rounds_and_later_ones_join_the_next() {
        let mut rounds = Rounds::default();
        assert!(rounds.arrive(1));
        assert!(!rounds.arrive(2));
        // The first round answers both: neither is answered by a round that
        // started before it arrived.
        assert_eq!(rounds.next(), Some(vec![1, 2]));
        // Arrivals during that round wait for the one after it.
        assert!(!rounds.arrive(3));
        assert!(!rounds.arrive(4));
        assert_eq!(rounds.next(), Some(vec![3, 4]));
        assert_eq!(rounds.next(), None);
    }

    #[test]
    fn after_the_last_round_the_next_caller_starts_again() {
        let mut rounds = Rounds::default();
        assert!(rounds.arrive("a"));
        assert_eq!(rounds.next(), Some(vec!["a"]));
        assert_eq!(rounds.next(), None);
        assert!(rounds.arrive("b"), "nobody runs rounds: the caller must");
        assert!(!rounds.arrive("c"));
        assert_eq!(rounds.next(), Some(vec!["b", "c"]));
        assert_eq!(rounds.next(), None);
    }

    #[test]
    fn a_thousand_heartbeats_in_one_round_cost_two_rounds() {
        let mut rounds = Rounds::default();
        assert!(rounds.arrive(0));
        let first = rounds.next().expect("round");
        assert_eq!(first, vec![0]);
        for beat in 1..=1_000 {
            assert!(!rounds.arrive(beat));
        }
        assert_eq!(rounds.next().map(|w| w.len()), Some(1_000));
        assert_eq!(rounds.next(), None);
    }
}
