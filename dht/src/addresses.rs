//! Where peers are and how far: addresses worth dialling, peer ids in
//! addresses, and XOR distance to a key.

use std::collections::HashSet;

use libp2p::{kad::KBucketKey, multiaddr::Protocol, Multiaddr, PeerId};

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
    let mut peers: Vec<PeerId> = peers.collect::<HashSet<_>>().into_iter().collect();
    // A peer's Kademlia key is a SHA-256 of its id: hash each once, not at
    // every comparison (owners are computed over the whole map on every
    // operation, so this is N hashes instead of N log N).
    peers.sort_by_cached_key(|p| target.distance(&KBucketKey::from(*p)));
    peers
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
