//! The terms of the index rows this node keeps, so that a search finds its
//! candidates by seeking instead of reading every row of a shard: column
//! family `index_terms`, one empty value per (row, term), keyed
//! `namespace ‖ 0 ‖ shard ‖ term ‖ name`. A term is a kind byte, the
//! metadata field (`u16` length, bytes) and the value: text as a `u32`
//! length and its bytes, a number as 8 bytes that sort as the numbers do.
//! So the names with one term are one contiguous range, and the numbers of
//! one field are in order. Kept in the same write batch as the rows they
//! describe (see `index.rs`, which also rebuilds them from the rows when the
//! family is empty: a store made before terms existed).

use std::ops::Bound;

use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::Store;
use crate::{
    error::Result,
    index::row::Row,
    name::Namespace,
    query::{Searchable, Term},
};

/// Column family of index terms.
pub const CF_TERMS: &str = "index_terms";

const TYPE: u8 = b't';
const TEXT: u8 = b's';
const NUM: u8 = b'n';

/// The start of every key of shard `shard` of `ns` (rows and terms alike).
pub(super) fn shard_prefix(ns: &str, shard: u8) -> Vec<u8> {
    let mut key = ns.as_bytes().to_vec();
    key.push(0);
    key.push(shard);
    key
}

/// A key of either family split back into namespace, shard and the rest.
pub(super) fn split_key(key: &[u8]) -> Option<(&str, u8, &[u8])> {
    let zero = key.iter().position(|b| *b == 0)?;
    let ns = std::str::from_utf8(&key[..zero]).ok()?;
    let shard = *key.get(zero + 1)?;
    Some((ns, shard, &key[zero + 2..]))
}

/// Bytes of a number that sort as the numbers do (negative zero as zero).
fn sortable(x: f64) -> [u8; 8] {
    let x = if x == 0.0 { 0.0 } else { x };
    let bits = x.to_bits();
    let bits = if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    };
    bits.to_be_bytes()
}

fn unsortable(bytes: [u8; 8]) -> f64 {
    let bits = u64::from_be_bytes(bytes);
    f64::from_bits(if bits >> 63 == 1 {
        bits & !(1 << 63)
    } else {
        !bits
    })
}

/// The kind and field of a term: where the values of one field begin.
fn field_head(kind: u8, field: &str) -> Vec<u8> {
    let mut head = vec![kind];
    head.extend_from_slice(&(field.len().min(u16::MAX as usize) as u16).to_be_bytes());
    head.extend_from_slice(field.as_bytes());
    head
}

/// The self-delimiting bytes of a term: a name follows them in a key.
fn term_bytes(term: &Term) -> Vec<u8> {
    let text = |kind, field: &str, value: &str| {
        let mut bytes = field_head(kind, field);
        bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
        bytes.extend_from_slice(value.as_bytes());
        bytes
    };
    match term {
        Term::Type(t) => text(TYPE, "", t),
        Term::MetaText(field, value) => text(TEXT, field, value),
        Term::MetaNum(field, x) => {
            let mut bytes = field_head(NUM, field);
            bytes.extend_from_slice(&sortable(*x));
            bytes
        }
    }
}

/// The keys of `summary`'s terms, for the row of `name` in `shard` of `ns`.
fn term_keys(ns: &str, shard: u8, name: &[u8], summary: &Searchable) -> Vec<Vec<u8>> {
    summary
        .terms()
        .iter()
        .map(|term| {
            let mut key = shard_prefix(ns, shard);
            key.extend_from_slice(&term_bytes(term));
            key.extend_from_slice(name);
            key
        })
        .collect()
}

/// The keys of `row`'s terms (none for a removal marker).
fn row_term_keys((ns, shard, name): (&str, u8, &[u8]), row: &Row) -> Vec<Vec<u8>> {
    match &row.entry {
        Some(entry) => term_keys(ns, shard, name, &entry.summary),
        None => Vec::new(),
    }
}

/// Replaces the terms of `held` (the row kept so far, if any) with those of
/// `row` in `batch`: only the terms that differ. A new version of an object
/// mostly keeps its type and metadata, so most puts change no term at all.
pub(super) fn replace_terms(
    batch: &mut WriteBatch,
    cf: &rocksdb::ColumnFamily,
    at: (&str, u8, &[u8]),
    held: Option<&Row>,
    row: &Row,
) {
    let old = held.map_or_else(Vec::new, |held| row_term_keys(at, held));
    let new = row_term_keys(at, row);
    for key in old.iter().filter(|key| !new.contains(key)) {
        batch.delete_cf(cf, key);
    }
    for key in new.iter().filter(|key| !old.contains(key)) {
        batch.put_cf(cf, key, []);
    }
}

/// Puts (or, with `put` false, deletes) the terms of `row` in `batch`.
pub(super) fn write_terms(
    batch: &mut WriteBatch,
    cf: &rocksdb::ColumnFamily,
    (ns, shard, name): (&str, u8, &[u8]),
    row: &Row,
    put: bool,
) {
    for key in row_term_keys((ns, shard, name), row) {
        if put {
            batch.put_cf(cf, key, []);
        } else {
            batch.delete_cf(cf, key);
        }
    }
}

impl Store {
    /// Names of rows in shard `shard` of `ns` with any of `terms`, or `None`
    /// if there are more than `limit` (reading them all would cost more than
    /// reading the shard).
    pub fn names_with_terms(
        &self,
        ns: &Namespace,
        shard: u8,
        terms: &[Term],
        limit: usize,
    ) -> Result<Option<Vec<String>>> {
        let mut names = Vec::new();
        for term in terms {
            let mut prefix = shard_prefix(ns.as_str(), shard);
            prefix.extend_from_slice(&term_bytes(term));
            let scan = (CF_TERMS, &prefix[..], &prefix[..]);
            let done = self.scan_names(scan, limit, &mut names, |_| Step::Take(0))?;
            if !done {
                return Ok(None);
            }
        }
        Ok(Some(names))
    }

    /// Names of rows in shard `shard` of `ns` whose metadata field `key`
    /// holds a number within `low` and `high`; `None` if more than `limit`.
    pub fn names_in_range(
        &self,
        ns: &Namespace,
        shard: u8,
        key: &str,
        (low, high): (Bound<f64>, Bound<f64>),
        limit: usize,
    ) -> Result<Option<Vec<String>>> {
        let mut field = shard_prefix(ns.as_str(), shard);
        field.extend_from_slice(&field_head(NUM, key));
        let mut start = field.clone();
        if let Bound::Included(x) | Bound::Excluded(x) = low {
            start.extend_from_slice(&sortable(x));
        }
        let mut names = Vec::new();
        let within = |rest: &[u8]| {
            let Some(Ok(bytes)) = rest.get(..8).map(<[u8; 8]>::try_from) else {
                return Step::Stop;
            };
            let value = unsortable(bytes);
            let below = match high {
                Bound::Included(h) => value <= h,
                Bound::Excluded(h) => value < h,
                Bound::Unbounded => true,
            };
            let above = match low {
                Bound::Included(l) => value >= l,
                Bound::Excluded(l) => value > l,
                Bound::Unbounded => true,
            };
            match (below, above) {
                (false, _) => Step::Stop,
                (true, false) => Step::Skip,
                (true, true) => Step::Take(8),
            }
        };
        let done = self.scan_names((CF_TERMS, &field, &start), limit, &mut names, within)?;
        Ok(done.then_some(names))
    }

    /// Adds to `names` the names in the keys of column family `cf` from
    /// `start` on that begin with `prefix`, as `step` says what to do with
    /// what follows the prefix in each. Whether it went to the end within
    /// `limit` names.
    pub(super) fn scan_names(
        &self,
        (cf, prefix, start): (&str, &[u8], &[u8]),
        limit: usize,
        names: &mut Vec<String>,
        step: impl Fn(&[u8]) -> Step,
    ) -> Result<bool> {
        let db = self.inner.db.raw();
        let mode = IteratorMode::From(start, Direction::Forward);
        for item in db.iterator_cf(self.cf(cf)?, mode) {
            let (key, _) = item?;
            let Some(rest) = key.strip_prefix(prefix) else {
                break;
            };
            let name = match step(rest) {
                Step::Take(at) => &rest[at..],
                Step::Skip => continue,
                Step::Stop => break,
            };
            if names.len() == limit {
                return Ok(false);
            }
            names.push(String::from_utf8_lossy(name).into_owned());
        }
        Ok(true)
    }
}

/// What a scan does with a key: take the name that begins at an offset of
/// what follows the prefix, skip it, or stop there.
pub(super) enum Step {
    /// The name begins this many bytes after the prefix.
    Take(usize),
    /// Not a name wanted; go on.
    Skip,
    /// Past the names wanted.
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_sort_as_their_bytes_do() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -1.0,
            -0.0,
            0.0,
            1e-300,
            1.0,
            2.5,
            1e300,
            f64::INFINITY,
        ];
        for pair in xs.windows(2) {
            assert!(sortable(pair[0]) <= sortable(pair[1]), "{pair:?}");
        }
        assert_eq!(sortable(-0.0), sortable(0.0));
        for x in xs {
            assert_eq!(unsortable(sortable(x)), if x == 0.0 { 0.0 } else { x });
        }
    }

    #[test]
    fn a_term_ends_where_its_name_begins() {
        // A text value that is a prefix of another must not reach its names.
        let a = term_bytes(&Term::MetaText("k".into(), "ab".into()));
        let b = term_bytes(&Term::MetaText("k".into(), "abc".into()));
        assert!(!b.starts_with(&a));
        let c = term_bytes(&Term::MetaText("k".into(), "a".into()));
        let d = term_bytes(&Term::MetaText("ka".into(), "".into()));
        assert!(!d.starts_with(&c) && !c.starts_with(&d));
        let key = [shard_prefix("ns", 3), a.clone(), b"some/name".to_vec()].concat();
        assert_eq!(
            split_key(&key),
            Some(("ns", 3, [a, b"some/name".to_vec()].concat().as_slice()))
        );
    }
}
