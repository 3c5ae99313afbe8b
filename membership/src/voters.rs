//! Which members vote in the Raft group: an odd number, at most five, the
//! longest-lived members that are alive. Pure: the leader applies the plan
//! through openraft's membership changes.

use std::collections::BTreeSet;

use p3_dht::PeerId;

use crate::map::Map;

/// The most voters the group has: enough to lose two, few enough to be quick.
pub const MAX_VOTERS: usize = 5;

/// How many voters a map of `members` members wants: the largest odd number
/// not above `members` or [`MAX_VOTERS`], and at least one.
pub fn wanted(members: usize) -> usize {
    let n = members.clamp(1, MAX_VOTERS);
    if n % 2 == 0 {
        n - 1
    } else {
        n
    }
}

/// The voter set the group should have, if it differs from `voters`.
///
/// Voters that left the map are dropped; missing seats go to alive members
/// that joined earliest; extra seats are taken from the latest joined. The
/// leader `me` always keeps its seat (it is the one making the change).
pub fn plan(
    map: &Map,
    voters: &BTreeSet<PeerId>,
    me: &PeerId,
    alive: impl Fn(&PeerId) -> bool,
) -> Option<BTreeSet<PeerId>> {
    let joined = |p: &PeerId| map.member(p).map_or(u64::MAX, |m| m.joined);
    let mut next: Vec<PeerId> = voters
        .iter()
        .filter(|p| map.member(p).is_some() || *p == me)
        .copied()
        .collect();
    let target = wanted(map.len());
    if next.len() < target {
        let mut candidates: Vec<PeerId> = map
            .members()
            .map(|(p, _)| *p)
            .filter(|p| !next.contains(p) && (p == me || alive(p)))
            .collect();
        candidates.sort_by_key(|p| (joined(p), *p));
        next.extend(candidates.into_iter().take(target - next.len()));
    }
    if next.len() > target {
        next.sort_by_key(|p| (p != me, joined(p), *p));
        next.truncate(target);
    }
    // An even group (no alive member to fill a seat) loses a seat rather than
    // need all but one of an even number to agree.
    if next.len() % 2 == 0 {
        next.sort_by_key(|p| (p != me, joined(p), *p));
        next.pop();
    }
    let next: BTreeSet<PeerId> = next.into_iter().collect();
    (next != *voters).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::map_of;

    #[test]
    fn an_odd_number_up_to_five() {
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 6, 100].map(wanted),
            [1, 1, 1, 3, 3, 5, 5, 5]
        );
    }

    #[test]
    fn seats_go_to_the_earliest_alive_members() {
        let peers: Vec<PeerId> = (0..7).map(|_| PeerId::random()).collect();
        let map = map_of(&peers);
        let me = peers[0];
        let voters: BTreeSet<PeerId> = [me].into();
        let dead = peers[1];
        let next = plan(&map, &voters, &me, |p| *p != dead).unwrap();
        assert_eq!(
            next,
            [peers[0], peers[2], peers[3], peers[4], peers[5]].into()
        );
        assert_eq!(plan(&map, &next, &me, |p| *p != dead), None, "stable");
    }

    #[test]
    fn a_removed_voter_is_replaced_and_an_even_group_shrinks() {
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let me = peers[0];
        let voters: BTreeSet<PeerId> = peers[..3].iter().copied().collect();
        // peers[2] left the map: peers[3] takes its seat.
        let map = map_of(&[peers[0], peers[1], peers[3]]);
        assert_eq!(
            plan(&map, &voters, &me, |_| true),
            Some([peers[0], peers[1], peers[3]].into())
        );
        // Nobody alive to take it: two voters would be worse than one.
        assert_eq!(plan(&map, &voters, &me, |_| false), Some([me].into()));
    }
}
