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

/// A stretch of epochs in which a key had the same owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// The first epoch of the stretch.
    pub since: u64,
    /// The owners, nearest first.
    pub owners: Vec<PeerId>,
}

/// The intervals of `key` that `map` remembers, the current one first, each
/// with its owners; consecutive member sets that gave the key the same
/// owners make one interval.
pub fn intervals(map: &Map, key: &[u8], r: usize) -> Vec<Interval> {
    let mut out = vec![Interval {
        since: map.since(),
        owners: owners(map, key, r),
    }];
    for past in map.past() {
        let mut owners = by_distance(key, past.members.iter().copied());
        owners.truncate(r.max(1));
        if owners.is_empty() {
            break;
        }
        match out.last_mut() {
            Some(last) if last.owners == owners => last.since = past.since,
            _ => out.push(Interval {
                since: past.since,
                owners,
            }),
        }
    }
    out
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
    fn intervals_follow_the_owner_changes_of_one_key_only() {
        let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        let mut map = map_of(&peers[..5]);
        let key = b"global/x";
        let first = owners(&map, key, 3);
        // Removing a non-owner changes the map, not the key's owners.
        let bystander = *peers[..5].iter().find(|p| !first.contains(p)).unwrap();
        let remove = |peer: PeerId| crate::map::Change::Remove {
            peer: peer.to_string(),
            incarnation: peers.iter().position(|p| *p == peer).unwrap() as u64,
        };
        map.apply(&remove(bystander));
        map.apply(&remove(first[0]));
        let found = intervals(&map, key, 3);
        assert_eq!(found[0].owners, owners(&map, key, 3));
        assert_eq!(found[0].since, map.epoch());
        assert_eq!(
            found[1].owners, first,
            "the interval before the primary left"
        );
        assert!(
            found[1].since <= 5,
            "it began when the fifth member joined or earlier"
        );
        assert!(found
            .windows(2)
            .all(|w| w[0].owners != w[1].owners && w[0].since > w[1].since));
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
