//! Where peers are and how far: addresses worth dialling, peer ids in
//! addresses, and XOR distance to a key.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
};

use libp2p::{kad::KBucketKey, multiaddr::Protocol, Multiaddr, PeerId};

/// Peers whose Kademlia key [`by_distance`] remembers at most; past this it
/// forgets them all (they are recomputed as they are met again).
const PEER_KEYS_MAX: usize = 1 << 16;

/// The Kademlia keys (a SHA-256 of the id) of the peers met lately. Owners
/// are computed over the whole membership map several times per write (the
/// primary, its peering intervals, each replica's check, index shards,
/// repair), so hashing every member each time was 3 % of a 3-node cluster's
/// CPU under small writes, and grows with the number of members.
static PEER_KEYS: LazyLock<Mutex<HashMap<PeerId, KBucketKey<PeerId>>>> =
    LazyLock::new(Default::default);

/// Parses the peer id out of a `/p2p/PEERID` suffix, if the address has one.
pub(crate) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Whether an address a peer announced is worth putting in the routing table.
/// Unspecified addresses (`0.0.0.0`, `::`) cannot be dialled, and a peer on
/// another machine that listens on all interfaces also announces its loopback
/// address, which from here would reach this machine instead.
pub(crate) fn worth_dialling(addr: &Multiaddr, via_loopback: bool) -> bool {
    let unspecified = addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    });
    !unspecified && (via_loopback || !is_loopback(addr))
}

/// Whether the address is on the loopback interface.
pub(crate) fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// Deduplicates `peers` and sorts them by XOR distance to the Kademlia key of `key`.
pub fn by_distance(key: &[u8], peers: impl Iterator<Item = PeerId>) -> Vec<PeerId> {
    let target = KBucketKey::new(key.to_vec());
    let mut keyed: Vec<_> = {
        let mut known = PEER_KEYS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.len() >= PEER_KEYS_MAX {
            known.clear();
        }
        peers
            .map(|p| {
                let peer_key = known.entry(p).or_insert_with(|| KBucketKey::from(p));
                (target.distance(peer_key), p)
            })
            .collect()
    };
    // A peer's distance is unique to it, so duplicates end up side by side.
    keyed.sort_unstable();
    keyed.dedup();
    keyed.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_addresses_are_filtered_by_how_the_peer_is_reached() {
        let addr = |s: &str| s.parse::<Multiaddr>().unwrap();
        assert!(!worth_dialling(&addr("/ip4/0.0.0.0/tcp/4370"), true));
        assert!(worth_dialling(&addr("/ip4/127.0.0.1/tcp/4370"), true));
        assert!(!worth_dialling(&addr("/ip4/127.0.0.1/tcp/4370"), false));
        assert!(!worth_dialling(&addr("/ip6/::1/tcp/4370"), false));
        assert!(worth_dialling(&addr("/ip4/10.0.0.5/tcp/4370"), false));
        assert!(worth_dialling(&addr("/dns4/node.example/tcp/4370"), false));
    }

    #[test]
    fn owners_are_sorted_by_xor_distance_without_duplicates() {
        let peers: Vec<PeerId> = (0..8).map(|_| PeerId::random()).collect();
        let sorted = by_distance(b"key", peers.iter().chain(peers.iter()).copied());
        assert_eq!(sorted.len(), peers.len());
        let target = KBucketKey::new(b"key".to_vec());
        let distances: Vec<_> = sorted
            .iter()
            .map(|p| target.distance(&KBucketKey::from(*p)))
            .collect();
        assert!(distances.windows(2).all(|w| w[0] < w[1]));
    }
}
