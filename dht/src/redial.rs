//! Which routing-table peers without a connection to dial again, and when.
//! A peer's first dial may fail (two nodes dialling each other at the same
//! moment can both lose the handshake), so they are retried on the reconnect
//! tick; a dead peer stays in the table (Kademlia keeps a last address), so
//! each is tried less and less often. Pure bookkeeping; the event loop dials.

use std::collections::HashMap;

use libp2p::PeerId;

/// Redials of the routing table's unconnected peers, with backoff.
#[derive(Debug, Default)]
pub(crate) struct Redials {
    /// Peers redialled without a connection since, and how often.
    tried: HashMap<PeerId, u32>,
    /// Reconnect ticks so far.
    ticks: u64,
}

impl Redials {
    /// One reconnect tick: of the table's peers `unconnected`, those to dial
    /// now (every tick at first, then every 2, 4, ... and at the least every
    /// 64 ticks). Peers no longer unconnected are forgotten.
    pub fn due(&mut self, unconnected: &[PeerId]) -> Vec<PeerId> {
        self.ticks += 1;
        self.tried.retain(|peer, _| unconnected.contains(peer));
        let ticks = self.ticks;
        unconnected
            .iter()
            .filter(|&&peer| {
                let tried = self.tried.entry(peer).or_insert(0);
                let due = ticks % (1u64 << (*tried).min(6)) == 0;
                *tried += u32::from(due);
                due
            })
            .copied()
            .collect()
    }

    /// `peer` connected: its next loss starts the backoff anew.
    pub fn connected(&mut self, peer: &PeerId) {
        self.tried.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_stays_unreachable_is_redialled_ever_less_often() {
        let peer = PeerId::random();
        let mut redials = Redials::default();
        let dialled: Vec<u64> = (1..=400)
            .filter(|_| !redials.due(&[peer]).is_empty())
            .collect();
        assert_eq!(&dialled[..6], &[1, 2, 4, 8, 16, 32]);
        // After that, once every 64 ticks (5 min 20 s at 5 s a tick).
        assert!(dialled.windows(2).skip(6).all(|w| w[1] - w[0] == 64));
        assert_eq!(dialled.len(), 6 + 400 / 64);
    }

    #[test]
    fn a_connection_starts_the_backoff_anew() {
        let peer = PeerId::random();
        let mut redials = Redials::default();
        for _ in 0..40 {
            redials.due(&[peer]);
        }
        redials.connected(&peer);
        assert_eq!(redials.due(&[peer]), vec![peer]);
    }
}
