//! Where keys live on the map: the owners of a key are the `r` members
//! closest to it by XOR distance, the closest first (the primary). A pure
//! function of (map, key), so nodes that hold the same epoch agree on owners.

use p3_dht::{by_distance, PeerId};

use crate::map::Map;

/// The owners of `key` in `map`, nearest first; at most `r` (at least one
/// when the map has a member).
pub fn owners(map: &Map, key: &[u8], r: usize) -> Vec<PeerId> {
    let mut owners = by_distance(key, map.members().map(|(peer, _)| *peer));
    owners.truncate(r.max(1));
    owners
}

/// How many of `n` owners make a majority.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::map_of;

    #[test]
    fn nodes_with_the_same_map_agree_on_owners_whatever_they_are_connected_to() {
        let peers: Vec<PeerId> = (0..7).map(|_| PeerId::random()).collect();
        let map = map_of(&peers);
        let mut reversed = peers.clone();
        reversed.reverse();
        let other = map_of(&reversed);
        for key in [&b"a"[..], b"global/x", b"jobs/1/task/2"] {
            let owners = owners(&map, key, 3);
            assert_eq!(owners.len(), 3);
            assert_eq!(owners, super::owners(&other, key, 3));
        }
    }

    #[test]
    fn a_small_map_gives_every_member_and_a_majority_is_more_than_half() {
        let peers: Vec<PeerId> = (0..2).map(|_| PeerId::random()).collect();
        assert_eq!(owners(&map_of(&peers), b"k", 3).len(), 2);
        assert!(owners(&Map::default(), b"k", 3).is_empty());
        assert_eq!(
            [1, 2, 3, 4, 5].map(majority),
            [1, 2, 2, 3, 3],
            "two of three, three of five"
        );
    }
}
