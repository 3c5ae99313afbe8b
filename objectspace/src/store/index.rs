//! The index shards this node keeps as an owner: one row per object name in
//! column family `index`, keyed `namespace ‖ 0 ‖ shard ‖ name`, so a shard is
//! one contiguous range. Rows are merged by [`Row::supersedes`]; they are
//! derived state (the repair audit rebuilds them), so writes are not fsynced.

use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::{
    decode, encode,
    terms::{self, replace_terms, split_key, write_terms, Step, CF_TERMS},
    Store,
};
use crate::{
    error::Result,
    index::row::{Row, Sweep},
    name::Namespace,
};

/// Column family of index rows.
pub const CF_INDEX: &str = "index";

fn shard_prefix(ns: &Namespace, shard: u8) -> Vec<u8> {
    terms::shard_prefix(ns.as_str(), shard)
}

fn row_key(ns: &Namespace, shard: u8, name: &str) -> Vec<u8> {
    let mut key = shard_prefix(ns, shard);
    key.extend_from_slice(name.as_bytes());
    key
}

impl Store {
    /// Merges `rows` (names of shard `shard` of `ns`) into the rows held
    /// here; how many replaced what was held.
    pub fn merge_index(
        &self,
        ns: &Namespace,
        shard: u8,
        rows: Vec<(String, Row)>,
    ) -> Result<usize> {
        let db = self.inner.db.raw();
        let cf = self.cf(CF_INDEX)?;
        let terms = self.cf(CF_TERMS)?;
        // Read-merge-write of the same name by two batches at once would let
        // the older one win.
        let _merging = self.inner.index.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<Vec<u8>> = rows.iter().map(|(n, _)| row_key(ns, shard, n)).collect();
        let held = db.batched_multi_get_cf(cf, &keys, false);
        let mut batch = WriteBatch::default();
        let mut merged = 0;
        for ((key, (name, row)), held) in keys.iter().zip(&rows).zip(held) {
            let held: Option<Row> = match held? {
                Some(bytes) => Some(decode(&bytes)?),
                None => None,
            };
            if row.supersedes(held.as_ref()) {
                let at = (ns.as_str(), shard, name.as_bytes());
                replace_terms(&mut batch, terms, at, held.as_ref(), row);
                batch.put_cf(cf, key, encode(row)?);
                merged += 1;
            }
        }
        if merged > 0 {
            db.write(batch)?;
            self.to_os()?;
        }
        Ok(merged)
    }

    /// Rows of shard `shard` of `ns` in name order after `after`: at most
    /// `limit` of them, and whether the shard ends there.
    pub fn index_rows(
        &self,
        ns: &Namespace,
        shard: u8,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, Row)>, bool)> {
        let prefix = shard_prefix(ns, shard);
        let start = match after {
            Some(name) => {
                let mut key = row_key(ns, shard, name);
                key.push(0); // the first key after `name`
                key
            }
            None => prefix.clone(),
        };
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut rows = Vec::new();
        for item in self.inner.db.raw().iterator_cf(self.cf(CF_INDEX)?, mode) {
            let (key, value) = item?;
            let Some(name) = key.strip_prefix(prefix.as_slice()) else {
                return Ok((rows, true));
            };
            if rows.len() == limit {
                return Ok((rows, false));
            }
            rows.push((String::from_utf8_lossy(name).into_owned(), decode(&value)?));
        }
        Ok((rows, true))
    }

    /// Names of rows in shard `shard` of `ns` that begin with `prefix`, or
    /// `None` if there are more than `limit`.
    pub fn names_with_prefix(
        &self,
        ns: &Namespace,
        shard: u8,
        prefix: &str,
        limit: usize,
    ) -> Result<Option<Vec<String>>> {
        let (shard_start, start) = (shard_prefix(ns, shard), row_key(ns, shard, prefix));
        let mut names = Vec::new();
        let scan = (CF_INDEX, &shard_start[..], &start[..]);
        let done = self.scan_names(scan, limit, &mut names, |name| {
            if name.starts_with(prefix.as_bytes()) {
                Step::Take(0)
            } else {
                Step::Stop
            }
        })?;
        Ok(done.then_some(names))
    }

    /// Writes the terms of every row if none are kept yet: a store made
    /// before terms existed has rows without them.
    pub(super) fn rebuild_terms(&self) -> Result<()> {
        let db = self.inner.db.raw();
        let terms = self.cf(CF_TERMS)?;
        if db.iterator_cf(terms, IteratorMode::Start).next().is_some() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for item in db.iterator_cf(self.cf(CF_INDEX)?, IteratorMode::Start) {
            let (key, value) = item?;
            let Some(at) = split_key(&key) else { continue };
            write_terms(&mut batch, terms, at, &decode::<Row>(&value)?, true);
            if batch.len() >= 4096 {
                db.write(std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            db.write(batch)?;
        }
        Ok(())
    }

    /// The rows held here of `names` in shard `shard` of `ns`.
    pub fn index_held(
        &self,
        ns: &Namespace,
        shard: u8,
        names: &[String],
    ) -> Result<Vec<Option<Row>>> {
        let keys: Vec<Vec<u8>> = names.iter().map(|n| row_key(ns, shard, n)).collect();
        let cf = self.cf(CF_INDEX)?;
        self.inner
            .db
            .raw()
            .batched_multi_get_cf(cf, &keys, false)
            .into_iter()
            .map(|held| match held? {
                Some(bytes) => Ok(Some(decode(&bytes)?)),
                None => Ok(None),
            })
            .collect()
    }

    /// Drops every row of namespace `ns` (it was removed).
    pub fn drop_index(&self, ns: &Namespace) -> Result<()> {
        let mut from = ns.as_str().as_bytes().to_vec();
        from.push(0);
        let mut to = ns.as_str().as_bytes().to_vec();
        to.push(1);
        let _merging = self.inner.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_INDEX)?, &from, &to);
        batch.delete_range_cf(self.cf(CF_TERMS)?, from, to);
        self.inner.db.raw().write(batch)?;
        self.to_os()
    }

    /// Turns expired entries into removal markers and forgets old markers,
    /// reading at most `limit` rows after the key `after`; the key to go on
    /// from, if any rows are left.
    pub fn sweep_index(
        &self,
        now_ms: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<Vec<u8>>> {
        let db = self.inner.db.raw();
        let cf = self.cf(CF_INDEX)?;
        let terms = self.cf(CF_TERMS)?;
        let _merging = self.inner.index.lock().unwrap_or_else(|p| p.into_inner());
        let start = after.map(|a| {
            let mut key = a.to_vec();
            key.push(0);
            key
        });
        let mode = match &start {
            Some(key) => IteratorMode::From(key, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut batch = WriteBatch::default();
        let mut last = None;
        for item in db.iterator_cf(cf, mode).take(limit) {
            let (key, value) = item?;
            let row = decode::<Row>(&value)?;
            match row.sweep(now_ms) {
                Sweep::Keep => {}
                Sweep::Expire(marker) => {
                    if let Some(at) = split_key(&key) {
                        write_terms(&mut batch, terms, at, &row, false);
                    }
                    batch.put_cf(cf, &key, encode(&marker)?)
                }
                Sweep::Forget => batch.delete_cf(cf, &key),
            }
            last = Some(key.to_vec());
        }
        if !batch.is_empty() {
            db.write(batch)?;
            self.to_os()?;
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        blob::BlobHash, index::row::REMOVED_HORIZON_MS, name::ObjectName, object::ObjectRecord,
        store::COLUMN_FAMILIES,
    };
    use p3_dht::Database;

    const T: u64 = 1_800_000_000_000;

    fn open(dir: &std::path::Path) -> Store {
        Store::open(Database::open(dir, COLUMN_FAMILIES).unwrap(), 1 << 20).unwrap()
    }

    fn row(ns: &str, name: &str, version: u64, live: bool, expires: Option<u64>) -> (String, Row) {
        let record = ObjectRecord {
            ns: Namespace::new(ns).unwrap(),
            name: ObjectName::new(name).unwrap(),
            version,
            ns_incarnation: 0,
            blob: live.then_some(BlobHash([1; 32])),
            size: 1,
            type_tag: String::new(),
            meta: Default::default(),
            created_ms: T,
            modified_ms: T,
            expires_ms: expires,
            volatile: false,
            epoch: 1,
            signature: None,
        };
        (name.to_owned(), Row::of(&record, None, T))
    }

    fn names(rows: &[(String, Row)]) -> Vec<(&str, u64)> {
        rows.iter().map(|(n, r)| (n.as_str(), r.order.1)).collect()
    }

    #[test]
    fn rows_merge_by_order_and_page_through_one_shard() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ns = Namespace::new("jobs").unwrap();
        let other = Namespace::new("jobs2").unwrap();
        let merged = store
            .merge_index(
                &ns,
                3,
                vec![
                    row("jobs", "b", 2, true, None),
                    row("jobs", "a", 1, true, None),
                ],
            )
            .unwrap();
        assert_eq!(merged, 2);
        // Older and repeated updates change nothing; newer ones replace.
        let again = vec![
            row("jobs", "b", 1, true, None),
            row("jobs", "a", 1, true, None),
            row("jobs", "c", 1, false, None),
        ];
        assert_eq!(store.merge_index(&ns, 3, again).unwrap(), 1);
        store
            .merge_index(&ns, 4, vec![row("jobs", "z", 1, true, None)])
            .unwrap();
        store
            .merge_index(&other, 3, vec![row("jobs2", "a", 9, true, None)])
            .unwrap();

        let (first, end) = store.index_rows(&ns, 3, None, 2).unwrap();
        assert_eq!((names(&first), end), (vec![("a", 1), ("b", 2)], false));
        let (rest, end) = store.index_rows(&ns, 3, Some("b"), 2).unwrap();
        assert_eq!((names(&rest), end), (vec![("c", 1)], true));
        let held = store.index_held(&ns, 3, &["b".into(), "y".into()]).unwrap();
        assert_eq!(
            held.iter()
                .map(|r| r.as_ref().map(|r| r.order.1))
                .collect::<Vec<_>>(),
            [Some(2), None]
        );

        store.drop_index(&ns).unwrap();
        assert!(store.index_rows(&ns, 3, None, 10).unwrap().0.is_empty());
        assert!(store.index_rows(&ns, 4, None, 10).unwrap().0.is_empty());
        assert_eq!(
            store.index_rows(&other, 3, None, 10).unwrap().0.len(),
            1,
            "another namespace is kept"
        );
    }

    /// A live row of `name` with meta `n` (a number) and `tag` (text).
    fn tagged(name: &str, version: u64, n: f64, tag: &str, expires: Option<u64>) -> (String, Row) {
        let (name, mut row) = row("t", name, version, true, expires);
        if let Some(entry) = &mut row.entry {
            let meta = &mut entry.summary.meta;
            meta.insert("n".into(), crate::object::MetaValue::Num(n));
            meta.insert("tag".into(), crate::object::MetaValue::Str(tag.into()));
        }
        (name, row)
    }

    #[test]
    fn terms_follow_their_rows_through_merges_sweeps_and_drops() {
        use crate::query::Term;
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ns = Namespace::new("t").unwrap();
        let with = |term: Term| store.names_with_terms(&ns, 1, &[term], 100).unwrap();
        let range = |low, high| store.names_in_range(&ns, 1, "n", (low, high), 100).unwrap();
        let tag = |t: &str| Term::MetaText("tag".into(), t.into());
        store
            .merge_index(
                &ns,
                1,
                vec![
                    tagged("a", 1, -2.5, "x", None),
                    tagged("b", 1, 0.0, "x", Some(T + 5)),
                    tagged("c", 1, 7.0, "xy", None),
                    tagged("d", 1, 1e9, "y", None),
                ],
            )
            .unwrap();
        assert_eq!(
            with(tag("x")),
            Some(vec!["a".into(), "b".into()]),
            "not xy's"
        );
        assert_eq!(
            with(Term::MetaNum("n".into(), -0.0)),
            Some(vec!["b".into()])
        );
        assert_eq!(
            range(Excluded(-2.5), Included(7.0)),
            Some(vec!["b".into(), "c".into()])
        );
        assert_eq!(
            range(Unbounded, Excluded(7.0)),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            range(Included(7.0), Unbounded),
            Some(vec!["c".into(), "d".into()])
        );
        assert_eq!(
            store
                .names_in_range(&ns, 1, "n", (Unbounded, Unbounded), 3)
                .unwrap(),
            None,
            "more than the limit"
        );
        assert_eq!(
            store.names_with_terms(&ns, 2, &[tag("x")], 100).unwrap(),
            Some(vec![]),
            "another shard"
        );
        assert_eq!(
            store.names_with_prefix(&ns, 1, "c", 100).unwrap(),
            Some(vec!["c".into()])
        );

        // A newer version's terms replace the old ones; a removal drops them.
        let gone = row("t", "c", 2, false, None);
        store
            .merge_index(&ns, 1, vec![tagged("a", 2, 7.0, "z", None), gone])
            .unwrap();
        assert_eq!(with(tag("x")), Some(vec!["b".into()]));
        assert_eq!(with(tag("z")), Some(vec!["a".into()]));
        assert_eq!(with(tag("xy")), Some(vec![]));
        assert_eq!(range(Included(7.0), Included(7.0)), Some(vec!["a".into()]));
        // An older update changes nothing.
        store
            .merge_index(&ns, 1, vec![tagged("a", 1, -2.5, "x", None)])
            .unwrap();
        assert_eq!(with(tag("x")), Some(vec!["b".into()]));

        // An expired entry's terms go with it.
        let mut after = None;
        while let Some(last) = store.sweep_index(T + 5, after.as_deref(), 1).unwrap() {
            after = Some(last);
        }
        assert_eq!(with(tag("x")), Some(vec![]));

        // A store from before terms: the rows are there, the terms rebuilt.
        let terms = store.cf(CF_TERMS).unwrap();
        let db = store.inner.db.raw();
        let all: Vec<_> = db
            .iterator_cf(terms, IteratorMode::Start)
            .map(|i| i.unwrap().0)
            .collect();
        assert!(!all.is_empty());
        for key in &all {
            db.delete_cf(terms, key).unwrap();
        }
        store.rebuild_terms().unwrap();
        let again: Vec<_> = db
            .iterator_cf(terms, IteratorMode::Start)
            .map(|i| i.unwrap().0)
            .collect();
        assert_eq!(again, all);

        store.drop_index(&ns).unwrap();
        assert_eq!(with(tag("z")), Some(vec![]));
        assert!(db.iterator_cf(terms, IteratorMode::Start).next().is_none());
    }

    #[test]
    fn sweeps_expire_entries_and_forget_markers_page_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ns = Namespace::new("q").unwrap();
        let rows = vec![
            row("q", "gone", 2, false, None),
            row("q", "keeps", 1, true, None),
            row("q", "ttl", 1, true, Some(T + 5)),
        ];
        store.merge_index(&ns, 0, rows).unwrap();
        let sweep_all = |now| {
            let mut after = None;
            while let Some(last) = store.sweep_index(now, after.as_deref(), 1).unwrap() {
                after = Some(last);
            }
        };
        sweep_all(T + 5);
        let (held, _) = store.index_rows(&ns, 0, None, 10).unwrap();
        let live: Vec<_> = held
            .iter()
            .filter(|(_, r)| r.entry.is_some())
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(live, ["keeps"], "the expired entry is a marker now");
        sweep_all(T + 5 + REMOVED_HORIZON_MS);
        let (held, _) = store.index_rows(&ns, 0, None, 10).unwrap();
        assert_eq!(names(&held), [("keeps", 1)], "old markers are forgotten");
    }
}
