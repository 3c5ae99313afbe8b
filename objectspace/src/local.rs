//! [`Local`]: the object space for code running inside the node's own process
//! (its job worker). The same operations as the [`crate::api::Space`] client,
//! by path, without a socket, a token or a connection per call: each is one
//! call into the engine. Checks that guard the API (reserved namespace, name
//! syntax) apply here too.

use std::time::Duration;

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    api::protocol::Written,
    error::{Result, SpaceError},
    lock::{keep, lost, Held, LockMode},
    name::{Namespace, ObjectPath},
    namespaces::SYSTEM,
    object::{PutOptions, Stat},
    read::Found,
    space::ObjectSpace,
    watch::Watch,
};

/// In-process access to a node's object space; cheap to clone.
#[derive(Clone)]
pub struct Local {
    space: ObjectSpace,
}

/// Shortest lease: renewals every third of it must be able to keep up.
pub const MIN_LEASE: Duration = Duration::from_millis(300);

/// A client's `NAMESPACE/NAME`, checked.
pub(crate) fn path_of(path: &str) -> Result<ObjectPath> {
    Ok(ObjectPath::parse(path)?)
}

/// Refuses writes to the namespace P³ keeps for itself.
pub fn writable(path: &ObjectPath) -> Result<()> {
    if path.namespace.as_str() == SYSTEM {
        return Err(SpaceError::Invalid(format!(
            "namespace {SYSTEM} is reserved for P³ itself"
        )));
    }
    Ok(())
}

impl Local {
    /// Wraps the node's engine.
    pub fn new(space: ObjectSpace) -> Self {
        Self { space }
    }

    /// The engine.
    pub fn engine(&self) -> &ObjectSpace {
        &self.space
    }

    /// This node's peer id, as text.
    pub fn peer_id(&self) -> String {
        self.space.me().to_string()
    }

    /// Writes a value held in memory.
    pub async fn put_bytes(
        &self,
        path: &str,
        options: &PutOptions,
        bytes: &[u8],
    ) -> Result<Written> {
        let path = path_of(path)?;
        writable(&path)?;
        self.space.check_namespace(&path.namespace).await?;
        self.space
            .put_value(&path, bytes.to_vec(), options.clone())
            .await
    }

    /// Reads a whole value (for values known to be small).
    pub async fn get_bytes(&self, path: &str) -> Result<(Stat, Vec<u8>)> {
        let found = self.space.find(&path_of(path)?, true).await?;
        self.value_of(found).await
    }

    /// Reads `path` once it has a version above `after` (any version if
    /// `None`), waiting up to `wait`.
    pub async fn get_waiting(
        &self,
        path: &str,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<(Stat, Vec<u8>)> {
        let found = self.space.find_newer(&path_of(path)?, after, wait).await?;
        self.value_of(found).await
    }

    async fn value_of(&self, found: Found) -> Result<(Stat, Vec<u8>)> {
        let bytes = self.space.value(&found).await?;
        Ok((found.record.stat(), bytes))
    }

    /// An object's metadata.
    pub async fn stat(&self, path: &str) -> Result<Stat> {
        self.space.stat(&path_of(path)?).await
    }

    /// Objects of `namespace` whose names start with `prefix`.
    pub async fn list(&self, namespace: &str, prefix: &str) -> Result<Vec<Stat>> {
        self.space.list(&Namespace::new(namespace)?, prefix).await
    }

    /// Removes `path` (at version `if_version`, under fencing token `token`).
    pub async fn remove(
        &self,
        path: &str,
        if_version: Option<u64>,
        token: Option<u64>,
    ) -> Result<Written> {
        let path = path_of(path)?;
        writable(&path)?;
        self.space.remove(&path, if_version, token).await
    }

    /// Takes `path`: its value, and it is gone; exactly one taker gets it.
    pub async fn take(&self, path: &str, wait: Option<Duration>) -> Result<(Stat, Vec<u8>)> {
        let path = path_of(path)?;
        writable(&path)?;
        let taken = self.space.take(&path, wait).await?;
        let bytes = self.space.value(&taken.found).await?;
        Ok((taken.found.record.stat(), bytes))
    }

    /// Acquires a lock on `path`, waiting up to `wait`; the node renews its
    /// lease until it is released or dropped.
    pub async fn lock(
        &self,
        path: &str,
        mode: LockMode,
        lease: Duration,
        wait: Duration,
    ) -> Result<LocalLock> {
        let path = path_of(path)?;
        let lease = lease.max(MIN_LEASE);
        let (grant, keeper) = self.space.acquire(&path, mode, lease, wait).await?;
        let (held, watched) = watch::channel(keeper.held());
        let renewer = tokio::spawn(keep(
            self.space.clone(),
            path.clone(),
            grant.clone(),
            keeper,
            held,
        ));
        Ok(LocalLock {
            space: self.space.clone(),
            path,
            holder: grant.holder,
            token: grant.token,
            renewer: Some(renewer),
            held: watched,
        })
    }

    /// Watches the objects of `namespace` whose names start with `prefix`;
    /// the namespace need not exist yet.
    pub async fn watch(&self, namespace: &str, prefix: &str) -> Result<Watch> {
        Ok(self
            .space
            .watch_any(&Namespace::new(namespace)?, prefix)
            .await)
    }

    /// Creates a namespace.
    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        let ns = Namespace::new(name)?;
        self.space
            .inner
            .namespaces
            .create(&self.space, &ns, (Vec::new(), false))
            .await
    }

    /// Removes a namespace with everything in it.
    pub async fn remove_namespace(&self, name: &str) -> Result<()> {
        let ns = Namespace::new(name)?;
        self.space.inner.namespaces.remove(&self.space, &ns).await
    }
}

/// A lock held through [`Local::lock`]. Dropping it stops the renewals and
/// releases it in the background.
pub struct LocalLock {
    space: ObjectSpace,
    path: ObjectPath,
    holder: u64,
    token: u64,
    renewer: Option<JoinHandle<()>>,
    held: watch::Receiver<Held>,
}

impl LocalLock {
    /// The fencing token: writes under the lock carry it.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// How long the lock holds as far as this node knows.
    pub fn held(&self) -> Held {
        self.held.borrow().clone()
    }

    /// Resolves once the lock is lost (its lease ran out before a renewal
    /// got through, or the primary fenced it); renewals have stopped then.
    pub async fn lost(&self) -> SpaceError {
        lost(&self.held).await
    }

    /// Releases the lock now.
    pub async fn release(mut self) -> Result<()> {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        self.space.release(&self.path, self.holder).await
    }
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
            let (space, path, holder) = (self.space.clone(), self.path.clone(), self.holder);
            tokio::spawn(async move {
                if let Err(e) = space.release(&path, holder).await {
                    tracing::debug!(%path, error = %e, "cannot release a dropped lock");
                }
            });
        }
    }
}
