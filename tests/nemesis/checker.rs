//! What the clients saw, and the violations of P³'s promises in it: lost
//! acknowledged increments, objects taken twice, overlapping write locks,
//! duplicate fencing tokens, lost acknowledged writes, and writes reported as
//! conflicts that were applied. Pure functions of the history, so they are
//! tested below on made-up histories that break each promise.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    time::Duration,
};

/// What became of an operation, as its client saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Refused with this one-line error (nothing was done).
    Refused(String),
    /// No answer, or an answer that says the outcome is unknown.
    Unknown(String),
}

impl Outcome {
    /// Whether the operation was acknowledged.
    pub fn ok(&self) -> bool {
        *self == Outcome::Ok
    }
}

/// One operation: who ran it, when (since the run started), and its outcome.
#[derive(Debug, Clone)]
pub struct Op<T> {
    /// The node whose client ran it.
    pub node: usize,
    /// When the client started it.
    pub start: Duration,
    /// When the client had its answer.
    pub end: Duration,
    /// What it was.
    pub what: T,
    /// What became of it.
    pub outcome: Outcome,
}

/// A compare-and-set increment: write `value` if the counter is at `read`.
#[derive(Debug, Clone)]
pub struct Cas {
    /// The version the client read.
    pub read: u64,
    /// The value it wrote (unique to this attempt).
    pub value: String,
    /// The version the write made, when acknowledged.
    pub made: Option<u64>,
}

/// A write-lock hold as the command under the lock logged it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// The fencing token.
    pub token: u64,
    /// Wall-clock nanoseconds when the critical section began.
    pub from_ns: u128,
    /// And when it ended.
    pub to_ns: u128,
}

/// Everything the clients did in one run.
#[derive(Debug, Default)]
pub struct History {
    /// Counter increments.
    pub cas: Vec<Op<Cas>>,
    /// Every counter value the clients read.
    pub reads: Vec<String>,
    /// Takes, by object number.
    pub takes: Vec<Op<u32>>,
    /// Lock holds (only those whose section ran).
    pub holds: Vec<Op<Hold>>,
    /// Unique writes: (key, value).
    pub writes: Vec<Op<(String, String)>>,
}

impl History {
    /// Adds another client's history to this one.
    pub fn merge(&mut self, other: History) {
        self.cas.extend(other.cas);
        self.reads.extend(other.reads);
        self.takes.extend(other.takes);
        self.holds.extend(other.holds);
        self.writes.extend(other.writes);
    }
}

/// The state read back after the run, once every node serves again.
#[derive(Debug, Default)]
pub struct Final {
    /// The counter's version and value.
    pub counter: (u64, String),
    /// The value of every acknowledged unique write's key (None: absent).
    pub writes: HashMap<String, Option<String>>,
}

/// The violations found; all zero in a correct run.
#[derive(Debug, Default, PartialEq)]
pub struct Violations {
    /// Acknowledged increments made from a read another acknowledged one used.
    pub lost_increments: usize,
    /// Acknowledged versions above the counter's final version.
    pub rolled_back: usize,
    /// Increments reported as version conflicts whose value was later read.
    pub conflicts_applied: usize,
    /// Objects more than one acknowledged take got.
    pub taken_twice: usize,
    /// Pairs of write-lock sections that overlap in time.
    pub overlapping_holds: usize,
    /// Fencing tokens handed out more than once.
    pub duplicate_tokens: usize,
    /// Acknowledged unique writes whose value is not there afterwards.
    pub lost_writes: usize,
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lost increments, {} rolled back, {} conflicts applied, {} taken twice, \
             {} overlapping holds, {} duplicate tokens, {} lost writes",
            self.lost_increments,
            self.rolled_back,
            self.conflicts_applied,
            self.taken_twice,
            self.overlapping_holds,
            self.duplicate_tokens,
            self.lost_writes
        )
    }
}

/// Checks `history` against the state read back afterwards.
pub fn check(history: &History, after: &Final) -> Violations {
    let acked_cas: Vec<&Cas> = history
        .cas
        .iter()
        .filter(|op| op.outcome.ok())
        .map(|op| &op.what)
        .collect();
    let mut per_read: HashMap<u64, usize> = HashMap::new();
    for cas in &acked_cas {
        *per_read.entry(cas.read).or_default() += 1;
    }
    let seen = values_seen(history, after);
    let mut per_object: HashMap<u32, usize> = HashMap::new();
    for take in history.takes.iter().filter(|op| op.outcome.ok()) {
        *per_object.entry(take.what).or_default() += 1;
    }
    let holds: Vec<&Hold> = history.holds.iter().map(|op| &op.what).collect();
    Violations {
        lost_increments: per_read.values().map(|n| n - 1).sum(),
        rolled_back: acked_cas
            .iter()
            .filter(|c| c.made.is_some_and(|v| v > after.counter.0))
            .count(),
        conflicts_applied: conflicts_applied(history, &seen).len(),
        taken_twice: per_object.values().filter(|n| **n > 1).count(),
        overlapping_holds: overlaps(&holds),
        duplicate_tokens: duplicates(holds.iter().map(|h| h.token)),
        lost_writes: history
            .writes
            .iter()
            .filter(|op| op.outcome.ok())
            .filter(|op| after.writes.get(&op.what.0) != Some(&Some(op.what.1.clone())))
            .count(),
    }
}

/// The acknowledged increments that share their read with another
/// acknowledged one (the lost increments and what overwrote them).
pub fn shared_reads(history: &History) -> Vec<&Op<Cas>> {
    let acked: Vec<&Op<Cas>> = history.cas.iter().filter(|op| op.outcome.ok()).collect();
    let mut per_read: HashMap<u64, usize> = HashMap::new();
    for op in &acked {
        *per_read.entry(op.what.read).or_default() += 1;
    }
    acked
        .into_iter()
        .filter(|op| per_read[&op.what.read] > 1)
        .collect()
}

/// The increments reported as version conflicts whose value was `seen`.
pub fn conflicts_applied<'a>(history: &'a History, seen: &HashSet<&str>) -> Vec<&'a Op<Cas>> {
    history
        .cas
        .iter()
        .filter(|op| matches!(&op.outcome, Outcome::Refused(e) if e.contains("version conflict")))
        .filter(|op| seen.contains(op.what.value.as_str()))
        .collect()
}

/// Every counter value read during the run or after it.
pub fn values_seen<'a>(history: &'a History, after: &'a Final) -> HashSet<&'a str> {
    history
        .reads
        .iter()
        .map(String::as_str)
        .chain([after.counter.1.as_str()])
        .collect()
}

/// How many pairs of sections overlap.
fn overlaps(holds: &[&Hold]) -> usize {
    overlapping_pairs(holds).len()
}

/// The pairs of sections that overlap: each section against those that
/// began before it and had not ended.
pub fn overlapping_pairs<'a>(holds: &[&'a Hold]) -> Vec<(&'a Hold, &'a Hold)> {
    let mut sorted: Vec<&Hold> = holds.to_vec();
    sorted.sort_by_key(|h| h.from_ns);
    let mut pairs = Vec::new();
    for (i, hold) in sorted.iter().enumerate() {
        for earlier in &sorted[..i] {
            if earlier.to_ns > hold.from_ns {
                pairs.push((*earlier, *hold));
            }
        }
    }
    pairs
}

/// How many values occur more than once (counting each extra occurrence).
fn duplicates(values: impl Iterator<Item = u64>) -> usize {
    let mut seen = HashSet::new();
    values.filter(|v| !seen.insert(*v)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op<T>(what: T, outcome: Outcome) -> Op<T> {
        Op {
            node: 0,
            start: Duration::ZERO,
            end: Duration::ZERO,
            what,
            outcome,
        }
    }

    fn cas(read: u64, value: &str, made: Option<u64>, outcome: Outcome) -> Op<Cas> {
        let value = value.to_owned();
        op(Cas { read, value, made }, outcome)
    }

    fn hold(token: u64, from_ns: u128, to_ns: u128) -> Op<Hold> {
        op(
            Hold {
                token,
                from_ns,
                to_ns,
            },
            Outcome::Ok,
        )
    }

    fn counter(version: u64, value: &str) -> Final {
        Final {
            counter: (version, value.to_owned()),
            ..Final::default()
        }
    }

    #[test]
    fn a_clean_history_has_no_violations() {
        let history = History {
            cas: vec![
                cas(1, "a", Some(2), Outcome::Ok),
                cas(2, "b", Some(3), Outcome::Ok),
                cas(
                    2,
                    "c",
                    None,
                    Outcome::Refused("version conflict on x".into()),
                ),
                cas(3, "d", None, Outcome::Unknown("no answer".into())),
            ],
            reads: vec!["a".into(), "b".into(), "d".into()],
            takes: vec![op(1, Outcome::Ok), op(1, Outcome::Refused("gone".into()))],
            holds: vec![hold(1, 0, 10), hold(2, 10, 20), hold(3, 25, 30)],
            writes: vec![op(("k".into(), "v".into()), Outcome::Ok)],
        };
        let mut after = counter(4, "d");
        after.writes.insert("k".into(), Some("v".into()));
        assert_eq!(check(&history, &after), Violations::default());
    }

    #[test]
    fn two_acknowledged_increments_from_one_read_lose_one() {
        let history = History {
            cas: vec![
                cas(1, "a", Some(2), Outcome::Ok),
                cas(1, "b", Some(2), Outcome::Ok),
                cas(2, "c", Some(3), Outcome::Ok),
            ],
            ..History::default()
        };
        let found = check(&history, &counter(3, "c"));
        assert_eq!(found.lost_increments, 1);
        let shared: Vec<&str> = shared_reads(&history)
            .iter()
            .map(|op| op.what.value.as_str())
            .collect();
        assert_eq!(shared, ["a", "b"]);
    }

    #[test]
    fn a_counter_below_an_acknowledged_version_was_rolled_back() {
        let history = History {
            cas: vec![cas(4, "a", Some(5), Outcome::Ok)],
            ..History::default()
        };
        assert_eq!(check(&history, &counter(4, "z")).rolled_back, 1);
    }

    #[test]
    fn a_conflict_whose_value_was_read_was_applied() {
        let history = History {
            cas: vec![cas(
                1,
                "a",
                None,
                Outcome::Refused("version conflict on x".into()),
            )],
            ..History::default()
        };
        assert_eq!(check(&history, &counter(2, "a")).conflicts_applied, 1);
    }

    #[test]
    fn one_object_taken_by_two_clients_is_taken_twice() {
        let history = History {
            takes: vec![op(7, Outcome::Ok), op(7, Outcome::Ok), op(8, Outcome::Ok)],
            ..History::default()
        };
        assert_eq!(check(&history, &Final::default()).taken_twice, 1);
    }

    #[test]
    fn sections_that_overlap_and_tokens_given_twice_are_counted() {
        let history = History {
            holds: vec![
                hold(1, 0, 10),
                hold(2, 5, 15),
                hold(2, 30, 40),
                hold(3, 8, 9),
            ],
            ..History::default()
        };
        let found = check(&history, &Final::default());
        // (1,2), (1,3) and (2,3) overlap; token 2 went out twice.
        assert_eq!(found.overlapping_holds, 3);
        assert_eq!(found.duplicate_tokens, 1);
    }

    #[test]
    fn an_acknowledged_write_missing_or_changed_afterwards_is_lost() {
        let history = History {
            writes: vec![
                op(("k1".into(), "v1".into()), Outcome::Ok),
                op(("k2".into(), "v2".into()), Outcome::Ok),
                op(
                    ("k3".into(), "v3".into()),
                    Outcome::Unknown("timeout".into()),
                ),
            ],
            ..History::default()
        };
        let mut after = Final::default();
        after.writes.insert("k1".into(), None);
        after.writes.insert("k2".into(), Some("other".into()));
        assert_eq!(check(&history, &after).lost_writes, 2);
    }
}
