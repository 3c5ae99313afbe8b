//! Namespaces. The set of namespaces is itself an object — `p3.system/namespaces`,
//! a CBOR map from name to incarnation — so it is replicated, repaired and
//! updated with compare-and-set like any other object. Each node caches it for a
//! few seconds and re-reads it before it says a namespace does not exist.
//!
//! An incarnation is a random number given to a namespace when it is created;
//! every object records the incarnation it was written in, so copies of objects
//! of a removed namespace that missed the removal (their node was down) are
//! recognised and dropped even if a namespace of the same name exists again.
//!
//! A writer-only namespace also has a signed writer history
//! ([`crate::writers::Writers`]) in the registry. Every node checks the
//! histories of each registry it reads and never trades a history it knows
//! for one that is not its continuation; the registry's owners refuse a new
//! version that drops or rewrites one (`docs/writers.md`).

mod registry;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use p3_dht::PeerId;

pub use registry::Registry;
pub(crate) use registry::{check_registry_change, is_registry};

use registry::decode;

use crate::{
    error::{Result, SpaceError},
    name::{Namespace, ObjectName, ObjectPath},
    object::PutOptions,
    protocol::{PeerRequest, PeerResponse},
    shared_read::SharedRead,
    space::ObjectSpace,
    writers::Writers,
};

/// The reserved namespace of P³'s own objects; users cannot write to it.
pub const SYSTEM: &str = "p3.system";
/// How long a node trusts its cached namespace list for names it contains.
const CACHE_FOR: Duration = Duration::from_secs(10);

fn open_namespace(ns: &Namespace, exists: bool) -> SpaceError {
    if !exists {
        return SpaceError::NoSuchNamespace(ns.to_string());
    }
    SpaceError::Invalid(format!(
        "namespace {ns} is open to every node; writer-only namespaces are made with `p3ctl ns create {ns} --writer PEER_ID`"
    ))
}

/// A node's cached view of the registry.
#[derive(Default)]
pub struct Namespaces {
    /// The newest registry seen and when the read that brought it began
    /// (it holds every change acknowledged before then). Never replaced by
    /// one that is not its continuation (see [`Registry::may_become`]).
    cache: Mutex<Option<(Instant, Arc<Registry>)>>,
    /// Reads of the registry from its owners, shared by those who ask at
    /// once: a new namespace (every job makes one) is unknown to every node
    /// at first, and each node's first requests in it (heartbeats, watches,
    /// the lock race, other nodes' writes to replicate) all ask at once.
    reads: SharedRead<(Arc<Registry>, u64)>,
}

fn registry_path() -> ObjectPath {
    ObjectPath {
        namespace: Namespace::new(SYSTEM).unwrap_or_else(|_| unreachable!("valid constant")),
        name: ObjectName::new("namespaces").unwrap_or_else(|_| unreachable!("valid constant")),
    }
}

impl Namespaces {
    fn cached(&self) -> Option<Arc<Registry>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .as_ref()
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, r)| r.clone())
    }

    /// Whether the cached list may miss a change acknowledged before
    /// `since`: its read began earlier (or there is none). A read's start,
    /// not its end, dates it: a read in flight while a grant lands may
    /// bring the list from before the grant however late it ends.
    fn read_before(&self, since: Instant) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.as_ref().is_none_or(|(began, _)| *began < since)
    }

    /// Remembers `registry`, read by a read begun at `began`, unless it
    /// would forget or rewrite a writer history the one known holds (an
    /// owner that lags, or lies); returns the one kept.
    fn remember(&self, registry: Registry, began: Instant) -> Arc<Registry> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, known)) = cache.as_mut() {
            if let Err(e) = known.may_become(&registry) {
                tracing::warn!(error = %e, "kept the namespace list known here");
                // Asking again at once would reach the same owner.
                *at = (*at).max(began);
                return known.clone();
            }
        }
        let registry = Arc::new(registry);
        *cache = Some((began, registry.clone()));
        registry
    }

    /// The writer history of `ns` if it is writer-only (or was, and was
    /// removed); `None` for an open namespace or one not known here even
    /// after reading the registry.
    pub async fn writers(&self, space: &ObjectSpace, ns: &Namespace) -> Result<Option<Writers>> {
        if Registry::default().incarnation(ns).is_some() {
            return Ok(None);
        }
        let known = |r: &Registry| {
            r.namespaces.contains_key(ns.as_str()) || r.writers.contains_key(ns.as_str())
        };
        if let Some(registry) = self.cached().filter(|r| known(r)) {
            return Ok(registry.writers(ns).cloned());
        }
        let (registry, _) = Box::pin(self.fetch(space)).await?;
        Ok(registry.writers(ns).cloned())
    }

    /// Runs `check` on the writer history of `ns` (`Ok(None)` for an open
    /// namespace). A refusal made on a history read before this call is
    /// made again on the registry read afresh: a grant made on another node
    /// reaches this node's cache only when it reads the registry, and a
    /// writer just granted must not be refused for up to [`CACHE_FOR`] by
    /// the owners that read it before the grant. Each refused request costs
    /// one registry read at most (refusals at once share one, see
    /// [`SharedRead`]), about what the request itself costs.
    pub async fn check<T>(
        &self,
        space: &ObjectSpace,
        ns: &Namespace,
        check: impl Fn(&Writers) -> Result<T>,
    ) -> Result<Option<T>> {
        let asked = Instant::now();
        match self.check_known(space, ns, &check).await {
            Err(SpaceError::Forbidden(_)) if self.read_before(asked) => {
                let (registry, _) = Box::pin(self.fetch(space)).await?;
                registry.writers(ns).map(check).transpose()
            }
            checked => checked,
        }
    }

    /// [`Namespaces::check`] on the list known here, never read again on a
    /// refusal.
    async fn check_known<T>(
        &self,
        space: &ObjectSpace,
        ns: &Namespace,
        check: impl Fn(&Writers) -> Result<T>,
    ) -> Result<Option<T>> {
        self.writers(space, ns)
            .await?
            .as_ref()
            .map(check)
            .transpose()
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
        let read = || async {
            let began = Instant::now();
            let (registry, version) = match space.read_all(&registry_path()).await {
                Ok((record, bytes)) => {
                    let registry = decode(&bytes)?;
                    registry.verify()?;
                    (registry, record.version)
                }
                Err(SpaceError::NotFound(_)) => (Registry::default(), 0),
                Err(e) => return Err(e),
            };
            // What an owner that lags or lies sends does not replace a newer
            // history known here.
            Ok((self.remember(registry, began), version))
        };
        let (registry, version) = self.reads.read(read).await?;
        Ok((Registry::clone(&registry), version))
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
        // A compare-and-set that succeeds holds every change acknowledged
        // before it was sent.
        let began = Instant::now();
        space.put_small(&registry_path(), bytes, options).await?;
        self.remember(registry.clone(), began);
        Ok(())
    }

    /// Applies `change` to the registry with compare-and-set, retrying while
    /// other updates land first.
    async fn update(
        &self,
        space: &ObjectSpace,
        mut change: impl FnMut(&mut Registry) -> Result<()>,
    ) -> Result<()> {
        for _ in 0..8 {
            let (mut registry, version) = self.fetch(space).await?;
            change(&mut registry)?;
            match self.store(space, &registry, version).await {
                Err(SpaceError::VersionConflict { .. }) => continue,
                other => return other,
            }
        }
        Err(SpaceError::Unavailable(
            "the namespace list keeps changing under this update; retry".into(),
        ))
    }

    /// Creates `ns`: open to every node if `writers` is empty, else
    /// writer-only (and readable only by them if `private`), with a history
    /// signed by this node (one of `writers`).
    pub async fn create(
        &self,
        space: &ObjectSpace,
        ns: &Namespace,
        (writers, private): (Vec<PeerId>, bool),
    ) -> Result<()> {
        if Registry::default().incarnation(ns).is_some() {
            return Err(SpaceError::NamespaceExists(ns.to_string()));
        }
        self.update(space, |registry| {
            if registry.incarnation(ns).is_some() {
                return Err(SpaceError::NamespaceExists(ns.to_string()));
            }
            if registry.writers(ns).is_some() {
                return Err(SpaceError::NamespaceExists(format!(
                    "{ns} (a removed writer-only namespace: its name stays taken)"
                )));
            }
            let incarnation = rand::random::<u64>().max(1);
            if !writers.is_empty() {
                let history =
                    Writers::create(space.node(), ns, incarnation, writers.clone(), private)?;
                registry.writers.insert(ns.to_string(), history);
            }
            registry.namespaces.insert(ns.to_string(), incarnation);
            Ok(())
        })
        .await
    }

    /// Adds `grant` to and removes `revoke` from the writers of writer-only
    /// namespace `ns`; signed by this node, which must be a writer.
    pub async fn change_writers(
        &self,
        space: &ObjectSpace,
        ns: &Namespace,
        grant: &[PeerId],
        revoke: &[PeerId],
    ) -> Result<Vec<PeerId>> {
        let mut now = Vec::new();
        self.update(space, |registry| {
            let exists = registry.incarnation(ns).is_some();
            let history = registry
                .writers
                .get_mut(ns.as_str())
                .ok_or_else(|| open_namespace(ns, exists))?;
            let mut writers: Vec<PeerId> = history
                .current()
                .iter()
                .filter(|w| !revoke.contains(w))
                .copied()
                .collect();
            writers.extend_from_slice(grant);
            history.push(space.node(), ns, writers, false)?;
            now = history.current().to_vec();
            Ok(())
        })
        .await?;
        Ok(now)
    }

    /// Refuses `peer` a read of `ns` if the namespace is private and `peer`
    /// is not one of its writers.
    pub async fn check_read(
        &self,
        space: &ObjectSpace,
        ns: &Namespace,
        peer: &PeerId,
    ) -> Result<()> {
        self.check(space, ns, |w| w.check_reader(ns, peer))
            .await
            .map(drop)
    }

    /// [`Namespaces::check_read`] on the list known here, without reading
    /// it again on a refusal: for a caller that has another way to admit
    /// `peer` to try before it pays for that read.
    pub async fn check_read_known(
        &self,
        space: &ObjectSpace,
        ns: &Namespace,
        peer: &PeerId,
    ) -> Result<()> {
        self.check_known(space, ns, |w| w.check_reader(ns, peer))
            .await
            .map(drop)
    }

    /// The current writers of `ns` (empty: open to every node), from the
    /// registry read now: a user who asks after a grant made on another
    /// node sees it.
    pub async fn current_writers(
        &self,
        space: &ObjectSpace,
        ns: &Namespace,
    ) -> Result<Vec<PeerId>> {
        self.incarnation(space, ns).await?;
        let (registry, _) = self.fetch(space).await?;
        Ok(registry
            .writers(ns)
            .map(|w| w.current().to_vec())
            .unwrap_or_default())
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
        self.update(space, |registry| {
            if registry.namespaces.remove(ns.as_str()).is_none() {
                return Err(SpaceError::NoSuchNamespace(ns.to_string()));
            }
            // A writer-only namespace goes only by a writer's signed step.
            if let Some(history) = registry.writers.get_mut(ns.as_str()) {
                history.push(space.node(), ns, Vec::new(), true)?;
            }
            Ok(())
        })
        .await?;
        // Nodes missed here drop the objects (and index rows) in their next
        // repair round.
        let mut peers = space.everyone().await?;
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

#[cfg(test)]
mod tests {
    use p3_dht::Keypair;

    use super::{registry::tests::registry_with_team, *};

    /// The first instant after `t` this clock shows.
    fn after(t: Instant) -> Instant {
        loop {
            let now = Instant::now();
            if now > t {
                return now;
            }
        }
    }

    #[test]
    fn a_list_whose_read_began_before_a_check_is_read_again_on_refusal() {
        let namespaces = Namespaces::default();
        let alice = Keypair::generate_ed25519();
        let read_began = Instant::now();
        // The grant lands and the new writer's request arrives while the read
        // is in flight; the read ends after the check began, with the list
        // from before the grant.
        let asked = after(read_began);
        assert!(namespaces.read_before(asked), "nothing read yet");
        namespaces.remember(registry_with_team(&alice), read_began);
        assert!(namespaces.read_before(asked));

        // A list read begun after the check holds the grant: no second read.
        let fresh = after(asked);
        namespaces.remember(registry_with_team(&alice), fresh);
        assert!(!namespaces.read_before(asked));

        // An owner that lags neither makes the list older nor dates it back.
        let kept = namespaces.remember(Registry::default(), read_began);
        assert!(kept.writers.contains_key("team"));
        assert!(!namespaces.read_before(asked));
        assert!(namespaces.read_before(after(fresh)));
    }
}
