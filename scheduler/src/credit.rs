//! Termination credit: how a job knows, without counting tasks, that no part
//! of its work is outstanding.

use std::collections::BTreeMap;

use p3_objectspace::object::MetaValue;
use serde::{Deserialize, Serialize};

/// A share of the job's termination credit: 2^-`exponent` of the whole. The
/// root task holds all of it (exponent 0); a divide halves the divided task's
/// share and gives the other half to the new task, so every share is a power
/// of two and can always be halved again; a finished task hands its share back
/// in its result. The job is done exactly when the shares handed back add up
/// to the whole ([`Ledger`]): no part of the work can be outstanding then, and
/// until then some share — some task — is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    /// The share is 2^-exponent.
    pub exponent: u32,
}

impl Credit {
    /// All the credit there is.
    pub const ALL: Credit = Credit { exponent: 0 };

    /// Halves this share and returns the other half.
    pub fn split(&mut self) -> Credit {
        self.exponent = self.exponent.saturating_add(1);
        *self
    }

    /// As metadata of a result, so a listing is enough to add the shares up.
    pub fn to_meta(self) -> MetaValue {
        MetaValue::Num(f64::from(self.exponent))
    }

    /// Reads [`Credit::to_meta`] back.
    pub fn from_meta(value: Option<&MetaValue>) -> Option<Credit> {
        match value {
            Some(MetaValue::Num(n))
                if *n >= 0.0 && *n <= f64::from(u32::MAX) && n.fract() == 0.0 =>
            {
                Some(Credit {
                    exponent: *n as u32,
                })
            }
            _ => None,
        }
    }
}

/// A sum of credit shares, exact however many and however small: a binary
/// fraction kept as a count per exponent, carried like binary addition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// exponent → how many shares of 2^-exponent, after carrying (at most one
    /// of each exponent above 0).
    counts: BTreeMap<u32, u64>,
}

impl Ledger {
    /// Adds one share.
    pub fn add(&mut self, credit: Credit) {
        let mut exponent = credit.exponent;
        loop {
            let count = self.counts.entry(exponent).or_insert(0);
            *count += 1;
            if exponent == 0 || *count < 2 {
                return;
            }
            // Two halves of 2^-(e-1) make one 2^-(e-1).
            self.counts.remove(&exponent);
            exponent -= 1;
        }
    }

    /// Whether the shares add up to exactly the whole.
    pub fn is_whole(&self) -> bool {
        self.counts.len() == 1 && self.counts.get(&0) == Some(&1)
    }

    /// Whether they add up to more than the whole (a broken convention).
    pub fn exceeds_whole(&self) -> bool {
        match self.counts.get(&0) {
            Some(&n) => n > 1 || self.counts.len() > 1,
            None => false,
        }
    }

    /// The sum as a fraction of the whole (rounded: for progress bars).
    pub fn fraction(&self) -> f64 {
        self.counts
            .iter()
            .map(|(&e, &n)| n as f64 * 0.5f64.powi(e.min(1074) as i32))
            // Not `sum`: an empty float sum is -0.0, shown as "-0" progress.
            .fold(0.0, |total, part| total + part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_shares_add_back_to_exactly_the_whole() {
        // Split unevenly and deep (far deeper than any fixed-width number allows).
        let mut shares = vec![Credit::ALL];
        for round in 0..3000 {
            let i = if round % 3 == 0 {
                shares.len() - 1
            } else {
                round % shares.len()
            };
            let half = shares[i].split();
            shares.push(half);
        }
        assert!(shares.iter().any(|c| c.exponent > 500));
        let mut ledger = Ledger::default();
        for (i, share) in shares.iter().enumerate() {
            assert!(
                !ledger.is_whole(),
                "whole before share {i} of {}",
                shares.len()
            );
            ledger.add(*share);
        }
        assert!(ledger.is_whole() && !ledger.exceeds_whole());
        ledger.add(shares[7]);
        assert!(ledger.exceeds_whole() && !ledger.is_whole());
        let meta = Credit { exponent: 77 }.to_meta();
        assert_eq!(
            Credit::from_meta(Some(&meta)),
            Some(Credit { exponent: 77 })
        );
        assert_eq!(Credit::from_meta(Some(&MetaValue::Num(-1.0))), None);
    }
}
