//! How peer requests are let in, so that no peer crowds out the others.
//!
//! - Requests waiting for a handling slot: one queue per peer, served in
//!   turn, each bounded in count and bytes ([`FairQueue`]). A peer that floods
//!   a node fills only its own queue (and then is told to back off), while
//!   every other peer's next request is at most one turn of each busy peer
//!   away.
//! - Requests that park for long (blocking reads, lock waits) hold no handling
//!   slot; each peer may park a bounded number ([`Parked`]).
//!
//! Bookkeeping only, no I/O: the service loop decides when a slot is free.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    sync::{Arc, Mutex},
};

/// How much one peer may have waiting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerBounds {
    /// Requests.
    pub requests: usize,
    /// Bytes of request bodies.
    pub bytes: usize,
}

/// Round-robin queues keyed by peer.
#[derive(Debug)]
pub(crate) struct FairQueue<K, T> {
    queues: HashMap<K, PeerQueue<T>>,
    /// Peers with something waiting, in the order they are served next.
    turns: VecDeque<K>,
    bounds: PeerBounds,
    len: usize,
}

#[derive(Debug)]
struct PeerQueue<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    /// An empty queue whose peers may each have `bounds` waiting.
    pub fn new(bounds: PeerBounds) -> Self {
        Self {
            queues: HashMap::new(),
            turns: VecDeque::new(),
            bounds,
            len: 0,
        }
    }

    /// Queues `item` (`bytes` long) from `peer`, or gives it back if that
    /// peer already has as much waiting as it may. A single request larger
    /// than the byte bound is accepted when nothing else of its peer waits:
    /// its size was already checked against the message limit.
    pub fn push(&mut self, peer: K, item: T, bytes: usize) -> Result<(), T> {
        let bounds = self.bounds;
        let queue = self
            .queues
            .entry(peer.clone())
            .or_insert_with(|| PeerQueue {
                items: VecDeque::new(),
                bytes: 0,
            });
        let was_empty = queue.items.is_empty();
        if !was_empty
            && (queue.items.len() >= bounds.requests || queue.bytes + bytes > bounds.bytes)
        {
            return Err(item);
        }
        queue.items.push_back((item, bytes));
        queue.bytes += bytes;
        self.len += 1;
        if was_empty {
            self.turns.push_back(peer);
        }
        Ok(())
    }

    /// The next request: the oldest of the peer whose turn it is.
    pub fn pop(&mut self) -> Option<(K, T)> {
        let peer = self.turns.pop_front()?;
        let queue = self.queues.get_mut(&peer)?;
        let (item, bytes) = queue.items.pop_front()?;
        queue.bytes -= bytes;
        self.len -= 1;
        if queue.items.is_empty() {
            self.queues.remove(&peer);
        } else {
            self.turns.push_back(peer.clone());
        }
        Some((peer, item))
    }

    /// Requests waiting, over all peers.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// How many requests each peer has parked here, bounded per peer.
#[derive(Debug)]
pub(crate) struct Parked<K: Hash + Eq> {
    counts: Mutex<HashMap<K, usize>>,
    per_peer: usize,
}

/// One parked request; dropping it (when its answer is sent) frees its place.
#[derive(Debug)]
pub(crate) struct ParkedPlace<K: Hash + Eq + Clone> {
    parked: Arc<Parked<K>>,
    peer: K,
}

impl<K: Hash + Eq + Clone> Parked<K> {
    /// No request parked; each peer may park `per_peer`.
    pub fn new(per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(HashMap::new()),
            per_peer,
        })
    }

    /// A place for one more request of `peer`, or `None` if it has parked as
    /// many as it may.
    pub fn admit(self: &Arc<Self>, peer: K) -> Option<ParkedPlace<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(peer.clone()).or_default();
        if *count >= self.per_peer {
            return None;
        }
        *count += 1;
        Some(ParkedPlace {
            parked: self.clone(),
            peer,
        })
    }

    #[cfg(test)]
    fn count(&self, peer: &K) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(peer).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for ParkedPlace<K> {
    fn drop(&mut self) {
        let mut counts = self.parked.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peer_parks_up_to_its_bound_and_places_come_back() {
        let parked = Parked::new(2);
        let a1 = parked.admit("a").unwrap();
        let _a2 = parked.admit("a").unwrap();
        assert!(parked.admit("a").is_none());
        let b = parked.admit("b").unwrap();
        drop(a1);
        let _a3 = parked.admit("a").unwrap();
        assert_eq!(parked.count(&"a"), 2);
        drop(b);
        assert_eq!(parked.count(&"b"), 0);
        assert!(
            !parked.counts.lock().unwrap().contains_key("b"),
            "no empty entries kept"
        );
    }

    fn queue(requests: usize, bytes: usize) -> FairQueue<&'static str, u32> {
        FairQueue::new(PeerBounds { requests, bytes })
    }

    #[test]
    fn peers_take_turns_and_each_peer_keeps_its_order() {
        let mut q = queue(100, 1 << 20);
        for i in 0..5 {
            q.push("flood", i, 1).unwrap();
        }
        q.push("quiet", 100, 1).unwrap();
        q.push("other", 200, 1).unwrap();
        q.push("quiet", 101, 1).unwrap();
        assert_eq!(q.len(), 8);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            [
                ("flood", 0),
                ("quiet", 100),
                ("other", 200),
                ("flood", 1),
                ("quiet", 101),
                ("flood", 2),
                ("flood", 3),
                ("flood", 4),
            ]
        );
        assert!(q.is_empty());
        assert!(
            q.queues.is_empty() && q.turns.is_empty(),
            "nothing is left behind"
        );
    }

    #[test]
    fn a_peer_over_its_bounds_is_refused_and_others_are_not() {
        let mut q = queue(3, 1 << 20);
        for i in 0..3 {
            q.push("flood", i, 10).unwrap();
        }
        assert_eq!(q.push("flood", 3, 10), Err(3));
        q.push("quiet", 7, 10).unwrap();
        // Once one of its requests is served, the peer may queue another.
        assert_eq!(q.pop(), Some(("flood", 0)));
        q.push("flood", 4, 10).unwrap();

        let mut q = queue(100, 100);
        q.push("big", 0, 60).unwrap();
        assert_eq!(q.push("big", 1, 60), Err(1), "over the byte bound");
        q.push("big", 2, 40).unwrap();
        q.push("small", 3, 100).unwrap();
        // One request alone may be larger than the byte bound.
        let mut q = queue(100, 100);
        q.push("huge", 0, 500).unwrap();
        assert_eq!(q.push("huge", 1, 1), Err(1));
        assert_eq!(q.pop(), Some(("huge", 0)));
        q.push("huge", 1, 1).unwrap();
    }
}
