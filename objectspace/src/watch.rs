//! Changes as they happen: events for watchers, and blocking reads.
//!
//! Two mechanisms for two needs:
//! - **watch** (`p3ctl watch NS[/PREFIX]`): the primary that orders a write
//!   sends it, once acknowledged, as an [`Event`] to the nodes that registered
//!   an interest in its name ([`crate::interest`]), and to its own watchers.
//!   A primary sends in order, but the primary of a key can change, so a
//!   watcher drops an event older than one it already delivered for the same
//!   object: per object, events arrive in version order.
//! - **blocking get** (`get --wait`): the reader registers with the key's primary,
//!   which answers the moment it acknowledges a newer live version — no polling,
//!   and no race with gossip subscriptions. If the primary goes away, the reader
//!   reads again and registers with the new one.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::{broadcast, oneshot};

pub use crate::event::{Event, EventKind};

use crate::{
    error::{Result, SpaceError},
    interest::Interest,
    key::object_key,
    name::{Namespace, ObjectName, ObjectPath},
    object::{now_ms, ObjectRecord},
    protocol::{PeerRequest, PeerResponse},
    read::Found,
    space::ObjectSpace,
    transfer::blocking,
};

/// Events a slow local watcher may fall behind by before it loses some.
pub(crate) const LOCAL_EVENTS: usize = 1024;
/// Pause before retrying a blocking read whose primary failed.
const RETRY: Duration = Duration::from_millis(200);

/// A blocking read parked at the primary: the version it has seen, and where
/// to send the newer one.
type Waiter = (u64, oneshot::Sender<u64>);

/// Blocking reads registered with this node as primary, per key.
#[derive(Default)]
pub(crate) struct Waiters {
    by_key: Mutex<HashMap<[u8; 32], Vec<Waiter>>>,
}

impl Waiters {
    fn register(&self, key: [u8; 32], after: u64) -> oneshot::Receiver<u64> {
        let (tx, rx) = oneshot::channel();
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(key).or_default();
        list.retain(|(_, tx)| !tx.is_closed());
        list.push((after, tx));
        rx
    }

    fn notify(&self, key: [u8; 32], version: u64) {
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(&key) {
            for (_, tx) in list.extract_if(.., |(after, _)| *after < version) {
                let _ = tx.send(version);
            }
            if list.is_empty() {
                map.remove(&key);
            }
        }
    }
}

impl ObjectSpace {
    /// Tells waiters and watchers that the primary acknowledged `record`;
    /// `value` is its value if the caller holds it whole (see
    /// [`ObjectSpace::index`]).
    pub(crate) fn written(&self, record: &ObjectRecord, value: Option<&[u8]>) {
        let kind = if record.blob.is_some() {
            EventKind::Put
        } else {
            EventKind::Remove
        };
        if kind == EventKind::Put {
            let key = object_key(&record.ns, &record.name);
            self.inner.waiters.notify(key, record.version);
        }
        self.publish(Event::of(record, kind));
        if !record.volatile {
            self.index(record.clone(), value);
        }
        if let Some(expires) = record.expires_ms {
            let space = self.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let wait = expires.saturating_sub(now_ms());
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let store = space.store().clone();
                let (ns, name) = (record.ns.clone(), record.name.clone());
                let current = blocking(move || store.record(&ns, &name)).await;
                if matches!(current, Ok(Some(c)) if c.order() == record.order()) {
                    space.publish(Event::of(&record, EventKind::Expire));
                }
            });
        }
    }

    fn publish(&self, event: Event) {
        self.deliver(&event);
        let _ = self.inner.events.send(event);
    }

    /// Starts watching the objects of `ns` whose names start with `prefix`.
    pub async fn watch(&self, ns: &Namespace, prefix: &str) -> Result<Watch> {
        self.check_namespace(ns).await?;
        self.may_read(ns).await?;
        Ok(self.watch_any(ns, prefix).await)
    }

    /// [`ObjectSpace::watch`] of a namespace that may not exist yet: its
    /// events start with its first write.
    pub async fn watch_any(&self, ns: &Namespace, prefix: &str) -> Watch {
        // Subscribed before registering, so nothing sent meanwhile is missed.
        let local = self.inner.events.subscribe();
        let interest = (ns.clone(), prefix.to_owned());
        self.interest_start(&interest).await;
        Watch {
            local,
            interest,
            space: self.clone(),
            exact: false,
            delivered: HashMap::new(),
        }
    }

    /// The primary's side of a blocking read: answers with the version as soon
    /// as a live version newer than `after` is here, or `None` after `wait`.
    pub(crate) async fn wait_here(
        &self,
        ns: Namespace,
        name: ObjectName,
        after: u64,
        wait: Duration,
    ) -> Result<PeerResponse> {
        let key = object_key(&ns, &name);
        // Registered before looking, so a write in between is not missed.
        let newer = self.inner.waiters.register(key, after);
        let store = self.store().clone();
        let current = blocking(move || store.record(&ns, &name)).await?;
        if let Some(c) = current.filter(|c| c.live_version(now_ms()) > after) {
            return Ok(PeerResponse::Newer(Some(c.version)));
        }
        Ok(PeerResponse::Newer(
            tokio::time::timeout(wait, newer)
                .await
                .ok()
                .and_then(Result::ok),
        ))
    }

    /// Reads `path` once it exists with a version above `after` (any version if
    /// `None`), waiting up to `wait`.
    pub async fn find_newer(
        &self,
        path: &ObjectPath,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<Found> {
        crate::metrics::observe("get_wait", async {
            let deadline = Instant::now() + wait;
            loop {
                let seen = match self.find(path, true).await {
                    Ok(found) if after.is_none_or(|a| found.record.version > a) => {
                        return Ok(found)
                    }
                    Ok(found) => Some(found.record.version),
                    Err(SpaceError::NotFound(_)) => None,
                    Err(e) => return Err(e),
                };
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(SpaceError::TimedOut(match seen {
                        Some(v) => format!("{path} is still at version {v} after waiting {wait:?}"),
                        None => format!("{path} does not exist after waiting {wait:?}"),
                    }));
                }
                let (_, owners) = self.locate(path).await?;
                let request = PeerRequest::WaitNewer {
                    ns: path.namespace.clone(),
                    name: path.name.clone(),
                    after: after.unwrap_or(0).max(seen.unwrap_or(0)),
                    wait_ms: left.as_millis() as u64,
                };
                if let Err(e) = self.ask(owners[0], request).await {
                    tracing::debug!(error = %e, "blocking read: primary failed; reading again");
                    tokio::time::sleep(RETRY.min(left)).await;
                }
            }
        })
        .await
    }
}

/// A stream of events of one namespace and name prefix: this node's own and
/// those other nodes send it. Dropping it ends the interest.
pub struct Watch {
    local: broadcast::Receiver<Event>,
    interest: Interest,
    space: ObjectSpace,
    exact: bool,
    delivered: HashMap<ObjectName, u64>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.space.interest_end(&self.interest);
    }
}

impl Watch {
    /// Narrows the watch to the one object named exactly as the prefix.
    pub fn exact(mut self) -> Self {
        self.exact = true;
        self
    }

    /// The next event, in version order per object.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            let event = match self.local.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "watcher fell behind");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(SpaceError::Stopped),
            };
            let (namespace, prefix) = &self.interest;
            let name = event.name.as_str();
            let wanted = if self.exact {
                name == prefix
            } else {
                name.starts_with(prefix.as_str())
            };
            if event.namespace != *namespace || !wanted {
                continue;
            }
            let last = self.delivered.entry(event.name.clone()).or_insert(0);
            // An expiry carries the version that expired; it follows that put.
            let fresh = event.version > *last
                || (event.kind == EventKind::Expire && event.version == *last);
            if !fresh {
                continue;
            }
            *last = event.version;
            return Ok(event);
        }
    }
}
