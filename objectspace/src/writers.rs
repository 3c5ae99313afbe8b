//! Writer-only namespaces: which keys may change one, and the signatures that
//! prove a change came from one of them (`docs/writers.md`).
//!
//! Pure code: the signed statements and their checks. Who signs and who
//! checks is the write path's business ([`crate::service`],
//! [`crate::replica`], [`crate::lock`], [`crate::namespaces`]).

use p3_dht::{Keypair, Node, PeerId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Result, SpaceError},
    lock::LockMode,
    name::{Namespace, ObjectName},
    object::ObjectRecord,
};

/// Most writers one list holds.
pub const MAX_WRITERS: usize = 64;
/// Most changes a namespace's writer history keeps: each is checked by every
/// node that reads the namespace list.
pub const MAX_CHANGES: usize = 256;

/// A signature and the public key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The signer's public key, protobuf-encoded as libp2p encodes it (its
    /// PeerId is derived from it).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The signature of the statement.
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

/// A key that signs: a node's identity, or a bare keypair.
pub trait Signer {
    /// The signer's PeerId.
    fn peer(&self) -> PeerId;
    /// Its signature of `statement`.
    fn signature(&self, statement: &[u8]) -> Result<Signature>;
}

impl Signer for Node {
    fn peer(&self) -> PeerId {
        self.peer_id()
    }

    fn signature(&self, statement: &[u8]) -> Result<Signature> {
        Ok(Signature {
            key: self.public_key().encode_protobuf(),
            sig: self
                .sign(statement)
                .map_err(|e| SpaceError::Invalid(e.to_string()))?,
        })
    }
}

impl Signer for Keypair {
    fn peer(&self) -> PeerId {
        self.public().to_peer_id()
    }

    fn signature(&self, statement: &[u8]) -> Result<Signature> {
        Ok(Signature {
            key: self.public().encode_protobuf(),
            sig: self
                .sign(statement)
                .map_err(|e| SpaceError::Invalid(format!("cannot sign: {e}")))?,
        })
    }
}

impl Signature {
    /// The signer, if this is a valid signature of `statement`.
    pub fn verify(&self, statement: &[u8]) -> Result<PeerId> {
        let key = PublicKey::try_decode_protobuf(&self.key)
            .map_err(|_| forbidden("the signer's key does not decode"))?;
        if !key.verify(statement, &self.sig) {
            return Err(forbidden("the signature does not verify"));
        }
        Ok(key.to_peer_id())
    }
}

fn forbidden(why: &str) -> SpaceError {
    SpaceError::Forbidden(format!("refused: {why}"))
}

/// CBOR of a statement: a domain tag first, so a signature made for one kind
/// of statement never passes for another.
fn statement<T: Serialize>(tag: &str, body: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Serialising plain data into a Vec cannot fail.
    let _ = ciborium::into_writer(&(tag, body), &mut bytes);
    bytes
}

/// What a writer signs for a record: every field but the signature itself,
/// so neither the value nor the version, the epoch or the namespace it
/// belongs to can be changed without the writer's key.
pub fn record_statement(record: &ObjectRecord) -> Vec<u8> {
    let unsigned = ObjectRecord {
        signature: None,
        ..record.clone()
    };
    statement("p3/record/1", &unsigned)
}

/// What a writer signs to ask for a lock.
pub fn lock_statement(
    ns: &Namespace,
    incarnation: u64,
    name: &ObjectName,
    holder: u64,
    mode: LockMode,
) -> Vec<u8> {
    statement("p3/lock/1", &(ns, incarnation, name, holder, mode))
}

/// One step of a namespace's writer history, signed by a writer of the list
/// before it (the first by a writer it lists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The writers from this step on.
    #[serde(with = "peer_list")]
    pub writers: Vec<PeerId>,
    /// The namespace is removed: nothing may change it any more, and nodes
    /// drop its objects.
    pub closed: bool,
    /// Only writers may read it (see [`Writers::check_reader`]).
    #[serde(default)]
    pub private: bool,
    /// By a writer of the previous list.
    pub signature: Signature,
}

/// A writer-only namespace's signed writer history. Every node checks the
/// whole history when it reads the namespace list, so a list changed by
/// anyone but a writer is refused wherever it arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writers {
    /// The incarnation of the namespace the history belongs to.
    pub incarnation: u64,
    /// The steps, oldest first; never empty.
    pub changes: Vec<Change>,
}

fn change_statement(
    ns: &Namespace,
    incarnation: u64,
    step: usize,
    writers: &[PeerId],
    (closed, private): (bool, bool),
) -> Vec<u8> {
    let writers: Vec<serde_bytes::ByteBuf> = writers
        .iter()
        .map(|p| serde_bytes::ByteBuf::from(p.to_bytes()))
        .collect();
    statement(
        "p3/writers/1",
        &(ns, incarnation, step, writers, closed, private),
    )
}

/// PeerIds as their bytes (libp2p's PeerId has no serde here).
mod peer_list {
    use p3_dht::PeerId;
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};
    use serde_bytes::ByteBuf;

    pub fn serialize<S: Serializer>(peers: &[PeerId], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<ByteBuf> = peers.iter().map(|p| ByteBuf::from(p.to_bytes())).collect();
        bytes.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PeerId>, D::Error> {
        let bytes = Vec::<ByteBuf>::deserialize(d)?;
        if bytes.len() > super::MAX_WRITERS {
            return Err(D::Error::custom("too many writers"));
        }
        bytes
            .iter()
            .map(|b| {
                PeerId::from_bytes(b).map_err(|_| D::Error::custom("a writer is not a PeerId"))
            })
            .collect()
    }
}

fn check_list(writers: &[PeerId], closed: bool) -> Result<()> {
    if writers.is_empty() && !closed {
        return Err(SpaceError::Invalid(
            "a writer-only namespace needs at least one writer".into(),
        ));
    }
    if writers.len() > MAX_WRITERS {
        return Err(SpaceError::Invalid(format!(
            "{} writers; a namespace has at most {MAX_WRITERS}",
            writers.len()
        )));
    }
    Ok(())
}

impl Writers {
    /// A new namespace's history, signed by `node`, which must be one of
    /// `writers`; `private`: only writers may read it.
    pub fn create(
        node: &dyn Signer,
        ns: &Namespace,
        incarnation: u64,
        writers: Vec<PeerId>,
        private: bool,
    ) -> Result<Self> {
        let mut history = Writers {
            incarnation,
            changes: Vec::new(),
        };
        history.step(node, ns, writers, (false, private))?;
        Ok(history)
    }

    /// Appends a step signed by `node`, which must be a current writer: the
    /// new list, or (`closed`) the namespace's removal.
    pub fn push(
        &mut self,
        node: &dyn Signer,
        ns: &Namespace,
        writers: Vec<PeerId>,
        closed: bool,
    ) -> Result<()> {
        let private = self.is_private();
        self.step(node, ns, writers, (closed, private))
    }

    fn step(
        &mut self,
        node: &dyn Signer,
        ns: &Namespace,
        mut writers: Vec<PeerId>,
        (closed, private): (bool, bool),
    ) -> Result<()> {
        writers.sort();
        writers.dedup();
        check_list(&writers, closed)?;
        if self.is_closed() {
            return Err(SpaceError::Invalid(format!("namespace {ns} was removed")));
        }
        if self.changes.len() >= MAX_CHANGES {
            return Err(SpaceError::Invalid(format!(
                "namespace {ns} has had {MAX_CHANGES} writer changes, the most it keeps; create a new one"
            )));
        }
        let me = node.peer();
        let allowed = match self.changes.last() {
            Some(last) => last.writers.contains(&me),
            None => writers.contains(&me),
        };
        if !allowed {
            return Err(SpaceError::Forbidden(format!(
                "this node ({me}) is not a writer of {ns}"
            )));
        }
        let step = self.changes.len();
        let signature = node.signature(&change_statement(
            ns,
            self.incarnation,
            step,
            &writers,
            (closed, private),
        ))?;
        self.changes.push(Change {
            writers,
            closed,
            private,
            signature,
        });
        Ok(())
    }

    /// Checks every step: each signed by a writer of the list before it (the
    /// first by one it lists), none after a removal.
    pub fn verify(&self, ns: &Namespace) -> Result<()> {
        if self.changes.is_empty() || self.changes.len() > MAX_CHANGES {
            return Err(SpaceError::Corrupt(format!(
                "the writer history of {ns} has {} steps",
                self.changes.len()
            )));
        }
        let mut previous: Option<&Change> = None;
        for (step, change) in self.changes.iter().enumerate() {
            check_list(&change.writers, change.closed)?;
            if previous.is_some_and(|p| p.closed) {
                return Err(SpaceError::Corrupt(format!(
                    "the writer history of {ns} goes on after its removal"
                )));
            }
            let signer = change.signature.verify(&change_statement(
                ns,
                self.incarnation,
                step,
                &change.writers,
                (change.closed, change.private),
            ))?;
            let allowed = previous.map_or(&change.writers, |p| &p.writers);
            if !allowed.contains(&signer) {
                return Err(SpaceError::Corrupt(format!(
                    "step {step} of the writer history of {ns} is signed by {signer}, who was not a writer"
                )));
            }
            previous = Some(change);
        }
        Ok(())
    }

    /// Whether `newer` is this history with steps added (or the same).
    pub fn is_prefix_of(&self, newer: &Writers) -> bool {
        self.incarnation == newer.incarnation
            && self.changes.len() <= newer.changes.len()
            && newer.changes[..self.changes.len()] == self.changes[..]
    }

    /// The writers now.
    pub fn current(&self) -> &[PeerId] {
        self.changes.last().map_or(&[], |c| &c.writers)
    }

    /// Whether only writers may read the namespace.
    pub fn is_private(&self) -> bool {
        self.changes.last().is_some_and(|c| c.private)
    }

    /// Refuses `peer` a read of the namespace if it is private and `peer`
    /// is not one of its writers.
    pub fn check_reader(&self, ns: &Namespace, peer: &PeerId) -> Result<()> {
        if self.is_private() && !self.current().contains(peer) {
            return Err(SpaceError::Forbidden(format!(
                "{ns} is private: only its writers read it, and {peer} is not a writer of {ns}"
            )));
        }
        Ok(())
    }

    /// Whether the namespace was removed.
    pub fn is_closed(&self) -> bool {
        self.changes.last().is_some_and(|c| c.closed)
    }

    /// Whether `peer` was a writer at any step: records it signed then stay
    /// valid (repair moves them to new owners) after it is revoked.
    pub fn ever(&self, peer: &PeerId) -> bool {
        self.changes.iter().any(|c| c.writers.contains(peer))
    }

    /// Checks `record`'s signature: made by a writer of this history over
    /// exactly this record. `current` asks for a writer of the current list
    /// (a new write); otherwise a past writer's record passes too (repair).
    pub fn check_record(&self, record: &ObjectRecord, current: bool) -> Result<()> {
        let path = format!("{}/{}", record.ns, record.name);
        if record.ns_incarnation != self.incarnation {
            return Err(forbidden(&format!(
                "{path} is of another incarnation of its namespace"
            )));
        }
        let signature = record.signature.as_ref().ok_or_else(|| {
            forbidden(&format!(
                "{path} is in a writer-only namespace and its record is not signed"
            ))
        })?;
        let signer = signature.verify(&record_statement(record))?;
        self.check_signer(&record.ns, signer, current)
    }

    /// Checks that `signer` may change the namespace (see
    /// [`Writers::check_record`] for `current`).
    pub fn check_signer(&self, ns: &Namespace, signer: PeerId, current: bool) -> Result<()> {
        let allowed = if current {
            !self.is_closed() && self.current().contains(&signer)
        } else {
            self.ever(&signer)
        };
        if !allowed {
            return Err(SpaceError::Forbidden(format!(
                "{signer} is not a writer of {ns}; its writers are changed with `p3ctl ns grant`"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> Namespace {
        Namespace::new("team").unwrap()
    }

    fn record(signer: Option<&Keypair>, version: u64) -> ObjectRecord {
        let mut record = ObjectRecord {
            ns: ns(),
            name: ObjectName::new("a").unwrap(),
            version,
            ns_incarnation: 7,
            blob: Some(crate::blob::BlobHash::of(b"x")),
            size: 1,
            type_tag: String::new(),
            meta: Default::default(),
            created_ms: 1,
            modified_ms: 2,
            expires_ms: None,
            volatile: false,
            epoch: 3,
            signature: None,
        };
        if let Some(key) = signer {
            record.signature = Some(key.signature(&record_statement(&record)).unwrap());
        }
        record
    }

    #[test]
    fn a_record_passes_only_with_a_writers_signature_over_exactly_it() {
        let (alice, mallory) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let writers = Writers::create(&alice, &ns(), 7, vec![alice.peer()], false).unwrap();
        writers.verify(&ns()).unwrap();
        writers
            .check_record(&record(Some(&alice), 1), true)
            .unwrap();
        assert!(writers.check_record(&record(None, 1), true).is_err());
        assert!(writers
            .check_record(&record(Some(&mallory), 1), true)
            .is_err());
        // A signed record replayed as a newer version, in another epoch, of
        // another incarnation or another namespace.
        let signed = record(Some(&alice), 1);
        let mut replayed = signed.clone();
        replayed.version = 9;
        assert!(writers.check_record(&replayed, true).is_err());
        let mut reordered = signed.clone();
        reordered.epoch = 99;
        assert!(writers.check_record(&reordered, true).is_err());
        let mut elsewhere = signed.clone();
        elsewhere.ns = Namespace::new("other").unwrap();
        assert!(writers.check_record(&elsewhere, true).is_err());
        let mut reborn = signed;
        reborn.ns_incarnation = 8;
        assert!(writers.check_record(&reborn, true).is_err());
    }

    #[test]
    fn only_a_writer_changes_the_list_and_a_revoked_writer_signs_no_new_record() {
        let (alice, bob, mallory) = (
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
        );
        assert!(Writers::create(&mallory, &ns(), 7, vec![alice.peer()], false).is_err());
        let mut writers = Writers::create(&alice, &ns(), 7, vec![alice.peer()], false).unwrap();
        let before = writers.clone();
        assert!(writers
            .push(&mallory, &ns(), vec![mallory.peer()], false)
            .is_err());
        writers
            .push(&alice, &ns(), vec![alice.peer(), bob.peer()], false)
            .unwrap();
        writers.push(&bob, &ns(), vec![bob.peer()], false).unwrap();
        writers.verify(&ns()).unwrap();
        assert!(before.is_prefix_of(&writers));
        assert!(!writers.is_prefix_of(&before));
        // Alice's old record stays valid for repair, not for a new write.
        let old = record(Some(&alice), 1);
        writers.check_record(&old, false).unwrap();
        assert!(writers.check_record(&old, true).is_err());

        // A step forged by a non-writer, or re-signed for another namespace,
        // breaks the history.
        let mut forged = writers.clone();
        forged.changes[2].writers = vec![mallory.peer()];
        assert!(forged.verify(&ns()).is_err());
        let mut stolen = writers.clone();
        stolen.changes[2].signature = mallory
            .signature(&change_statement(
                &ns(),
                7,
                2,
                &[mallory.peer()],
                (false, false),
            ))
            .unwrap();
        stolen.changes[2].writers = vec![mallory.peer()];
        assert!(stolen.verify(&ns()).is_err());
        assert!(writers.verify(&Namespace::new("other").unwrap()).is_err());

        writers.push(&bob, &ns(), Vec::new(), true).unwrap();
        writers.verify(&ns()).unwrap();
        assert!(writers.is_closed());
        assert!(writers.push(&bob, &ns(), vec![bob.peer()], false).is_err());
        assert!(writers.check_record(&record(Some(&bob), 2), true).is_err());
    }
}
