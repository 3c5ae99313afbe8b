//! Hops of an iterative Kademlia lookup, replayed over the routing tables
//! the nodes actually hold. libp2p reports how many requests a query sent,
//! not how many rounds it waited for, and the bound (log₂ N / 2 + 2)
//! is on rounds: each round asks the [`ALPHA`] closest peers not yet asked,
//! and each answers with the [`K`] closest peers of its own table. Pure, so
//! its counting has deterministic tests; `scenarios::lookup` feeds it the
//! live tables.

use std::collections::{HashMap, HashSet};

use p3_dht::{by_distance, PeerId};

/// Peers asked at once in a round (libp2p Kademlia's default parallelism).
pub const ALPHA: usize = 3;
/// Peers a node answers with (libp2p Kademlia's default replication factor).
pub const K: usize = 20;

/// Rounds of requests a lookup for `key` started at `start` needs until the
/// `r` peers of `tables` closest to the key are all known, or `None` if it
/// runs out of peers to ask first. A peer absent from `tables` (down)
/// answers nothing; a lookup that knows the owners at the start takes 0.
pub fn hops(
    tables: &HashMap<PeerId, Vec<PeerId>>,
    start: PeerId,
    key: &[u8],
    r: usize,
) -> Option<usize> {
    let owners: Vec<PeerId> = by_distance(key, tables.keys().copied())
        .into_iter()
        .take(r)
        .collect();
    let mut known: HashSet<PeerId> = HashSet::from([start]);
    known.extend(tables.get(&start).into_iter().flatten().copied());
    let mut asked: HashSet<PeerId> = HashSet::from([start]);
    for round in 0..=tables.len() {
        if owners.iter().all(|o| known.contains(o)) {
            return Some(round);
        }
        let next: Vec<PeerId> = by_distance(key, known.iter().copied())
            .into_iter()
            .take(K)
            .filter(|p| !asked.contains(p))
            .take(ALPHA)
            .collect();
        if next.is_empty() {
            return None;
        }
        for peer in next {
            asked.insert(peer);
            let answer = by_distance(key, tables.get(&peer).into_iter().flatten().copied());
            known.extend(answer.into_iter().take(K));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    /// Ten peers ordered nearest to "key" first, each knowing the `links`
    /// next closer ones.
    fn chain(links: usize) -> (Vec<PeerId>, HashMap<PeerId, Vec<PeerId>>) {
        let chain = by_distance(b"key", peers(10).into_iter());
        let tables = chain
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, chain[i.saturating_sub(links)..i].to_vec()))
            .collect();
        (chain, tables)
    }

    #[test]
    fn a_node_that_knows_everyone_needs_no_round() {
        let all = peers(30);
        let tables: HashMap<PeerId, Vec<PeerId>> = all.iter().map(|p| (*p, all.clone())).collect();
        assert_eq!(hops(&tables, all[7], b"key", 3), Some(0));
    }

    #[test]
    fn a_chain_toward_the_key_takes_one_round_per_link() {
        // Each peer knows only the next one closer to the key, so every
        // round can ask just one new peer.
        let (chain, tables) = chain(1);
        // From the farthest: it knows the 9th closest; asking the 9th
        // through the 2nd (8 rounds) reveals the closest.
        assert_eq!(hops(&tables, chain[9], b"key", 1), Some(8));
        assert_eq!(hops(&tables, chain[1], b"key", 1), Some(0));
        // The closest of three owners is still learned last.
        assert_eq!(hops(&tables, chain[9], b"key", 3), Some(8));
    }

    #[test]
    fn each_round_asks_alpha_peers_at_once() {
        // Each peer knows the three next closer ones: a round asks three
        // peers and learns the next three.
        let (chain, tables) = chain(3);
        // From the 10th: knows 7th–9th; asking them reveals 4th–6th, asking
        // those the three owners.
        assert_eq!(hops(&tables, chain[9], b"key", 3), Some(2));
    }

    #[test]
    fn owners_no_table_leads_to_are_not_found() {
        let all = peers(12);
        let owner_first = by_distance(b"key", all.iter().copied());
        let hidden = owner_first[0];
        let tables: HashMap<PeerId, Vec<PeerId>> = all
            .iter()
            .map(|p| (*p, all.iter().copied().filter(|q| *q != hidden).collect()))
            .collect();
        let start = owner_first[5];
        assert_eq!(hops(&tables, start, b"key", 1), None);
    }
}
