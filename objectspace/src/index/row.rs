//! What a shard owner keeps per object, and the rules that decide between two
//! copies of it. Pure: no I/O, so every rule is tested deterministically.
//!
//! Rows merge by [`Row::order`]: the higher one wins wherever and whenever it
//! arrives, so updates commute and repeat harmlessly (see `docs/index.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    object::{ObjectRecord, Order},
    query::{Query, Searchable},
};

/// How long a removal is remembered. Updates reach a shard moments after
/// their write; one this late would be long superseded, and the index audit
/// of each repair pass corrects what it got wrong.
pub const REMOVED_HORIZON_MS: u64 = 10 * 60 * 1000;

/// One object's entry in a search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The version the entry describes.
    pub version: u64,
    /// When it expires.
    pub expires_ms: Option<u64>,
    /// What a query sees.
    pub summary: Searchable,
}

/// A shard owner's knowledge of one name: its newest entry, or that it was
/// removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The namespace incarnation the record belongs to.
    pub incarnation: u64,
    /// The record's order ([`ObjectRecord::order`]).
    pub order: Order,
    /// The entry; `None` marks a removal (or an expiry).
    pub entry: Option<Entry>,
    /// When the row was made here (ms): removal markers are forgotten
    /// [`REMOVED_HORIZON_MS`] after.
    pub at_ms: u64,
}

impl Row {
    /// The row of a written record; `content` is its value if small.
    pub fn of(record: &ObjectRecord, content: Option<Vec<u8>>, now_ms: u64) -> Row {
        let entry = record.blob.map(|_| Entry {
            version: record.version,
            expires_ms: record.expires_ms,
            summary: Searchable {
                name: record.name.to_string(),
                type_tag: record.type_tag.clone(),
                size: record.size,
                meta: record.meta.clone(),
                content,
            },
        });
        Row {
            incarnation: record.ns_incarnation,
            order: record.order(),
            entry,
            at_ms: now_ms,
        }
    }

    /// Whether this row replaces `held`: a later incarnation of the
    /// namespace, or a later write in the same one.
    pub fn supersedes(&self, held: Option<&Row>) -> bool {
        held.is_none_or(|h| (self.incarnation, self.order) > (h.incarnation, h.order))
    }

    /// The entry a search of incarnation `incarnation` at `now_ms` with
    /// `query` finds here, if any.
    pub fn found(&self, incarnation: u64, now_ms: u64, query: &Query) -> Option<&Entry> {
        self.entry.as_ref().filter(|e| {
            self.incarnation == incarnation
                && e.expires_ms.is_none_or(|t| t > now_ms)
                && query.matches(&e.summary)
        })
    }

    /// What a sweep at `now_ms` does with this row: keep it, turn an expired
    /// entry into a removal marker (so that a late update of an older
    /// version cannot bring it back), or forget an old marker.
    pub fn sweep(&self, now_ms: u64) -> Sweep {
        match &self.entry {
            Some(e) if e.expires_ms.is_some_and(|t| t <= now_ms) => Sweep::Expire(Row {
                entry: None,
                at_ms: now_ms,
                ..self.clone()
            }),
            Some(_) => Sweep::Keep,
            None if now_ms.saturating_sub(self.at_ms) >= REMOVED_HORIZON_MS => Sweep::Forget,
            None => Sweep::Keep,
        }
    }
}

/// The outcome of [`Row::sweep`].
#[derive(Debug, Clone, PartialEq)]
pub enum Sweep {
    /// Nothing to do.
    Keep,
    /// Replace the row by this removal marker.
    Expire(Row),
    /// Delete the row.
    Forget,
}

/// Merges the entries several owners of one shard found: per name, the
/// newest version wins. The result is in name order.
pub fn merge_found(answers: impl IntoIterator<Item = Entry>) -> Vec<Entry> {
    let mut newest: BTreeMap<String, Entry> = BTreeMap::new();
    for entry in answers {
        match newest.get(&entry.summary.name) {
            Some(have) if have.version >= entry.version => {}
            _ => {
                newest.insert(entry.summary.name.clone(), entry);
            }
        }
    }
    newest.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        blob::BlobHash,
        name::{Namespace, ObjectName},
    };

    const T: u64 = 1_800_000_000_000;

    fn record(version: u64, epoch: u64, incarnation: u64, live: bool) -> ObjectRecord {
        ObjectRecord {
            ns: Namespace::new("jobs").unwrap(),
            name: ObjectName::new("task/1").unwrap(),
            version,
            ns_incarnation: incarnation,
            blob: live.then_some(BlobHash([version as u8; 32])),
            size: 3,
            type_tag: "t".into(),
            meta: Default::default(),
            created_ms: T,
            modified_ms: T + version,
            expires_ms: None,
            volatile: false,
            epoch,
            signature: None,
        }
    }

    fn row(version: u64, epoch: u64, incarnation: u64, live: bool) -> Row {
        Row::of(&record(version, epoch, incarnation, live), None, T)
    }

    #[test]
    fn later_writes_win_whatever_order_they_arrive_in() {
        let v1 = row(1, 1, 0, true);
        let v2 = row(2, 1, 0, true);
        let gone = row(3, 1, 0, false);
        assert!(v1.supersedes(None));
        assert!(v2.supersedes(Some(&v1)));
        assert!(!v1.supersedes(Some(&v2)), "a late older update is ignored");
        assert!(gone.supersedes(Some(&v2)));
        assert!(
            !v2.supersedes(Some(&gone)),
            "a removal is not undone by its past"
        );
        assert!(
            !v2.supersedes(Some(&v2)),
            "repeating an update changes nothing"
        );
        // A write ordered by a later primary (a higher epoch) wins over one of
        // the same version the old primary ordered.
        assert!(row(2, 2, 0, true).supersedes(Some(&v2)));
    }

    #[test]
    fn a_new_incarnation_of_the_namespace_replaces_everything_of_the_old() {
        let old = row(9, 4, 0, false);
        let new = row(1, 1, 1, true);
        assert!(new.supersedes(Some(&old)));
        assert!(!old.supersedes(Some(&new)));
        let any = Query::parse("*").unwrap();
        assert!(new.found(1, T, &any).is_some());
        assert!(
            new.found(0, T, &any).is_none(),
            "searched as another incarnation"
        );
    }

    #[test]
    fn searches_see_live_unexpired_matching_entries_only() {
        let mut r = record(1, 1, 0, true);
        r.expires_ms = Some(T + 10);
        let live = Row::of(&r, Some(b"hello".to_vec()), T);
        let hello = Query::parse("content ~ \"hell\"").unwrap();
        let other = Query::parse("type = other").unwrap();
        assert!(live.found(0, T + 9, &hello).is_some());
        assert!(live.found(0, T + 10, &hello).is_none(), "expired");
        assert!(live.found(0, T, &other).is_none(), "does not match");
        assert!(row(2, 1, 0, false)
            .found(0, T, &Query::parse("*").unwrap())
            .is_none());
    }

    #[test]
    fn sweeps_turn_expired_entries_into_markers_and_forget_old_markers() {
        let mut r = record(1, 1, 0, true);
        r.expires_ms = Some(T + 10);
        let expiring = Row::of(&r, None, T);
        assert_eq!(expiring.sweep(T + 9), Sweep::Keep);
        let Sweep::Expire(marker) = expiring.sweep(T + 10) else {
            panic!("an expired entry becomes a marker");
        };
        assert_eq!((marker.entry.clone(), marker.order), (None, expiring.order));
        // The older, unexpiring version arriving late does not return.
        assert!(!row(0, 1, 0, true).supersedes(Some(&marker)));
        assert_eq!(marker.sweep(T + 10 + REMOVED_HORIZON_MS - 1), Sweep::Keep);
        assert_eq!(marker.sweep(T + 10 + REMOVED_HORIZON_MS), Sweep::Forget);
    }

    #[test]
    fn owners_answers_merge_to_the_newest_version_of_each_name() {
        let entry = |name: &str, version| Entry {
            version,
            expires_ms: None,
            summary: Searchable {
                name: name.into(),
                type_tag: String::new(),
                size: 0,
                meta: Default::default(),
                content: None,
            },
        };
        let merged = merge_found([entry("b", 1), entry("a", 3), entry("b", 4), entry("a", 2)]);
        let got: Vec<_> = merged
            .iter()
            .map(|e| (e.summary.name.as_str(), e.version))
            .collect();
        assert_eq!(got, [("a", 3), ("b", 4)]);
    }
}
