//! Namespaces. The set of namespaces is itself an object — `p3.system/namespaces`,
//! a CBOR map from name to incarnation — so it is replicated, repaired and
//! updated with compare-and-set like any other object. Each node caches it for a
//! few seconds and re-reads it before it says a namespace does not exist.
//!
//! An incarnation is a random number given to a namespace when it is created;
//! every object records the incarnation it was written in, so copies of objects
//! of a removed namespace that missed the removal (their node was down) are
//! recognised and dropped even if a namespace of the same name exists again.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Result, SpaceError},
    name::{Namespace, ObjectName, ObjectPath},
    object::PutOptions,
    protocol::{PeerRequest, PeerResponse},
    space::ObjectSpace,
};

/// The reserved namespace of P³'s own objects; users cannot write to it.
pub const SYSTEM: &str = "p3.system";
/// How long a node trusts its cached namespace list for names it contains.
const CACHE_FOR: Duration = Duration::from_secs(10);

/// The namespace registry's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Name → incarnation.
    pub namespaces: BTreeMap<String, u64>,
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
}

/// A node's cached view of the registry.
#[derive(Default)]
pub struct Namespaces {
    cache: Mutex<Option<(Instant, Registry)>>,
}

fn registry_path() -> ObjectPath {
    ObjectPath {
        namespace: Namespace::new(SYSTEM).unwrap_or_else(|_| unreachable!("valid constant")),
        name: ObjectName::new("namespaces").unwrap_or_else(|_| unreachable!("valid constant")),
    }
}

impl Namespaces {
    fn cached(&self) -> Option<Registry> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .as_ref()
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, r)| r.clone())
    }

    /// The incarnation of `ns`, or [`SpaceError::NoSuchNamespace`].
    pub async fn incarnation(&self, space: &ObjectSpace, ns: &Namespace) -> Result<u64> {
        if let Some(n) = Registry::default().incarnation(ns) {
            return Ok(n);
        }
        if let Some(n) = self.cached().and_then(|r| r.incarnation(ns)) {
            return Ok(n);
        }
        // Boxed: reading the registry is itself a read, which asks for the
        // (always known) incarnation of the system namespace.
        let (registry, _) = Box::pin(self.fetch(space)).await?;
        registry
            .incarnation(ns)
            .ok_or_else(|| SpaceError::NoSuchNamespace(ns.to_string()))
    }

    /// Reads the registry from its owners (and refreshes the cache); returns it
    /// with its version (0 if it was never written).
    pub async fn fetch(&self, space: &ObjectSpace) -> Result<(Registry, u64)> {
        let (registry, version) = match space.read_all(&registry_path()).await {
            Ok((record, bytes)) => {
                let registry: Registry = ciborium::from_reader(bytes.as_slice()).map_err(|e| {
                    SpaceError::Corrupt(format!("namespace registry does not decode: {e}"))
                })?;
                (registry, record.version)
            }
            Err(SpaceError::NotFound(_)) => (Registry::default(), 0),
            Err(e) => return Err(e),
        };
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), registry.clone()));
        Ok((registry, version))
    }

    async fn store(&self, space: &ObjectSpace, registry: &Registry, version: u64) -> Result<()> {
        let mut bytes = Vec::new();
        ciborium::into_writer(registry, &mut bytes)
            .map_err(|e| SpaceError::Storage(e.to_string()))?;
        let options = PutOptions {
            type_tag: "p3/namespaces".into(),
            if_version: Some(version),
            ..PutOptions::default()
        };
        space.put_small(&registry_path(), bytes, options).await?;
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), registry.clone()));
        Ok(())
    }

    /// Creates `ns`.
    pub async fn create(&self, space: &ObjectSpace, ns: &Namespace) -> Result<()> {
        if Registry::default().incarnation(ns).is_some() {
            return Err(SpaceError::NamespaceExists(ns.to_string()));
        }
        for _ in 0..8 {
            let (mut registry, version) = self.fetch(space).await?;
            if registry.incarnation(ns).is_some() {
                return Err(SpaceError::NamespaceExists(ns.to_string()));
            }
            registry
                .namespaces
                .insert(ns.to_string(), rand::random::<u64>().max(1));
            match self.store(space, &registry, version).await {
                Err(SpaceError::VersionConflict { .. }) => continue,
                other => return other,
            }
        }
        Err(SpaceError::Unavailable(
            "the namespace list keeps changing under this update; retry".into(),
        ))
    }

    /// Removes `ns` and tells every live node to drop its objects.
    pub async fn remove(&self, space: &ObjectSpace, ns: &Namespace) -> Result<()> {
        match ns.as_str() {
            Namespace::GLOBAL => {
                return Err(SpaceError::Invalid(
                    "the global namespace always exists; remove its objects with `p3ctl rm`".into(),
                ))
            }
            SYSTEM => return Err(SpaceError::Invalid(format!("{SYSTEM} is reserved"))),
            _ => {}
        }
        let mut removed = false;
        for _ in 0..8 {
            let (mut registry, version) = self.fetch(space).await?;
            if registry.namespaces.remove(ns.as_str()).is_none() {
                return Err(SpaceError::NoSuchNamespace(ns.to_string()));
            }
            match self.store(space, &registry, version).await {
                Err(SpaceError::VersionConflict { .. }) => continue,
                Err(e) => return Err(e),
                Ok(()) => {
                    removed = true;
                    break;
                }
            }
        }
        if !removed {
            return Err(SpaceError::Unavailable(
                "the namespace list keeps changing under this update; retry".into(),
            ));
        }
        // Nodes missed here drop the objects (and index rows) in their next
        // repair round.
        let mut peers = space.node().connected().await?;
        peers.push(space.me());
        let drops = peers
            .iter()
            .map(|&peer| space.ask(peer, PeerRequest::DropNamespace(ns.clone())));
        for result in futures::future::join_all(drops).await {
            match result {
                Ok(PeerResponse::Done) => {}
                Ok(other) => tracing::warn!(?other, "unexpected answer to drop-namespace"),
                Err(e) => tracing::warn!(error = %e, "a node could not drop the namespace yet"),
            }
        }
        Ok(())
    }

    /// Every namespace, `global` first.
    pub async fn list(&self, space: &ObjectSpace) -> Result<Vec<String>> {
        let (registry, _) = self.fetch(space).await?;
        Ok(std::iter::once(Namespace::GLOBAL.to_owned())
            .chain(registry.namespaces.into_keys())
            .collect())
    }
}
