//! Changes as they happen: events for watchers, and blocking reads.
//!
//! Two mechanisms for two needs:
//! - **watch** (`p3ctl watch NS[/PREFIX]`): the primary that orders a write
//!   publishes it, once acknowledged, as an [`Event`] on its namespace's gossipsub
//!   topic; a watching node subscribes and filters by prefix. Gossip does not order
//!   messages, so a watcher drops an event older than one it already delivered for
//!   the same object: per object, events arrive in version order.
//! - **blocking get** (`get --wait`): the reader registers with the key's primary,
//!   which answers the moment it acknowledges a newer live version — no polling,
//!   and no race with gossip subscriptions. If the primary goes away, the reader
//!   reads again and registers with the new one.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use p3_dht::{GossipMessage, Node};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    error::{Result, SpaceError},
    key::object_key,
    name::{Namespace, ObjectName, ObjectPath},
    object::{now_ms, ObjectRecord},
    protocol::{PeerRequest, PeerResponse},
    read::Found,
    space::ObjectSpace,
    transfer::blocking,
};

/// Largest event message accepted from gossip.
const MAX_EVENT: usize = 8 << 10;
/// Events a slow local watcher may fall behind by before it loses some.
pub(crate) const LOCAL_EVENTS: usize = 1024;
/// Pause before retrying a blocking read whose primary failed.
const RETRY: Duration = Duration::from_millis(200);

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A new version was written.
    Put,
    /// It was removed (or taken).
    Remove,
    /// Its TTL ran out.
    Expire,
}

/// One change to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Namespace.
    pub namespace: Namespace,
    /// Name.
    pub name: ObjectName,
    /// The version the change produced (for an expiry: the version that expired).
    pub version: u64,
    /// blake3 of the value (hex), empty for removals.
    pub hash: String,
    /// Value size.
    pub size: u64,
    /// When it happened, ms since the Unix epoch.
    pub at_ms: u64,
}

impl Event {
    fn of(record: &ObjectRecord, kind: EventKind) -> Self {
        Event {
            kind,
            namespace: record.ns.clone(),
            name: record.name.clone(),
            version: record.version,
            hash: record.blob.map(|b| b.to_string()).unwrap_or_default(),
            size: record.size,
            at_ms: now_ms(),
        }
    }
}

/// The gossipsub topic of a namespace's events.
pub fn topic(ns: &Namespace) -> String {
    format!("/p3/events/{ns}")
}

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
    /// Tells waiters and watchers that the primary acknowledged `record`.
    pub(crate) fn written(&self, record: &ObjectRecord) {
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
        self.index(record.clone());
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
        let _ = self.inner.events.send(event.clone());
        if self.inner.gossip.try_send(event).is_err() {
            tracing::warn!("event publisher is behind; an event was not gossiped");
        }
    }

    /// Starts watching the objects of `ns` whose names start with `prefix`.
    pub async fn watch(&self, ns: &Namespace, prefix: &str) -> Result<Watch> {
        self.check_namespace(ns).await?;
        let gossip = self.node().subscribe(&topic(ns)).await?;
        Ok(Watch {
            gossip,
            local: self.inner.events.subscribe(),
            namespace: ns.clone(),
            prefix: prefix.to_owned(),
            exact: false,
            delivered: HashMap::new(),
        })
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
        let deadline = Instant::now() + wait;
        loop {
            let seen = match self.find(path, true).await {
                Ok(found) if after.is_none_or(|a| found.record.version > a) => return Ok(found),
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
    }
}

/// Publishes events on gossip one at a time, in the order the writes were
/// ordered (one task per event could overtake one another).
pub(crate) fn publisher(node: Node) -> mpsc::Sender<Event> {
    let (tx, mut rx) = mpsc::channel::<Event>(LOCAL_EVENTS);
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let mut data = Vec::new();
            if ciborium::into_writer(&event, &mut data).is_ok() {
                // Fails when no node watches this namespace: nothing to tell.
                let _ = node.publish(&topic(&event.namespace), data).await;
            }
        }
    });
    tx
}

/// A stream of events of one namespace and name prefix.
pub struct Watch {
    gossip: broadcast::Receiver<GossipMessage>,
    local: broadcast::Receiver<Event>,
    namespace: Namespace,
    prefix: String,
    exact: bool,
    delivered: HashMap<ObjectName, u64>,
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
            let event = tokio::select! {
                message = self.gossip.recv() => match message {
                    Ok(message) => match decode(&message) {
                        Some(event) => event,
                        None => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "watcher fell behind");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(SpaceError::Stopped),
                },
                event = self.local.recv() => match event {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "watcher fell behind");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(SpaceError::Stopped),
                },
            };
            let name = event.name.as_str();
            let wanted = if self.exact {
                name == self.prefix
            } else {
                name.starts_with(&self.prefix)
            };
            if event.namespace != self.namespace || !wanted {
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

/// An event from gossip, if it is one (peers' messages are checked, not trusted).
fn decode(message: &GossipMessage) -> Option<Event> {
    if message.data.len() > MAX_EVENT {
        return None;
    }
    ciborium::from_reader(message.data.as_slice()).ok()
}
