//! Asking a key's primary for locks, from the holder's node: acquire,
//! renew and release, following redirects while the primary changes.

use std::time::{Duration, Instant};

use p3_dht::PeerId;

use super::{Grant, Keeper, LockMode, LockRequest};
use crate::{
    error::{Result, SpaceError},
    key::object_key,
    name::ObjectPath,
    protocol::{PeerRequest, PeerResponse},
    space::ObjectSpace,
    writers::{lock_statement, Signer},
};

impl ObjectSpace {
    /// Sends a lock request to the key's primary, following redirects and
    /// retrying while the primary changes, until `deadline`.
    pub(super) async fn to_primary(
        &self,
        path: &ObjectPath,
        mut request: LockRequest,
        deadline: Instant,
    ) -> Result<PeerResponse> {
        let key = object_key(&path.namespace, &path.name);
        let mut target: Option<PeerId> = None;
        loop {
            let primary = match target.take() {
                Some(p) => p,
                None => self.owners(&key).await?[0],
            };
            match self.ask(primary, PeerRequest::Lock(request.clone())).await {
                Ok(PeerResponse::NotPrimary(p)) => {
                    target = p.parse().ok();
                    // Moved while it waited in line: it waits at the next
                    // primary only for what is left of its time.
                    if let LockRequest::Acquire { wait_ms, .. } = &mut request {
                        *wait_ms = deadline
                            .saturating_duration_since(Instant::now())
                            .as_millis() as u64;
                    }
                }
                Ok(answer) => return Ok(answer),
                // Lock requests carry the holder's id, so asking again
                // (here or at the next primary) does not grant twice.
                Err(SpaceError::Unavailable(e) | SpaceError::OutcomeUnknown(e))
                    if Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "lock primary unreachable; asking again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Acquires a lock on `path` for a new holder, waiting up to `wait`;
    /// the grant and what the holder knows of its lease.
    pub async fn acquire(
        &self,
        path: &ObjectPath,
        mode: LockMode,
        lease: Duration,
        wait: Duration,
    ) -> Result<(Grant, Keeper)> {
        let _waiting = crate::metrics::Level::up("p3_locks_waiting");
        crate::metrics::observe("lock", async {
            let holder = rand::random::<u64>();
            let deadline = Instant::now() + wait;
            let signature = match self.inner.namespaces.writers(self, &path.namespace).await? {
                Some(writers) => Some(self.node().signature(&lock_statement(
                    &path.namespace,
                    writers.incarnation,
                    &path.name,
                    holder,
                    mode,
                ))?),
                None => None,
            };
            loop {
                let sent = Instant::now();
                let left = deadline.saturating_duration_since(sent);
                let request = LockRequest::Acquire {
                    ns: path.namespace.clone(),
                    name: path.name.clone(),
                    holder,
                    mode,
                    lease_ms: lease.as_millis() as u64,
                    wait_ms: left.as_millis() as u64,
                    signature: signature.clone(),
                };
                match self.to_primary(path, request, deadline).await {
                    Ok(PeerResponse::Granted { grant, waited_ms }) => {
                        let waited = Duration::from_millis(waited_ms);
                        let mut keeper = Keeper::granted(sent, waited, Instant::now(), lease);
                        if keeper.fresh(Instant::now()) {
                            return Ok((grant, keeper));
                        }
                        // The answer came late (held up in the network):
                        // the lease may be over. A renewal says whether it
                        // still holds, and counts from its own sending.
                        let renewed = Instant::now();
                        match self.renew(path, holder, lease, deadline).await {
                            Ok(_) => {
                                keeper.renewed(renewed, Instant::now());
                                return Ok((grant, keeper));
                            }
                            // Lost before it was used: wait in line again.
                            Err(SpaceError::Fenced(_)) if Instant::now() < deadline => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(other) => {
                        return Err(SpaceError::Unavailable(format!(
                            "unexpected answer {other:?}"
                        )))
                    }
                    // The primary died while this request waited: ask the new one.
                    Err(SpaceError::Unavailable(_) | SpaceError::OutcomeUnknown(_))
                        if Instant::now() < deadline => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await
    }

    /// Renews a held lock's lease, trying until `deadline`.
    pub async fn renew(
        &self,
        path: &ObjectPath,
        holder: u64,
        lease: Duration,
        deadline: Instant,
    ) -> Result<Grant> {
        let request = LockRequest::Renew {
            ns: path.namespace.clone(),
            name: path.name.clone(),
            holder,
            lease_ms: lease.as_millis() as u64,
        };
        match self.to_primary(path, request, deadline).await? {
            PeerResponse::Granted { grant, .. } => Ok(grant),
            other => Err(SpaceError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Releases a held lock.
    pub async fn release(&self, path: &ObjectPath, holder: u64) -> Result<()> {
        crate::metrics::observe("unlock", async {
            let request = LockRequest::Release {
                ns: path.namespace.clone(),
                name: path.name.clone(),
                holder,
            };
            let deadline = Instant::now() + self.config().rpc_timeout;
            self.to_primary(path, request, deadline).await.map(drop)
        })
        .await
    }
}
