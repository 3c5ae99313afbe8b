//! Deterministic tests of a member's heartbeat decisions: the sequences
//! that matter, answer by answer.

use super::*;

const LEASE: Duration = Duration::from_secs(3);

fn peers(n: usize) -> Vec<PeerId> {
    (0..n).map(|_| PeerId::random()).collect()
}

/// Asks (Raft knowing of `raft_leader`, these `peers` connected), gets
/// `answer` at once; returns whom it asked and what to do.
fn exchange(
    beats: &mut Beats,
    raft_leader: Option<PeerId>,
    peers: &[PeerId],
    answer: Answer,
) -> (Option<PeerId>, Next) {
    let now = Instant::now();
    let asked = beats.target(raft_leader, peers);
    (asked, beats.answered(answer, 4, now, now, LEASE))
}

#[test]
fn a_member_renews_with_the_leader_raft_knows() {
    let mut beats = Beats::default();
    let [leader, other] = peers(2)[..] else {
        unreachable!()
    };
    assert_eq!(beats.ask(true), Ask::Heartbeat);
    let (asked, next) = exchange(&mut beats, Some(leader), &[other], Answer::Renewed(4));
    assert_eq!(asked, Some(leader));
    assert_eq!(
        next,
        Next {
            renew: Some(4),
            pace: Pace::Beat
        }
    );
    assert_eq!(beats.ask(true), Ask::Heartbeat);
}

/// Without a leader, peers are asked in turn from each node's own
/// offset: members listing the same peers do not all ask the same one.
#[test]
fn without_a_leader_peers_are_asked_in_turn_from_the_nodes_offset() {
    let ps = peers(5);
    let firsts: Vec<Option<PeerId>> = (0..5)
        .map(|offset| Beats::starting_at(offset).target(None, &ps))
        .collect();
    let mut distinct = firsts.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        5,
        "five offsets, five first peers: {firsts:?}"
    );
    let mut beats = Beats::starting_at(3);
    let turns: Vec<Option<PeerId>> = (0..5).map(|_| beats.target(None, &ps)).collect();
    let mut all = turns.clone();
    all.sort();
    let mut expected: Vec<Option<PeerId>> = ps.iter().copied().map(Some).collect();
    expected.sort();
    assert_eq!(all, expected, "each once");
    assert_eq!(turns[0], firsts[3], "the same offset, the same first peer");
}

/// The nemesis failure: a node removed while cut off knows no leader
/// (it is a candidate in a group that left it), asks peers in turn, and
/// must reach the leader with a join however the redirects fall.
#[test]
fn a_removed_member_joins_again_through_redirects() {
    let ps = peers(4);
    let (leader, followers, candidate) = (ps[0], &ps[1..3], ps[3]);
    let mut beats = Beats::default();
    // A follower names the leader; the leader says "not a member".
    exchange(&mut beats, None, followers, Answer::NotLeader(Some(leader)));
    assert_eq!(beats.ask(true), Ask::Heartbeat);
    let (asked, _) = exchange(&mut beats, None, &ps, Answer::NotMember);
    assert_eq!(asked, Some(leader));
    // The map still lists this node, yet it joins from now on...
    assert_eq!(beats.ask(true), Ask::Join);
    // ...through a change of leader and a peer that knows none...
    let (asked, _) = exchange(&mut beats, None, &ps, Answer::NotLeader(None));
    assert_eq!(asked, Some(leader));
    assert_eq!(beats.ask(true), Ask::Join);
    exchange(&mut beats, None, &[candidate], Answer::NotLeader(None));
    assert_eq!(beats.ask(true), Ask::Join);
    exchange(&mut beats, None, followers, Answer::NotLeader(Some(leader)));
    assert_eq!(beats.ask(true), Ask::Join);
    // ...until the join is acknowledged.
    let (asked, next) = exchange(&mut beats, None, &ps, Answer::Joined(7));
    assert_eq!(asked, Some(leader));
    assert_eq!(
        next,
        Next {
            renew: Some(7),
            pace: Pace::Soon
        }
    );
    assert_eq!(beats.ask(true), Ask::Heartbeat);
}

/// A node Raft still tells of a leader that was deposed meanwhile
/// follows the leader that one names, not Raft's stale word.
#[test]
fn a_named_leader_outranks_what_raft_knew_when_it_was_named() {
    let [stale, leader, newer] = peers(3)[..] else {
        unreachable!()
    };
    let mut beats = Beats::default();
    let (asked, _) = exchange(
        &mut beats,
        Some(stale),
        &[],
        Answer::NotLeader(Some(leader)),
    );
    assert_eq!(asked, Some(stale));
    assert_eq!(beats.target(Some(stale), &[]), Some(leader));
    // Once Raft learns of a leader (again), Raft is newer.
    assert_eq!(beats.target(Some(newer), &[]), Some(newer));
    assert_eq!(beats.target(Some(stale), &[]), Some(stale));
}

/// A join goes from a seed to the leader it names without waiting a
/// tick; peers that name each other are asked at a tick's pace after
/// two quick redirects.
#[test]
fn a_redirect_is_followed_at_once_but_not_in_a_loop() {
    let [seed, leader, other] = peers(3)[..] else {
        unreachable!()
    };
    let mut beats = Beats::default();
    let (_, next) = exchange(&mut beats, None, &[seed], Answer::NotLeader(Some(leader)));
    assert_eq!(next.pace, Pace::Now);
    let (asked, next) = exchange(&mut beats, None, &[seed], Answer::Joined(5));
    assert_eq!((asked, next.pace), (Some(leader), Pace::Soon));
    // A redirect that names no one gives nobody to ask at once.
    let mut beats = Beats::default();
    let (_, next) = exchange(&mut beats, None, &[seed], Answer::NotLeader(None));
    assert_eq!(next.pace, Pace::Soon);
    // Two peers that each name the other.
    let mut paces = Vec::new();
    let mut named = leader;
    for _ in 0..4 {
        named = if named == leader { other } else { leader };
        let (_, next) = exchange(&mut beats, None, &[seed], Answer::NotLeader(Some(named)));
        paces.push(next.pace);
    }
    assert_eq!(paces, [Pace::Now, Pace::Now, Pace::Soon, Pace::Soon]);
    // Any other answer starts the count again.
    exchange(&mut beats, None, &[seed], Answer::Failed);
    let (_, next) = exchange(&mut beats, None, &[seed], Answer::NotLeader(Some(leader)));
    assert_eq!(next.pace, Pace::Now);
}

#[test]
fn a_named_leader_that_fails_or_refuses_is_forgotten() {
    let ps = peers(3);
    for answer in [Answer::Failed, Answer::Refused] {
        let mut beats = Beats::default();
        exchange(&mut beats, None, &ps[1..2], Answer::NotLeader(Some(ps[0])));
        let (asked, _) = exchange(&mut beats, None, &[], answer);
        assert_eq!(asked, Some(ps[0]));
        assert_eq!(beats.target(None, &ps[2..]), Some(ps[2]), "{answer:?}");
    }
    // A peer naming itself as the leader it is not is not believed.
    let mut beats = Beats::default();
    exchange(&mut beats, None, &ps[1..2], Answer::NotLeader(Some(ps[1])));
    assert_eq!(beats.target(None, &ps[2..]), Some(ps[2]));
}

/// A node that does not vote learns of no leader from Raft: it keeps
/// asking the one that renewed its lease, and looks around once that
/// one fails or no longer leads.
#[test]
fn a_node_outside_the_group_follows_the_leader_that_renewed_it() {
    let [first, leader, other] = peers(3)[..] else {
        unreachable!()
    };
    let mut beats = Beats::default();
    exchange(&mut beats, None, &[first], Answer::NotLeader(Some(leader)));
    exchange(&mut beats, None, &[], Answer::Joined(3));
    assert_eq!(beats.followed(), Some(leader));
    for epoch in 4..8 {
        let (asked, _) = exchange(&mut beats, None, &[other], Answer::Renewed(epoch));
        assert_eq!(asked, Some(leader), "no peer asked while the leader renews");
    }
    // Deposed: it names its successor, who renews from then on.
    let (asked, _) = exchange(&mut beats, None, &[], Answer::NotLeader(Some(other)));
    assert_eq!((asked, beats.followed()), (Some(leader), None));
    let (asked, _) = exchange(&mut beats, None, &[], Answer::Renewed(9));
    assert_eq!((asked, beats.followed()), (Some(other), Some(other)));
    // Gone: asked once more, then peers in turn.
    let (asked, _) = exchange(&mut beats, None, &[first], Answer::Failed);
    assert_eq!((asked, beats.followed()), (Some(other), None));
    assert_eq!(beats.target(None, &[first]), Some(first));
}

#[test]
fn a_member_whose_map_lags_for_a_lease_joins_again() {
    let leader = PeerId::random();
    let start = Instant::now();
    let later = start + LEASE + Duration::from_millis(1);
    let mut beats = Beats::default();
    let renewed = |beats: &mut Beats, epoch, have, at| {
        beats.target(Some(leader), &[]);
        beats.answered(Answer::Renewed(epoch), have, at, at, LEASE)
    };
    renewed(&mut beats, 9, 5, start);
    assert_eq!(
        beats.ask(true),
        Ask::Heartbeat,
        "a map may lag for a moment"
    );
    renewed(&mut beats, 9, 5, later);
    assert_eq!(beats.ask(true), Ask::Join);
    // A map that caught up in between resets the clock.
    let mut beats = Beats::default();
    renewed(&mut beats, 9, 5, start);
    renewed(&mut beats, 9, 9, start);
    renewed(&mut beats, 10, 9, later);
    assert_eq!(beats.ask(true), Ask::Heartbeat);
    // A map that moves, however far behind, is receiving the entries.
    let mut beats = Beats::default();
    renewed(&mut beats, 9, 5, start);
    renewed(&mut beats, 12, 7, start + LEASE / 2);
    renewed(&mut beats, 15, 8, later);
    assert_eq!(beats.ask(true), Ask::Heartbeat);
    renewed(&mut beats, 16, 8, later + LEASE / 2);
    assert_eq!(beats.ask(true), Ask::Heartbeat, "still for half a lease");
    renewed(&mut beats, 16, 8, later + LEASE + Duration::from_millis(1));
    assert_eq!(beats.ask(true), Ask::Join, "still for a lease");
}

#[test]
fn a_joined_node_beats_while_its_map_catches_up_and_joins_if_not_a_member() {
    let leader = PeerId::random();
    let mut beats = Beats::default();
    assert_eq!(beats.ask(false), Ask::Join);
    exchange(&mut beats, Some(leader), &[], Answer::Joined(5));
    // The entry that added this node has not reached its map yet.
    assert_eq!(beats.ask(false), Ask::Heartbeat);
    exchange(&mut beats, Some(leader), &[], Answer::Renewed(5));
    assert_eq!(beats.ask(false), Ask::Heartbeat);
    // Removed meanwhile: join again, map or not.
    exchange(&mut beats, Some(leader), &[], Answer::NotMember);
    assert_eq!(beats.ask(false), Ask::Join);
    assert_eq!(beats.ask(true), Ask::Join);
}

/// Relayed renewals: a renewal through a relay renews the lease but
/// does not make the relay the leader followed; a relay that fails
/// sends the next heartbeat to the next relay, and two in a row to the
/// leader for a while, after which relays are asked again.
#[test]
fn a_member_renews_through_its_relays_and_the_leader_when_they_fail() {
    let [leader, first, second] = peers(3)[..] else {
        unreachable!()
    };
    let relays = [first, second];
    let start = Instant::now();
    let mut beats = Beats::default();
    let relayed = |beats: &mut Beats, answer, at| {
        let asked = beats.relay(&relays, at);
        (asked, beats.answered(answer, 4, at, at, LEASE))
    };
    let (asked, next) = relayed(&mut beats, Answer::Renewed(4), start);
    assert_eq!(asked, Some(first));
    assert_eq!(
        next,
        Next {
            renew: Some(4),
            pace: Pace::Beat
        }
    );
    assert_eq!(beats.followed(), None, "a relay is not the leader");
    assert_eq!(beats.relayed_by(), Some(first));
    // The first relay fails: the next beat goes to the second, which
    // then stays the one asked.
    let (_, next) = relayed(&mut beats, Answer::Failed, start);
    assert_eq!(
        next,
        Next {
            renew: None,
            pace: Pace::Soon
        }
    );
    let (asked, _) = relayed(&mut beats, Answer::Renewed(4), start);
    assert_eq!(asked, Some(second));
    let (asked, _) = relayed(&mut beats, Answer::Renewed(4), start);
    assert_eq!(asked, Some(second));
    // Two relays fail in a row: the leader, directly, for three leases.
    relayed(&mut beats, Answer::Refused, start);
    relayed(&mut beats, Answer::NotLeader(None), start);
    assert_eq!(beats.relay(&relays, start), None);
    let (asked, next) = exchange(&mut beats, Some(leader), &[], Answer::Renewed(5));
    assert_eq!((asked, next.renew), (Some(leader), Some(5)));
    assert_eq!(beats.relayed_by(), None);
    let later = start + LEASE * DIRECT_LEASES;
    assert_eq!(beats.relay(&relays, later - Duration::from_millis(1)), None);
    assert!(beats.relay(&relays, later).is_some(), "relays again");
    // No relays (a small map, or this node relays): always direct.
    assert_eq!(Beats::default().relay(&[], start), None);
}

#[test]
fn a_member_its_relay_reports_unknown_joins_again() {
    let relay = PeerId::random();
    let mut beats = Beats::default();
    let now = Instant::now();
    beats.relay(&[relay], now);
    let next = beats.answered(Answer::NotMember, 4, now, now, LEASE);
    assert_eq!(next.renew, None);
    assert_eq!(beats.ask(true), Ask::Join);
}

#[test]
fn a_node_missing_from_its_map_joins_and_no_peer_means_no_target() {
    let mut beats = Beats::default();
    assert_eq!(beats.ask(false), Ask::Join);
    assert_eq!(beats.target(None, &[]), None);
}
