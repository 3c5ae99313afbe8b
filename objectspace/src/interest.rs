//! Direct watches: which nodes want the events of which names, and delivering
//! events to them only.
//!
//! A node with local watchers registers each (namespace, prefix) it watches
//! with every P³ peer it is connected to ([`PeerRequest::Interest`]), as a
//! lease it renews; whichever node orders a write (the key's primary) sends
//! the event to the nodes whose interests match, in the order it ordered the
//! writes ([`PeerRequest::Events`], batched per peer). A node nobody watches
//! through receives nothing: no topic is flooded, no signature is checked.
//!
//! Delivery is at most once: a watcher that misses an event (its node was
//! unreachable for a moment) sees the next version; blocking reads
//! ([`crate::watch`]) are the way to wait for a version without missing it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::Ordering, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use p3_dht::PeerId;
use tokio::sync::{mpsc, oneshot};

use crate::{
    error::{Result, SpaceError},
    name::Namespace,
    protocol::{PeerRequest, PeerResponse},
    space::ObjectSpace,
    watch::Event,
};

/// How long a registered interest lasts unless renewed.
pub const INTEREST_LEASE: Duration = Duration::from_secs(30);
/// How often a node renews its interests with every peer (and tells new peers).
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often the set of peers is checked for newcomers to tell.
const PEERS_EVERY: Duration = Duration::from_millis(100);
/// Interests one peer may register here; more are refused.
pub const MAX_INTERESTS_PER_PEER: usize = 256;
/// Events sent in one message at most.
pub const MAX_EVENTS_PER_MESSAGE: usize = 64;
/// Events queued for one peer before the oldest are dropped.
const QUEUE: usize = 4096;
/// How long registering with a peer may take before the watch starts anyway.
const REGISTER_WAIT: Duration = Duration::from_secs(2);

/// One watched (namespace, prefix).
pub type Interest = (Namespace, String);

/// Interests: the peers' (with their lease ends) and this node's own (with
/// how many local watches share each).
#[derive(Default)]
pub(crate) struct Interests {
    remote: Mutex<HashMap<PeerId, HashMap<Interest, Instant>>>,
    local: Mutex<BTreeMap<Interest, usize>>,
    senders: Mutex<HashMap<PeerId, mpsc::Sender<Event>>>,
    /// New local interests waiting to be registered, each with whom to tell
    /// once it is.
    unregistered: Mutex<Vec<(Interest, oneshot::Sender<()>)>>,
    /// Held by the one registration round under way.
    registering: tokio::sync::Mutex<()>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn matches((ns, prefix): &Interest, event: &Event) -> bool {
    *ns == event.namespace && event.name.as_str().starts_with(prefix.as_str())
}

impl Interests {
    /// Registers (or renews, or with a zero lease cancels) a peer's interest.
    pub fn register(&self, peer: PeerId, interest: Interest, lease: Duration) -> Result<()> {
        self.register_at(peer, interest, lease, Instant::now())
    }

    /// [`Interests::register`] as of `now`.
    fn register_at(
        &self,
        peer: PeerId,
        interest: Interest,
        lease: Duration,
        now: Instant,
    ) -> Result<()> {
        let mut remote = locked(&self.remote);
        let mine = remote.entry(peer).or_default();
        mine.retain(|_, until| *until > now);
        if lease.is_zero() {
            mine.remove(&interest);
            return Ok(());
        }
        if mine.len() >= MAX_INTERESTS_PER_PEER && !mine.contains_key(&interest) {
            return Err(SpaceError::Invalid(format!(
                "a peer may watch at most {MAX_INTERESTS_PER_PEER} prefixes here"
            )));
        }
        mine.insert(interest, now + lease.min(INTEREST_LEASE));
        Ok(())
    }

    /// The peers that want `event`, as of `now`.
    fn peers_for(&self, event: &Event, now: Instant) -> Vec<PeerId> {
        let mut remote = locked(&self.remote);
        remote.retain(|_, interests| {
            interests.retain(|_, until| *until > now);
            !interests.is_empty()
        });
        remote
            .iter()
            .filter(|(_, interests)| interests.keys().any(|i| matches(i, event)))
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// Counts a local watch of `interest`; whether it is the first.
    fn add_local(&self, interest: &Interest) -> bool {
        let mut local = locked(&self.local);
        let n = local.entry(interest.clone()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Uncounts one; whether it was the last.
    fn remove_local(&self, interest: &Interest) -> bool {
        let mut local = locked(&self.local);
        match local.get_mut(interest) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                local.remove(interest);
                true
            }
            None => false,
        }
    }

    fn local(&self) -> Vec<Interest> {
        locked(&self.local).keys().cloned().collect()
    }
}

impl ObjectSpace {
    /// Sends `event` to the peers that registered a matching interest, after
    /// the events ordered before it.
    pub(crate) fn deliver(&self, event: &Event) {
        for peer in self.inner.interests.peers_for(event, Instant::now()) {
            let sender = {
                let mut senders = locked(&self.inner.interests.senders);
                senders
                    .entry(peer)
                    .or_insert_with(|| self.event_sender(peer))
                    .clone()
            };
            if sender.try_send(event.clone()).is_err() {
                tracing::warn!(%peer, "a watcher's node is behind; an event was dropped");
            }
        }
    }

    /// A task sending one peer its events in order, a batch at a time.
    fn event_sender(&self, peer: PeerId) -> mpsc::Sender<Event> {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        let space = self.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_EVENTS_PER_MESSAGE {
                    match rx.try_recv() {
                        Ok(event) => batch.push(event),
                        Err(_) => break,
                    }
                }
                if let Err(e) = space.ask(peer, PeerRequest::Events(batch)).await {
                    tracing::debug!(%peer, error = %e, "events not delivered");
                }
            }
        });
        tx
    }

    /// Events from a peer that orders writes we watch: to the local watchers.
    pub(crate) fn received(&self, events: Vec<Event>) -> Result<PeerResponse> {
        if events.len() > MAX_EVENTS_PER_MESSAGE {
            return Err(SpaceError::Invalid(format!(
                "{} events in one message; at most {MAX_EVENTS_PER_MESSAGE}",
                events.len()
            )));
        }
        let n = events.len() as u64;
        self.inner.events_received.fetch_add(n, Ordering::Relaxed);
        for event in events {
            let _ = self.inner.events.send(event);
        }
        Ok(PeerResponse::Done)
    }

    /// Watch events this node received from other nodes since it started.
    pub fn events_received(&self) -> u64 {
        self.inner.events_received.load(Ordering::Relaxed)
    }

    /// Starts counting a local watch of `interest`; a first one is registered
    /// with every peer before this returns (or within [`REGISTER_WAIT`]), so
    /// writes ordered after it are seen.
    pub(crate) async fn interest_start(&self, interest: &Interest) {
        if self.inner.interests.add_local(interest) {
            self.register_new(interest.clone()).await;
        }
    }

    /// Registers a new local interest with every peer, together with those
    /// started at the same moment (a job's worker starts several watches at
    /// once, on every node at once): one message per peer and round, not
    /// one per watch. Rounds run one at a time; each takes everything
    /// queued by then.
    async fn register_new(&self, interest: Interest) {
        let interests = &self.inner.interests;
        let (registered, done) = oneshot::channel();
        locked(&interests.unregistered).push((interest, registered));
        // Watches started together queue before the first round begins.
        tokio::task::yield_now().await;
        {
            let _round = interests.registering.lock().await;
            let batch = std::mem::take(&mut *locked(&interests.unregistered));
            if !batch.is_empty() {
                let new: Vec<Interest> = batch.iter().map(|(i, _)| i.clone()).collect();
                if let Ok(peers) = self.everyone().await {
                    self.tell(&peers, &new, INTEREST_LEASE).await;
                }
                for (_, registered) in batch {
                    let _ = registered.send(());
                }
            }
        }
        // Registered by this round or an earlier one.
        let _ = done.await;
    }

    /// Stops counting a local watch; the last one cancels the registration.
    pub(crate) fn interest_end(&self, interest: &Interest) {
        if self.inner.interests.remove_local(interest) {
            let space = self.clone();
            let interest = interest.clone();
            tokio::spawn(async move { space.tell_peers(&interest, Duration::ZERO).await });
        }
    }

    async fn tell_peers(&self, interest: &Interest, lease: Duration) {
        let Ok(peers) = self.everyone().await else {
            return;
        };
        self.tell(&peers, std::slice::from_ref(interest), lease)
            .await;
    }

    /// Registers `interests` with each of `peers`: one message per peer.
    async fn tell(&self, peers: &[PeerId], interests: &[Interest], lease: Duration) {
        if interests.is_empty() {
            return;
        }
        let asks = peers.iter().map(|&peer| {
            let request = PeerRequest::Interest {
                interests: interests.to_vec(),
                lease_ms: lease.as_millis() as u64,
            };
            async move {
                match tokio::time::timeout(REGISTER_WAIT, self.ask(peer, request)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "interest not registered"),
                    Err(_) => tracing::debug!(%peer, "interest registration timed out"),
                }
            }
        });
        futures::future::join_all(asks).await;
    }
}

/// Renews this node's interests with every peer, and tells peers that
/// connect what this node watches, until the node stops.
pub(crate) async fn keep(space: ObjectSpace) {
    let mut told: Vec<PeerId> = Vec::new();
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(PEERS_EVERY).await;
        let interests = space.inner.interests.local();
        if interests.is_empty() {
            // Nothing to tell; a watch that starts tells every peer itself,
            // and the next round here every peer once more.
            told.clear();
            continue;
        }
        let Ok(mut peers) = space.everyone().await else {
            return; // the node is stopping
        };
        peers.sort();
        if renewed.elapsed() >= RENEW_EVERY {
            space.tell(&peers, &interests, INTEREST_LEASE).await;
            renewed = Instant::now();
        } else {
            let new: Vec<PeerId> = peers
                .iter()
                .filter(|p| told.binary_search(p).is_err())
                .copied()
                .collect();
            if !new.is_empty() {
                space.tell(&new, &interests, INTEREST_LEASE).await;
            }
        }
        told = peers;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{name::ObjectName, watch::EventKind};

    fn event(ns: &str, name: &str) -> Event {
        Event {
            kind: EventKind::Put,
            namespace: Namespace::new(ns).unwrap(),
            name: ObjectName::new(name).unwrap(),
            version: 1,
            hash: String::new(),
            size: 0,
            at_ms: 0,
            meta: Default::default(),
            type_tag: String::new(),
        }
    }

    fn interest(ns: &str, prefix: &str) -> Interest {
        (Namespace::new(ns).unwrap(), prefix.to_owned())
    }

    #[test]
    fn events_go_only_to_peers_with_a_matching_live_interest() {
        let interests = Interests::default();
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        interests
            .register_at(a, interest("jobs", "steal/a/"), INTEREST_LEASE, now)
            .unwrap();
        interests
            .register_at(b, interest("other", ""), INTEREST_LEASE, now)
            .unwrap();
        assert_eq!(
            interests.peers_for(&event("jobs", "steal/a/1"), now),
            vec![a]
        );
        assert!(interests
            .peers_for(&event("jobs", "steal/b/1"), now)
            .is_empty());
        assert_eq!(interests.peers_for(&event("other", "x"), now), vec![b]);
        // A zero lease cancels.
        interests
            .register_at(a, interest("jobs", "steal/a/"), Duration::ZERO, now)
            .unwrap();
        assert!(interests
            .peers_for(&event("jobs", "steal/a/1"), now)
            .is_empty());
        // An expired lease is gone.
        let lease = Duration::from_secs(1);
        interests
            .register_at(a, interest("jobs", ""), lease, now)
            .unwrap();
        assert_eq!(interests.peers_for(&event("jobs", "x"), now), vec![a]);
        assert!(interests
            .peers_for(&event("jobs", "x"), now + lease)
            .is_empty());
    }

    #[test]
    fn a_peer_cannot_register_without_bound() {
        let interests = Interests::default();
        let peer = PeerId::random();
        for i in 0..MAX_INTERESTS_PER_PEER {
            interests
                .register(peer, interest("ns", &format!("p{i}")), INTEREST_LEASE)
                .unwrap();
        }
        let over = interests.register(peer, interest("ns", "more"), INTEREST_LEASE);
        assert!(matches!(over, Err(SpaceError::Invalid(_))));
        // Renewing one it has is fine.
        interests
            .register(peer, interest("ns", "p0"), INTEREST_LEASE)
            .unwrap();
    }

    #[test]
    fn local_watches_are_counted() {
        let interests = Interests::default();
        let i = interest("ns", "a/");
        assert!(interests.add_local(&i));
        assert!(!interests.add_local(&i));
        assert!(!interests.remove_local(&i));
        assert!(interests.remove_local(&i));
        assert!(!interests.remove_local(&i));
    }
}
