//! The results of a job as one worker heard of them (its own, and the
//! others' through a watch): whether their credit is whole, and who settles
//! the job then. Pure bookkeeping; the worker feeds it and acts on it.

use std::collections::BTreeMap;

use crate::records::{Credit, Ledger};

/// A result of the job as this worker heard of it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Heard {
    pub credit: Credit,
    /// Its writer.
    pub worker: String,
    /// Its output, if this worker wrote it or it was small enough to ride
    /// in the result's metadata.
    pub output: Option<Vec<u8>>,
}

/// Task id → result heard of.
#[derive(Debug, Default)]
pub(super) struct Results(BTreeMap<String, Heard>);

impl Results {
    fn whole(&self) -> bool {
        let mut ledger = Ledger::default();
        self.0.values().for_each(|h| ledger.add(h.credit));
        ledger.is_whole()
    }

    /// Notes the result of task `tid`; whether it made the credit whole (so
    /// that one caller acts on it, not each that hears of the same result
    /// again). An event may repeat a result this worker wrote, before or
    /// after it noted it: the output it holds is kept either way.
    pub fn note(&mut self, tid: &str, heard: Heard) -> bool {
        let before = self.whole();
        let known = self
            .0
            .entry(tid.to_owned())
            .or_insert_with(|| heard.clone());
        if known.output.is_none() {
            known.output = heard.output;
        }
        !before && self.whole()
    }

    /// Takes back a result this worker noted before writing it, when the
    /// write failed.
    pub fn forget(&mut self, tid: &str) {
        self.0.remove(tid);
    }

    /// Whether the result of task `tid` was heard of.
    pub fn has(&self, tid: &str) -> bool {
        self.0.contains_key(tid)
    }

    /// Whether `me` settles the job once the credit is whole: the writer of
    /// the result with the greatest task id, a choice every worker that heard
    /// of all results makes alike.
    pub fn settler_is(&self, me: &str) -> bool {
        self.0.values().next_back().is_some_and(|h| h.worker == me)
    }

    /// Each result's task id and the output this worker holds of it.
    pub fn outputs(&self) -> impl Iterator<Item = (&str, Option<&Vec<u8>>)> {
        self.0
            .iter()
            .map(|(tid, h)| (tid.as_str(), h.output.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credits of a root divided into `n` parts (one divide per part).
    fn shares(n: usize) -> Vec<Credit> {
        let mut root = Credit::ALL;
        let mut parts: Vec<Credit> = (1..n).map(|_| root.split()).collect();
        parts.push(root);
        parts
    }

    fn heard(credit: Credit, worker: &str, output: Option<&[u8]>) -> Heard {
        Heard {
            credit,
            worker: worker.into(),
            output: output.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn only_the_result_that_completes_the_credit_says_so_once() {
        let credits = shares(3);
        let mut results = Results::default();
        assert!(!results.note("a", heard(credits[0], "w1", None)));
        assert!(!results.note("b", heard(credits[1], "w2", None)));
        assert!(results.note("c", heard(credits[2], "w3", None)));
        // Heard again (an event after the own note, or a relisting): no news.
        assert!(!results.note("c", heard(credits[2], "w3", None)));
        assert!(!results.note("a", heard(credits[0], "w1", None)));
        // A result taken back (its write failed) is missed again, and its
        // next note completes the credit once more.
        results.forget("c");
        assert!(!results.has("c"));
        assert!(results.note("c", heard(credits[2], "w3", None)));
    }

    #[test]
    fn an_own_output_survives_an_event_that_repeats_the_result() {
        let credits = shares(2);
        for own_first in [true, false] {
            let mut results = Results::default();
            let own = heard(credits[0], "me", Some(b"42"));
            let event = heard(credits[0], "me", None);
            let (first, second) = if own_first {
                (own, event)
            } else {
                (event, own)
            };
            results.note("a", first);
            results.note("a", second);
            let outputs: Vec<_> = results.outputs().collect();
            assert_eq!(
                outputs,
                vec![("a", Some(&b"42".to_vec()))],
                "own first: {own_first}"
            );
        }
    }

    #[test]
    fn every_worker_picks_the_same_settler_whatever_order_it_heard_in() {
        let credits = shares(3);
        let all = [
            ("t1", heard(credits[0], "w1", None)),
            ("t9", heard(credits[1], "w2", None)),
            ("t5", heard(credits[2], "w3", None)),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let mut results = Results::default();
            for i in order {
                results.note(all[i].0, all[i].1.clone());
            }
            assert!(results.settler_is("w2"), "order {order:?}");
            assert!(!results.settler_is("w1") && !results.settler_is("w3"));
        }
        assert!(!Results::default().settler_is("w2"));
    }
}
