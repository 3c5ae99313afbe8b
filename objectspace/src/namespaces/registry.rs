//! The registry's value: every namespace with its incarnation, and the
//! signed writer history of each writer-only one; and the rule every node
//! and owner applies to a new version of it (histories only grow).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SYSTEM;
use crate::{
    error::{Result, SpaceError},
    name::Namespace,
    writers::Writers,
};

/// The namespace registry's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Name → incarnation of every namespace that exists.
    pub namespaces: BTreeMap<String, u64>,
    /// Name → signed writer history of every writer-only namespace, removed
    /// ones included (their names stay taken: a removal is a signed step).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub writers: BTreeMap<String, Writers>,
}

impl Registry {
    /// The incarnation of `ns` if it exists (`global` and the system namespace
    /// always do, as incarnation 0).
    pub fn incarnation(&self, ns: &Namespace) -> Option<u64> {
        match ns.as_str() {
            Namespace::GLOBAL | SYSTEM => Some(0),
            name => self.namespaces.get(name).copied(),
        }
    }

    /// The writer history of `ns` if it is (or was) writer-only.
    pub fn writers(&self, ns: &Namespace) -> Option<&Writers> {
        self.writers.get(ns.as_str())
    }

    /// Checks every writer history, and that each open writer-only
    /// namespace exists in the incarnation its history names.
    pub fn verify(&self) -> Result<()> {
        for (name, writers) in &self.writers {
            let ns = Namespace::new(name).map_err(|e| SpaceError::Corrupt(e.to_string()))?;
            writers.verify(&ns)?;
            let exists = self.namespaces.get(name);
            let consistent = match exists {
                Some(&incarnation) => !writers.is_closed() && incarnation == writers.incarnation,
                None => writers.is_closed(),
            };
            if !consistent {
                return Err(SpaceError::Corrupt(format!(
                    "the namespace list holds writer-only namespace {name} in another incarnation than its writer history"
                )));
            }
        }
        Ok(())
    }

    /// Whether `newer` may replace this list: it verifies, every writer
    /// history here goes on in it (same steps, maybe more), and no open
    /// namespace became writer-only in place.
    pub fn may_become(&self, newer: &Registry) -> Result<()> {
        newer.verify()?;
        for (name, writers) in &self.writers {
            if !newer
                .writers
                .get(name)
                .is_some_and(|n| writers.is_prefix_of(n))
            {
                return Err(SpaceError::Forbidden(format!(
                    "refused: this change of the namespace list drops or rewrites the writer history of {name} without its writers' signatures"
                )));
            }
        }
        for (name, writers) in &newer.writers {
            if !self.writers.contains_key(name)
                && self.namespaces.get(name) == Some(&writers.incarnation)
            {
                return Err(SpaceError::Forbidden(format!(
                    "refused: namespace {name} is open to every node; it cannot become writer-only in place"
                )));
            }
        }
        Ok(())
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<Registry> {
    ciborium::from_reader(bytes)
        .map_err(|e| SpaceError::Corrupt(format!("namespace registry does not decode: {e}")))
}

/// Whether `record` is a version of the registry itself.
pub(crate) fn is_registry(record: &crate::object::ObjectRecord) -> bool {
    record.ns.as_str() == SYSTEM && record.name.as_str() == "namespaces"
}

/// An owner's check of a new registry version `newer` (its value,
/// `None` for a removal) against `current`'s value: the histories of
/// writer-only namespaces only grow.
pub(crate) fn check_registry_change(current: Option<&[u8]>, newer: Option<&[u8]>) -> Result<()> {
    let current = match current {
        Some(bytes) => decode(bytes)?,
        None => Registry::default(),
    };
    let newer = match newer {
        Some(bytes) => decode(bytes)?,
        None => Registry::default(),
    };
    current.may_become(&newer)
}

#[cfg(test)]
pub(crate) mod tests {
    use p3_dht::Keypair;

    use super::*;
    use crate::writers::Signer;

    pub(crate) fn team() -> Namespace {
        Namespace::new("team").unwrap()
    }

    /// A registry with an open namespace and `team`, writer-only, written
    /// by `writer`.
    pub(crate) fn registry_with_team(writer: &Keypair) -> Registry {
        let mut registry = Registry::default();
        registry.namespaces.insert("open".into(), 3);
        registry.namespaces.insert("team".into(), 7);
        let history = Writers::create(writer, &team(), 7, vec![writer.peer()], false).unwrap();
        registry.writers.insert("team".into(), history);
        registry
    }

    #[test]
    fn a_registry_change_keeps_every_writer_history_and_grows_it_only_by_signed_steps() {
        let (alice, mallory) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let before = registry_with_team(&alice);
        before.verify().unwrap();
        Registry::default().may_become(&before).unwrap();

        // New open namespaces and signed steps are fine.
        let mut grown = before.clone();
        grown.namespaces.insert("more".into(), 9);
        grown
            .writers
            .get_mut("team")
            .unwrap()
            .push(&alice, &team(), vec![alice.peer(), mallory.peer()], false)
            .unwrap();
        before.may_become(&grown).unwrap();
        // Going back is a rewrite.
        assert!(grown.may_become(&before).is_err());

        // Dropping the history (so that team would be open), or the
        // registry, or the namespace with its history kept open.
        let mut dropped = before.clone();
        dropped.writers.remove("team");
        assert!(before.may_become(&dropped).is_err());
        assert!(before.may_become(&Registry::default()).is_err());
        let mut gone = before.clone();
        gone.namespaces.remove("team");
        assert!(gone.verify().is_err());
        assert!(before.may_become(&gone).is_err());

        // A history replaced by one a non-writer signed.
        let mut stolen = before.clone();
        let forged = Writers::create(&mallory, &team(), 7, vec![mallory.peer()], false).unwrap();
        stolen.writers.insert("team".into(), forged);
        assert!(before.may_become(&stolen).is_err());

        // An open namespace made writer-only in place.
        let mut seized = before.clone();
        let history = Writers::create(
            &mallory,
            &Namespace::new("open").unwrap(),
            3,
            vec![mallory.peer()],
            false,
        )
        .unwrap();
        seized.writers.insert("open".into(), history);
        assert!(before.may_become(&seized).is_err());

        // A writer's signed removal closes it; the name stays taken.
        let mut removed = before.clone();
        removed.namespaces.remove("team");
        removed
            .writers
            .get_mut("team")
            .unwrap()
            .push(&alice, &team(), Vec::new(), true)
            .unwrap();
        before.may_become(&removed).unwrap();
        assert_eq!(removed.incarnation(&team()), None);
    }

    #[test]
    fn an_owner_checks_registry_values_as_stored_bytes() {
        let alice = Keypair::generate_ed25519();
        let encode = |r: &Registry| {
            let mut bytes = Vec::new();
            ciborium::into_writer(r, &mut bytes).unwrap();
            bytes
        };
        let before = encode(&registry_with_team(&alice));
        check_registry_change(None, Some(&before)).unwrap();
        check_registry_change(Some(&before), Some(&before)).unwrap();
        assert!(check_registry_change(Some(&before), None).is_err());
        assert!(check_registry_change(Some(&before), Some(b"garbage")).is_err());
        let legacy = encode(&Registry::default());
        check_registry_change(Some(&legacy), Some(&before)).unwrap();
    }
}
