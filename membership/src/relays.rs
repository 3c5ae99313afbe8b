//! Which members relay lease renewals, and which of them a member asks.
//!
//! Every member renewing with the leader directly gave the leader a
//! connection to every member: 999 at N = 1,000 in `p3sim`. Above
//! `per_relay` members, the `⌈N / per_relay⌉` longest-lived members relay:
//! each collects the heartbeats its members send and forwards them to the
//! leader in one batch (`service/relay.rs`), so the leader talks to the
//! relays and each relay to about `per_relay` members. The map names the
//! relays, so every node holding the same epoch computes the same ones; a
//! member ranks them by rendezvous hashing, so a relay more or less moves
//! only the members it takes or had. `docs/relayed-leases.md` has the design
//! and why leases stay safe. Pure, with deterministic tests.

use p3_dht::PeerId;

use crate::{map::Map, voters::MAX_VOTERS};

/// The members that relay renewals in `map`: none up to `per_relay`
/// members (or when `per_relay` is 0), else `⌈N / per_relay⌉` of the
/// longest-lived (lowest join epoch, then peer id), which change least as
/// nodes come and go — after the [`MAX_VOTERS`] longest-lived of all,
/// which are the voters while they live ([`crate::voters::plan`]): the
/// leader relaying held its members' connections on top of every relay's
/// (66 at N = 1,000 in `p3sim`, where 29 is the leader's own share).
pub fn relays(map: &Map, per_relay: usize) -> Vec<PeerId> {
    let n = map.len();
    if per_relay == 0 || n <= per_relay {
        return Vec::new();
    }
    let count = n.div_ceil(per_relay);
    let mut members: Vec<(u64, PeerId)> = map.members().map(|(p, m)| (m.joined, *p)).collect();
    members.sort_unstable();
    members
        .into_iter()
        .skip(MAX_VOTERS.min(n - count))
        .take(count)
        .map(|(_, p)| p)
        .collect()
}

/// The relays `me` asks, in order: empty when `me` renews with the leader
/// itself (no relays, or `me` is one of them).
pub fn choose(map: &Map, me: &PeerId, per_relay: usize) -> Vec<PeerId> {
    let relays = relays(map, per_relay);
    if relays.contains(me) {
        return Vec::new();
    }
    rank(me, relays)
}

/// `relays` ranked for `me`, highest rendezvous weight first.
fn rank(me: &PeerId, mut relays: Vec<PeerId>) -> Vec<PeerId> {
    let me = me.to_bytes();
    relays.sort_by_cached_key(|relay| {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&me);
        hasher.update(&relay.to_bytes());
        std::cmp::Reverse(*hasher.finalize().as_bytes())
    });
    relays
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::Change;

    /// A map of `n` members joined one after another.
    fn map_of(n: usize) -> (Map, Vec<PeerId>) {
        let mut map = Map::default();
        let peers: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        for peer in &peers {
            let join = Change::Join {
                peer: peer.to_string(),
                addrs: Vec::new(),
                incarnation: 1,
            };
            assert!(map.apply(&join));
        }
        (map, peers)
    }

    #[test]
    fn small_maps_have_no_relays_and_large_ones_the_longest_lived() {
        let (map, peers) = map_of(40);
        assert!(relays(&map, 40).is_empty());
        assert!(relays(&map, 0).is_empty(), "0 turns relaying off");
        assert!(choose(&map, &peers[39], 40).is_empty());
        let (map, peers) = map_of(101);
        let chosen = relays(&map, 40);
        assert_eq!(
            chosen,
            peers[5..8].to_vec(),
            "⌈101 / 40⌉ = 3, oldest first after the five voters"
        );
        // A relay renews with the leader; every other member, the voters
        // too, through relays.
        assert!(choose(&map, &peers[5], 40).is_empty());
        assert_eq!(choose(&map, &peers[0], 40).len(), 3);
        // Few members a relay: fewer voters skipped, never fewer relays.
        let (small, few) = map_of(6);
        assert_eq!(relays(&small, 2), few[3..].to_vec());
        let mut ranked = choose(&map, &peers[50], 40);
        assert_eq!(ranked.len(), 3);
        ranked.sort_unstable_by_key(|p| chosen.iter().position(|c| c == p));
        assert_eq!(ranked, chosen);
    }

    #[test]
    fn every_node_ranks_a_members_relays_alike_and_members_spread_over_them() {
        let (map, peers) = map_of(1_000);
        let chosen = relays(&map, 40);
        assert_eq!(chosen.len(), 25);
        let mut load = vec![0usize; chosen.len()];
        for member in peers.iter().filter(|p| !chosen.contains(p)) {
            let first = choose(&map, member, 40);
            assert_eq!(
                first,
                choose(&map.clone(), member, 40),
                "same map, same order"
            );
            let at = chosen.iter().position(|c| *c == first[0]).unwrap();
            load[at] += 1;
        }
        // 975 members over 25 relays: 39 on average. Rendezvous hashing
        // is uniform; six standard deviations (~6 each) above the mean
        // would be a broken hash, not bad luck.
        assert!(load.iter().all(|l| (5..=75).contains(l)), "{load:?}");
    }

    #[test]
    fn a_relay_more_moves_only_the_members_it_takes() {
        let (mut map, peers) = map_of(120);
        let before: Vec<Vec<PeerId>> = peers[8..].iter().map(|p| choose(&map, p, 40)).collect();
        // A 121st member makes ⌈121 / 40⌉ = 4 relays: peers[8] relays too.
        let join = Change::Join {
            peer: PeerId::random().to_string(),
            addrs: Vec::new(),
            incarnation: 1,
        };
        assert!(map.apply(&join));
        let new_relay = peers[8];
        let mut moved = 0;
        for (member, old) in peers[9..].iter().zip(&before[1..]) {
            let new = choose(&map, member, 40);
            assert_eq!(new.len(), 4);
            if new[0] != old[0] {
                assert_eq!(new[0], new_relay, "a member moves only to the new relay");
                moved += 1;
            }
            let kept: Vec<PeerId> = new.into_iter().filter(|p| *p != new_relay).collect();
            assert_eq!(&kept, old, "the others keep their order");
        }
        assert!(moved > 0, "about a quarter move to the new relay");
    }
}
