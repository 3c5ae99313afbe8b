//! Signing the writes of writer-only namespaces. A record is made by the
//! key's primary (it picks the version, epoch and times) but signed by the
//! node the write came through, whose key must be a writer's: the primary
//! sends the record back to that node, which signs it only if it is exactly
//! the write it has in flight — so a primary cannot make a writer sign
//! anything else (`docs/writers.md`).

use std::{collections::HashMap, sync::Mutex};

use p3_dht::PeerId;

use crate::{
    error::{Result, SpaceError},
    name::{Namespace, ObjectName},
    object::ObjectRecord,
    protocol::{PeerRequest, PeerResponse, WriteOp, WriteRequest},
    space::ObjectSpace,
    writers::{record_statement, Signature, Signer},
};

/// How far a record's time may be from the signer's clock.
const CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// What this node asked of a write in flight: all that a record made of it
/// must match (not its value's bytes, nor where it was sent).
#[derive(Debug, Clone)]
pub(crate) struct Asked {
    ns: Namespace,
    name: ObjectName,
    ns_incarnation: u64,
    op: WriteOp,
    if_version: Option<u64>,
}

impl Asked {
    fn of(write: &WriteRequest) -> Self {
        Asked {
            ns: write.ns.clone(),
            name: write.name.clone(),
            ns_incarnation: write.ns_incarnation,
            op: write.op.clone(),
            if_version: write.if_version,
        }
    }
}

/// The writes in flight from this node, by ticket: what it would sign.
#[derive(Default)]
pub(crate) struct Signable {
    writes: Mutex<HashMap<u64, Asked>>,
}

/// Keeps a write signable until dropped.
pub(crate) struct Held<'a> {
    signable: &'a Signable,
    ticket: Option<u64>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.signable.lock().remove(&ticket);
        }
    }
}

impl Signable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Asked>> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `write` signable while the guard lives.
    pub(crate) fn hold(&self, write: &WriteRequest) -> Held<'_> {
        if let Some(ticket) = write.ticket {
            self.lock().insert(ticket, Asked::of(write));
        }
        Held {
            signable: self,
            ticket: write.ticket,
        }
    }
}

/// Whether `record` is what `write` asked for, made in an epoch this node
/// has reached (`epoch`) at a time near `now`: the only records signed.
pub(crate) fn matches(write: &Asked, record: &ObjectRecord, epoch: u64, now: u64) -> bool {
    let same_object = record.ns == write.ns
        && record.name == write.name
        && record.ns_incarnation == write.ns_incarnation;
    // A live version to replace means exactly the next version.
    let version_ok = match write.if_version {
        Some(v) if v > 0 => record.version == v + 1,
        _ => record.version > 0,
    };
    let content_ok = match &write.op {
        WriteOp::Put {
            blob,
            size,
            type_tag,
            meta,
            ttl_ms,
            volatile,
        } => {
            record.blob == Some(*blob)
                && record.size == *size
                && &record.type_tag == type_tag
                && &record.meta == meta
                && record.volatile == *volatile
                && record.expires_ms == ttl_ms.map(|t| record.modified_ms.saturating_add(t))
        }
        WriteOp::Remove => record.blob.is_none() && record.size == 0 && record.expires_ms.is_none(),
    };
    let time_ok = record.modified_ms.abs_diff(now) <= CLOCK_SKEW_MS
        && record.created_ms <= record.modified_ms;
    same_object && version_ok && content_ok && time_ok && record.epoch <= epoch
}

/// The origin's side of [`PeerRequest::Sign`].
pub(crate) fn sign(
    space: &ObjectSpace,
    ticket: u64,
    record: &ObjectRecord,
) -> Result<PeerResponse> {
    let write = space.inner.signable.lock().get(&ticket).cloned();
    let write = write.ok_or_else(|| {
        SpaceError::Forbidden("refused to sign: no write with that ticket is in flight here".into())
    })?;
    let epoch = space.membership().map().epoch();
    if !matches(&write, record, epoch, crate::object::now_ms()) {
        return Err(SpaceError::Forbidden(format!(
            "refused to sign: the record of {}/{} differs from the write asked for",
            record.ns, record.name
        )));
    }
    Ok(PeerResponse::Signed(
        space.node().signature(&record_statement(record))?,
    ))
}

/// The primary's side: the origin's signature of `record`, made of `write`.
pub(crate) async fn obtain(
    space: &ObjectSpace,
    write: &WriteRequest,
    record: &ObjectRecord,
) -> Result<Signature> {
    let ticket = write.ticket.ok_or_else(|| {
        SpaceError::Forbidden(format!(
            "refused: {}/{} is in a writer-only namespace and the write carries no ticket to sign",
            write.ns, write.name
        ))
    })?;
    let origin: PeerId = write
        .origin
        .parse()
        .map_err(|_| SpaceError::Invalid("the write's origin is not a PeerId".into()))?;
    let answer = if origin == space.me() {
        sign(space, ticket, record)?
    } else {
        let request = PeerRequest::Sign {
            ticket,
            record: record.clone(),
        };
        Box::pin(space.ask(origin, request)).await?
    };
    match answer {
        PeerResponse::Signed(signature) => Ok(signature),
        other => Err(SpaceError::Unavailable(format!(
            "unexpected answer to a signing request: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{blob::BlobHash, ordering::tests::put};

    fn write(if_version: Option<u64>) -> WriteRequest {
        WriteRequest {
            ns_incarnation: 7,
            op: WriteOp::Put {
                blob: BlobHash::of(b"v"),
                size: 1,
                type_tag: "t".into(),
                meta: Default::default(),
                ttl_ms: Some(1000),
                volatile: false,
            },
            ticket: Some(1),
            ..put(if_version)
        }
    }

    fn made(write: &WriteRequest, version: u64) -> ObjectRecord {
        let unconditional = WriteRequest {
            if_version: None,
            ..write.clone()
        };
        crate::ordering::next_record(None, &unconditional, false, 5_000, 3)
            .map(|r| ObjectRecord { version, ..r })
            .unwrap()
    }

    #[test]
    fn only_the_record_of_the_write_in_flight_is_signed() {
        let w = write(Some(4));
        let good = made(&w, 5);
        assert!(matches(&Asked::of(&w), &good, 3, 5_000));
        // Another version, value, name, namespace incarnation, expiry, an
        // epoch this node has not reached, a time far off.
        let bad = [
            ObjectRecord {
                version: 9,
                ..good.clone()
            },
            ObjectRecord {
                blob: Some(BlobHash::of(b"w")),
                ..good.clone()
            },
            ObjectRecord {
                name: ObjectName::new("b").unwrap(),
                ..good.clone()
            },
            ObjectRecord {
                ns_incarnation: 8,
                ..good.clone()
            },
            ObjectRecord {
                expires_ms: None,
                ..good.clone()
            },
            ObjectRecord {
                epoch: 4,
                ..good.clone()
            },
            ObjectRecord {
                modified_ms: 5_000 + 2 * CLOCK_SKEW_MS,
                expires_ms: Some(5_000 + 2 * CLOCK_SKEW_MS + 1000),
                ..good.clone()
            },
        ];
        for record in bad {
            assert!(!matches(&Asked::of(&w), &record, 3, 5_000), "{record:?}");
        }
        // A removal signs only a tombstone.
        let remove = WriteRequest {
            op: WriteOp::Remove,
            ..write(None)
        };
        let tombstone = ObjectRecord {
            blob: None,
            size: 0,
            expires_ms: None,
            ..good.clone()
        };
        assert!(matches(&Asked::of(&remove), &tombstone, 3, 5_000));
        assert!(!matches(&Asked::of(&remove), &good, 3, 5_000));
    }
}
