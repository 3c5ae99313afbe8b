//! The decisions of a key's replication, without I/O: what record a primary
//! makes of a write, when the write's replication is complete, and what an
//! owner does with a copy it is sent. `service.rs` (the primary) and
//! `replica.rs` (the other owners) do the network and disk work around them.
//!
//! The tests here drive them through what the network does to messages:
//! conflicts, a retry whose first attempt may already be on some owners,
//! answers that are lost, duplicated or reordered, and copies from earlier
//! membership epochs.

use std::collections::BTreeSet;

use p3_dht::PeerId;

use crate::{
    error::{Result, SpaceError},
    object::ObjectRecord,
    protocol::{PeerResponse, WriteOp, WriteRequest},
};

/// The record a primary makes of `write`, ordered after `current` (the copy
/// it holds, newest among the owners), at time `now` (ms) in membership epoch
/// `epoch`. `retry` says whether an earlier attempt of this write may already
/// be on some owners (the primary adopted a newer copy and tries again): a
/// failed condition is then not a conflict the client can trust.
pub(crate) fn next_record(
    current: Option<&ObjectRecord>,
    write: &WriteRequest,
    retry: bool,
    now: u64,
    epoch: u64,
) -> Result<ObjectRecord> {
    let path = format!("{}/{}", write.ns, write.name);
    let live_version = current.map_or(0, |c| c.live_version(now));
    if let Some(expected) = write.if_version {
        if expected != live_version && retry {
            return Err(SpaceError::OutcomeUnknown(format!(
                "the write to {path} may or may not have been applied: an owner held a newer version ({live_version}) than this primary; read it and retry"
            )));
        }
        if expected != live_version {
            return Err(SpaceError::VersionConflict {
                path,
                expected,
                current: live_version,
            });
        }
    }
    // Versions keep growing through removals and expiries, so a copy of an
    // earlier life of the name never passes for a newer one.
    let version = current.map_or(0, |c| c.version) + 1;
    let created_ms = match current {
        Some(c) if live_version > 0 => c.created_ms,
        _ => now,
    };
    let base = ObjectRecord {
        ns: write.ns.clone(),
        name: write.name.clone(),
        version,
        ns_incarnation: write.ns_incarnation,
        blob: None,
        size: 0,
        type_tag: String::new(),
        meta: Default::default(),
        created_ms,
        modified_ms: now,
        expires_ms: None,
        volatile: false,
        epoch,
        signature: None,
    };
    Ok(match &write.op {
        WriteOp::Put {
            blob,
            size,
            type_tag,
            meta,
            ttl_ms,
            volatile,
        } => ObjectRecord {
            blob: Some(*blob),
            size: *size,
            type_tag: type_tag.clone(),
            meta: meta.clone(),
            expires_ms: ttl_ms.map(|t| now.saturating_add(t)),
            volatile: *volatile,
            ..base
        },
        WriteOp::Remove => {
            if live_version == 0 {
                return Err(SpaceError::NotFound(path));
            }
            ObjectRecord {
                // A removal is as durable as what it removes.
                volatile: current.is_some_and(|c| c.volatile),
                ..base
            }
        }
    })
}

/// What an owner does with a copy it is sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// It holds this very copy already (a duplicate message): done.
    Same,
    /// It holds a newer copy (the message was overtaken, or the sender missed
    /// a write): answer with it, so the sender can catch up.
    Stale(Box<ObjectRecord>),
    /// The copy is newer than anything here: store it.
    Store,
}

/// [`Incoming`] for `record` at an owner holding `local`.
pub(crate) fn incoming(local: Option<&ObjectRecord>, record: &ObjectRecord) -> Incoming {
    match local {
        Some(local) if local.order() == record.order() => Incoming::Same,
        Some(local) if local.order() > record.order() => Incoming::Stale(Box::new(local.clone())),
        _ => Incoming::Store,
    }
}

/// Counts the answers to one attempt of a write's replication. It is
/// acknowledged only when every owner holds it (the primary counts itself):
/// then any one owner of the interval holds every acknowledged write.
#[derive(Debug)]
pub(crate) struct Tally {
    needed: usize,
    held_by: BTreeSet<PeerId>,
    newer: Option<(PeerId, ObjectRecord)>,
}

/// How one attempt of a write ended.
#[derive(Debug, PartialEq)]
pub(crate) enum Attempt {
    /// Every owner holds it.
    Acknowledged(usize),
    /// An owner holds a newer copy: the primary adopts it and tries again.
    Adopt(PeerId, ObjectRecord),
    /// Some owners did not answer or refused: the write is on `acked` of
    /// `needed` owners, and its outcome is unknown to the client.
    Short {
        /// Owners that hold it.
        acked: usize,
        /// Owners that had to.
        needed: usize,
    },
}

impl Tally {
    /// A write by `primary` (which holds it already) to `owners`.
    pub(crate) fn new(primary: PeerId, owners: &[PeerId]) -> Self {
        Tally {
            needed: owners.len(),
            held_by: BTreeSet::from([primary]),
            newer: None,
        }
    }

    /// Whether every owner holds it.
    pub(crate) fn complete(&self) -> bool {
        self.held_by.len() >= self.needed
    }

    /// Counts `origin` as holding the write: it stores the ordered record
    /// itself before it answers its client ([`PeerResponse::Ordered`]), so
    /// the client's acknowledgement still means every owner holds it.
    pub(crate) fn leave_to(&mut self, origin: PeerId) {
        self.held_by.insert(origin);
    }

    /// Counts `peer`'s answer; a duplicate counts once, a lost or failed one
    /// not at all.
    pub(crate) fn answer(&mut self, peer: PeerId, answer: &Result<PeerResponse>) {
        match answer {
            Ok(PeerResponse::Replicated) => {
                self.held_by.insert(peer);
            }
            Ok(PeerResponse::Stale(theirs)) => {
                if self
                    .newer
                    .as_ref()
                    .is_none_or(|(_, n)| theirs.order() > n.order())
                {
                    self.newer = Some((peer, (**theirs).clone()));
                }
            }
            Ok(_) | Err(_) => {}
        }
    }

    /// How the attempt ended, once every answer is in (or given up on).
    pub(crate) fn outcome(self) -> Attempt {
        if let Some((peer, theirs)) = self.newer {
            return Attempt::Adopt(peer, theirs);
        }
        if self.complete() {
            return Attempt::Acknowledged(self.held_by.len());
        }
        Attempt::Short {
            acked: self.held_by.len(),
            needed: self.needed,
        }
    }
}

/// Whether the origin's own copy of `ordered` (its primary's
/// [`PeerResponse::Ordered`]), stored with answer `stored`, completes the
/// write; if not, why.
///
/// A newer version of the same map epoch is held instead: the same primary
/// ordered it, and only after every other owner held this one, so this one
/// is complete (and already overwritten). A newer version of another epoch
/// leaves this write's fate to repair: its outcome is unknown.
pub(crate) fn origin_copy(
    ordered: &ObjectRecord,
    stored: &Result<PeerResponse>,
) -> std::result::Result<(), String> {
    match stored {
        Ok(PeerResponse::Replicated) => Ok(()),
        Ok(PeerResponse::Stale(ours)) if ours.epoch == ordered.epoch => Ok(()),
        Ok(PeerResponse::Stale(ours)) => Err(format!(
            "it holds version {} of membership epoch {}, newer than the ordered one",
            ours.version, ours.epoch
        )),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        blob::BlobHash,
        name::{Namespace, ObjectName},
    };

    const T: u64 = 1_000_000;

    /// A put of a one-byte value to `global/x`.
    pub(crate) fn put(if_version: Option<u64>) -> WriteRequest {
        WriteRequest {
            ns: Namespace::new("global").unwrap(),
            name: ObjectName::new("x").unwrap(),
            ns_incarnation: 0,
            op: WriteOp::Put {
                blob: BlobHash::of(b"v"),
                size: 1,
                type_tag: String::new(),
                meta: Default::default(),
                ttl_ms: None,
                volatile: false,
            },
            if_version,
            inline: Some(b"v".to_vec()),
            origin: String::new(),
            hops: 0,
            token: None,
            ticket: None,
            origin_stores: false,
        }
    }

    fn remove() -> WriteRequest {
        WriteRequest {
            op: WriteOp::Remove,
            inline: None,
            ..put(None)
        }
    }

    fn written(
        write: &WriteRequest,
        on: Option<&ObjectRecord>,
        at: u64,
        epoch: u64,
    ) -> ObjectRecord {
        next_record(on, write, false, at, epoch).expect("the write applies")
    }

    #[test]
    fn versions_grow_and_creation_time_is_kept_while_the_object_lives() {
        let v1 = written(&put(Some(0)), None, T, 3);
        assert_eq!((v1.version, v1.created_ms, v1.epoch), (1, T, 3));
        let v2 = written(&put(Some(1)), Some(&v1), T + 5, 3);
        assert_eq!((v2.version, v2.created_ms, v2.modified_ms), (2, T, T + 5));
        // Removed, then written again: a new life, later versions.
        let gone = written(&remove(), Some(&v2), T + 6, 4);
        assert_eq!((gone.version, gone.blob, gone.epoch), (3, None, 4));
        let again = written(&put(Some(0)), Some(&gone), T + 7, 4);
        assert_eq!((again.version, again.created_ms), (4, T + 7));
    }

    #[test]
    fn a_failed_condition_is_a_conflict_unless_an_earlier_attempt_may_have_landed() {
        let v1 = written(&put(None), None, T, 1);
        let stale = put(Some(0));
        assert_eq!(
            next_record(Some(&v1), &stale, false, T, 1),
            Err(SpaceError::VersionConflict {
                path: "global/x".into(),
                expected: 0,
                current: 1
            })
        );
        // The primary adopted a newer copy mid-write and tries again: the
        // newer copy may be this write's own first attempt.
        assert!(matches!(
            next_record(Some(&v1), &stale, true, T, 1),
            Err(SpaceError::OutcomeUnknown(m)) if m.contains("may or may not")
        ));
    }

    #[test]
    fn an_expired_object_counts_as_absent_and_a_removal_needs_a_live_one() {
        let mut w = put(None);
        if let WriteOp::Put { ttl_ms, .. } = &mut w.op {
            *ttl_ms = Some(10);
        }
        let short = written(&w, None, T, 1);
        assert_eq!(short.expires_ms, Some(T + 10));
        assert!(matches!(
            next_record(Some(&short), &remove(), false, T + 10, 1),
            Err(SpaceError::NotFound(_))
        ));
        let reborn = written(&put(Some(0)), Some(&short), T + 10, 1);
        assert_eq!((reborn.version, reborn.created_ms), (2, T + 10));
        assert!(matches!(
            next_record(None, &remove(), false, T, 1),
            Err(SpaceError::NotFound(_))
        ));
    }

    #[test]
    fn a_removal_is_as_volatile_as_what_it_removes() {
        let mut w = put(None);
        if let WriteOp::Put { volatile, .. } = &mut w.op {
            *volatile = true;
        }
        let v1 = written(&w, None, T, 1);
        assert!(written(&remove(), Some(&v1), T, 1).volatile);
    }

    #[test]
    fn owners_keep_the_newest_copy_whatever_order_messages_arrive_in() {
        let v1 = written(&put(None), None, T, 1);
        let v2 = written(&put(None), Some(&v1), T + 1, 1);
        assert_eq!(incoming(None, &v1), Incoming::Store);
        assert_eq!(incoming(Some(&v1), &v2), Incoming::Store);
        // A duplicate, and an older copy overtaken by a newer one.
        assert_eq!(incoming(Some(&v2), &v2), Incoming::Same);
        assert_eq!(
            incoming(Some(&v2), &v1),
            Incoming::Stale(Box::new(v2.clone()))
        );
        // A primary of a later epoch that took the key over from an owner
        // holding only v1 writes v2 again: its copy wins over the old v2 on
        // every owner, because the epoch orders first.
        let taken_over = written(&put(None), Some(&v1), T + 2, 2);
        assert_eq!(taken_over.version, 2);
        assert_eq!(incoming(Some(&v2), &taken_over), Incoming::Store);
        assert!(matches!(
            incoming(Some(&taken_over), &v2),
            Incoming::Stale(_)
        ));
    }

    #[test]
    fn a_write_is_acknowledged_only_when_every_owner_holds_it() {
        let (p, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let owners = [p, a, b];
        let mut tally = Tally::new(p, &owners);
        tally.answer(a, &Ok(PeerResponse::Replicated));
        // The same answer twice (a retried request) counts once.
        tally.answer(a, &Ok(PeerResponse::Replicated));
        assert!(!tally.complete());
        // A lost answer and a refusal count for nothing.
        tally.answer(b, &Err(SpaceError::OutcomeUnknown("no answer".into())));
        tally.answer(b, &Err(SpaceError::Unavailable("no lease".into())));
        assert_eq!(
            tally.outcome(),
            Attempt::Short {
                acked: 2,
                needed: 3
            }
        );

        let mut tally = Tally::new(p, &owners);
        tally.answer(b, &Ok(PeerResponse::Replicated));
        tally.answer(a, &Ok(PeerResponse::Replicated));
        assert!(tally.complete());
        assert_eq!(tally.outcome(), Attempt::Acknowledged(3));
    }

    #[test]
    fn the_newest_copy_an_owner_reports_is_adopted_before_anything_is_acknowledged() {
        let (p, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let v1 = written(&put(None), None, T, 1);
        let v2 = written(&put(None), Some(&v1), T + 1, 1);
        let mut tally = Tally::new(p, &[p, a, b]);
        tally.answer(a, &Ok(PeerResponse::Stale(Box::new(v2.clone()))));
        tally.answer(b, &Ok(PeerResponse::Stale(Box::new(v1))));
        tally.answer(b, &Ok(PeerResponse::Replicated));
        assert_eq!(tally.outcome(), Attempt::Adopt(a, v2));
    }

    #[test]
    fn an_origin_that_stores_the_write_itself_completes_it_without_an_answer() {
        let (p, origin, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut tally = Tally::new(p, &[p, origin, b]);
        tally.leave_to(origin);
        assert!(!tally.complete(), "the third owner has not answered");
        tally.answer(b, &Ok(PeerResponse::Replicated));
        assert_eq!(tally.outcome(), Attempt::Acknowledged(3));
    }

    #[test]
    fn the_origins_copy_completes_a_write_unless_a_newer_map_overtook_it() {
        let v1 = written(&put(None), None, T, 4);
        let v2 = written(&put(None), Some(&v1), T + 1, 4);
        let v2_later_map = written(&put(None), Some(&v1), T + 1, 5);
        assert_eq!(origin_copy(&v1, &Ok(PeerResponse::Replicated)), Ok(()));
        // The primary ordered v2 after every other owner held v1, and v2
        // reached the origin first.
        assert_eq!(
            origin_copy(&v1, &Ok(PeerResponse::Stale(Box::new(v2)))),
            Ok(())
        );
        let overtaken = origin_copy(&v1, &Ok(PeerResponse::Stale(Box::new(v2_later_map))));
        assert!(overtaken.unwrap_err().contains("epoch 5"));
        let refused = origin_copy(
            &v1,
            &Err(SpaceError::Unavailable("not the primary here".into())),
        );
        assert!(refused.unwrap_err().contains("not the primary here"));
        assert!(origin_copy(&v1, &Ok(PeerResponse::NotPrimary("x".into()))).is_err());
    }
}
