//! The membership map agreed through Raft, with separate `p3ctl` nodes on
//! 127.0.0.1: every node holds the same map and a lease; a killed member
//! leaves the map only after its lease could have run out and comes back as a
//! new incarnation; a killed leader is replaced; members renewing through a
//! relay keep their leases when it is killed.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{wait_for, Cluster, NodeProc};
use serde_json::Value;
use tempfile::TempDir;

/// Long enough for an election (≤ 2 s), a lease and its drift (3.5 s) and the
/// commit, on a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(30);

/// What node `node` says of the membership (`node status --json`).
fn membership(node: &NodeProc) -> Option<Value> {
    let status = node.json(&["node", "status"])?;
    (!status["membership"].is_null()).then(|| status["membership"].clone())
}

fn strings(value: &Value) -> Vec<String> {
    let mut list: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    list.sort();
    list
}

/// Waits until every node of `nodes` holds the same map with exactly
/// `members`, knows the same leader and holds a lease; returns the epoch and
/// the leader.
fn agreed(nodes: &[&NodeProc], members: &[String], what: &str) -> (u64, String) {
    let mut expected = members.to_vec();
    expected.sort();
    wait_for(what, CONVERGE, || {
        let views: Vec<Value> = nodes.iter().map(|n| membership(n)).collect::<Option<_>>()?;
        let first = &views[0];
        let same = views.iter().all(|v| {
            v["epoch"] == first["epoch"]
                && v["leader"] == first["leader"]
                && strings(&v["members"]) == expected
                && v["lease_ms"].as_u64().is_some_and(|ms| ms > 0)
        });
        let leader = first["leader"].as_str()?.to_owned();
        (same && expected.contains(&leader)).then(|| (first["epoch"].as_u64().unwrap_or(0), leader))
    })
}

/// Every node of `cluster` but node `i`.
fn all_but(cluster: &Cluster, i: usize) -> Vec<&NodeProc> {
    (0..cluster.nodes.len())
        .filter(|&j| j != i)
        .map(|j| &cluster.nodes[j])
        .collect()
}

fn peers(nodes: &[&NodeProc]) -> Vec<String> {
    nodes.iter().map(|n| n.peer_id.clone()).collect()
}

#[test]
fn three_nodes_agree_on_one_map_with_three_voters_and_each_holds_a_lease() {
    let cluster = Cluster::start(3);
    let nodes: Vec<&NodeProc> = cluster.nodes.iter().collect();
    let (epoch, _leader) = agreed(&nodes, &peers(&nodes), "three nodes to agree on the map");
    assert!(
        epoch >= 3,
        "three joins are three epochs at least, got {epoch}"
    );
    wait_for("three voters", CONVERGE, || {
        let voters = strings(&membership(nodes[0])?["voters"]);
        (voters == strings(&Value::from(peers(&nodes)))).then_some(())
    });
}

#[test]
fn a_killed_member_leaves_only_after_its_lease_and_returns_as_a_new_incarnation() {
    let mut cluster = Cluster::start(3);
    let all: Vec<String> = cluster.nodes.iter().map(|n| n.peer_id.clone()).collect();
    let (epoch, leader) = {
        let nodes: Vec<&NodeProc> = cluster.nodes.iter().collect();
        agreed(&nodes, &all, "three nodes to agree on the map")
    };
    let victim = (0..3)
        .find(|&i| cluster.nodes[i].peer_id != leader)
        .expect("two of three are not the leader");
    let dir = cluster.nodes[victim].dir.clone();
    let killed = Instant::now();
    cluster.nodes[victim].stop("KILL");

    let alive = all_but(&cluster, victim);
    let (after, _) = agreed(
        &alive,
        &peers(&alive),
        "the survivors to remove the killed member",
    );
    let took = killed.elapsed();
    assert!(
        after > epoch,
        "the removal is a new epoch ({epoch} → {after})"
    );
    // Its last heartbeat was at most a third of a lease before the kill: the
    // leader may remove it no sooner than lease + drift after that.
    let times = p3::membership::LeaseTimes::default();
    assert!(
        took >= times.removal_after() - times.heartbeat_every(),
        "removed {took:?} after the kill, before its lease could have run out"
    );

    let seed = alive[0].addr.clone();
    let back = NodeProc::start(&dir, &[&seed]);
    let (rejoined, _) = agreed(
        &[alive[0], alive[1], &back],
        &all,
        "the restarted node to rejoin the map",
    );
    assert!(
        rejoined > after,
        "the return is a new epoch ({after} → {rejoined})"
    );
}

/// `n` nodes once they agree on the map; their leader.
fn agreed_cluster(n: usize) -> (Cluster, String) {
    let cluster = Cluster::start(n);
    let nodes: Vec<&NodeProc> = cluster.nodes.iter().collect();
    let (_, leader) = agreed(&nodes, &peers(&nodes), "the nodes to agree on the map");
    (cluster, leader)
}

/// Kills `leader` and waits until every survivor holds a map without it,
/// the same other leader and a lease; returns the killed node's index.
fn kill_the_leader(cluster: &mut Cluster, leader: &str) -> usize {
    let index = cluster
        .index_of(leader)
        .expect("the leader is one of the nodes");
    cluster.nodes[index].stop("KILL");
    let alive = all_but(cluster, index);
    let (_, next) = agreed(
        &alive,
        &peers(&alive),
        "the survivors to elect a leader and remove the old one",
    );
    assert_ne!(next, leader);
    index
}

#[test]
fn when_the_leader_is_killed_the_others_elect_another_and_remove_it() {
    let (mut cluster, leader) = agreed_cluster(3);
    kill_the_leader(&mut cluster, &leader);
}

/// Beyond five nodes, the others are not in the Raft group: they follow the
/// map through their lease renewals, learn who leads from the leader that
/// renews them, and find the next one when it is killed.
#[test]
fn beyond_five_voters_the_others_follow_the_map_and_find_a_new_leader() {
    let (mut cluster, leader) = agreed_cluster(7);
    // A voter lists the voters; a node that follows lists none.
    let five_voters = |nodes: &[&NodeProc]| {
        wait_for("five voters, the others following", CONVERGE, || {
            let lists: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| membership(n).map(|m| strings(&m["voters"])))
                .collect::<Option<_>>()?;
            let voters: Vec<&Vec<String>> = lists.iter().filter(|l| !l.is_empty()).collect();
            let first = *voters.first()?;
            let agreed = voters.iter().all(|l| *l == first);
            (voters.len() == 5 && first.len() == 5 && agreed).then(|| first.clone())
        })
    };
    let nodes: Vec<&NodeProc> = cluster.nodes.iter().collect();
    let voters = five_voters(&nodes);
    assert!(voters.contains(&leader), "{leader} leads without a vote");

    // Every survivor — the two that follow too — holds the same map, the
    // same leader and a lease: they found the new leader.
    let index = kill_the_leader(&mut cluster, &leader);
    let alive = all_but(&cluster, index);
    let voters = five_voters(&alive);
    assert!(!voters.contains(&leader), "the killed leader still votes");
}

/// `n` nodes with `[membership] members_per_relay` set, started one at a
/// time so that join order is age order: the oldest ⌈n / per_relay⌉ relay.
/// Returns them (in join order, under `root`) and their leader.
fn relaying_cluster(root: &Path, n: usize, per_relay: usize) -> (Vec<NodeProc>, String) {
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 0..n {
        let dir = root.join(format!("node{i}"));
        std::fs::create_dir_all(&dir).expect("cannot create data dir");
        let config = format!("[membership]\nmembers_per_relay = {per_relay}\n");
        std::fs::write(dir.join("config.toml"), config).expect("cannot write config.toml");
        let seed = nodes.first().map(|n| n.addr.clone());
        let seeds: Vec<&str> = seed.iter().map(String::as_str).collect();
        nodes.push(NodeProc::start(&dir, &seeds));
        let joined: Vec<&NodeProc> = nodes.iter().collect();
        agreed(
            &joined,
            &peers(&joined),
            "the nodes so far to agree on the map",
        );
    }
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let (_, leader) = agreed(&all, &peers(&all), "the nodes to agree on the map");
    (nodes, leader)
}

/// Nine nodes with `members_per_relay = 3`: three relay (⌈9 / 3⌉, the
/// longest-lived after the five voters), the other six — voters too —
/// renew through them. The relay most of them renew through is killed: its
/// members move to another relay (or the leader) and none of them is ever
/// without a lease meanwhile.
#[test]
fn members_keep_their_leases_through_relays_and_when_a_relay_is_killed() {
    let relay_of = |node: &NodeProc| membership(node)?["relay"].as_str().map(str::to_owned);
    let root = TempDir::new().expect("cannot create temp dir");
    let (mut nodes, leader) = relaying_cluster(root.path(), 9, 3);
    let (relays, members): (Vec<usize>, Vec<usize>) = (0..9).partition(|i| (5..8).contains(i));
    let relay_ids: Vec<String> = relays.iter().map(|&i| nodes[i].peer_id.clone()).collect();
    assert!(!relay_ids.contains(&leader), "a voter leads, not a relay");
    let through = wait_for("the members to renew through relays", CONVERGE, || {
        let through: Vec<String> = members
            .iter()
            .map(|&i| relay_of(&nodes[i]))
            .collect::<Option<_>>()?;
        through
            .iter()
            .all(|r| relay_ids.contains(r))
            .then_some(through)
    });
    for &i in &relays {
        let m = membership(&nodes[i]).expect("status");
        assert!(m["relay"].is_null(), "a relay renews with the leader: {m}");
    }
    let victim = relays
        .iter()
        .copied()
        .max_by_key(|&i| through.iter().filter(|r| **r == nodes[i].peer_id).count())
        .expect("three relays");
    let killed = nodes[victim].peer_id.clone();
    nodes[victim].stop("KILL");
    let alive: Vec<&NodeProc> = (0..nodes.len())
        .filter(|&i| i != victim)
        .map(|i| &nodes[i])
        .collect();
    // Until the group removed it (lease + drift after its last heartbeat),
    // and a lease after that: every member keeps holding a lease, the ones
    // that renewed through the killed relay too, and those move.
    let times = p3::membership::LeaseTimes::default();
    let watch_until = Instant::now() + times.removal_after() + times.lease;
    let mut moved = vec![false; through.len()];
    while Instant::now() < watch_until {
        for ((&i, relay), moved) in members.iter().zip(&through).zip(&mut moved) {
            let node = &nodes[i];
            let m = membership(node).expect("status");
            assert!(
                m["lease_ms"].as_u64().is_some_and(|ms| ms > 0),
                "{} lost its lease after relay {killed} was killed: {m}",
                node.peer_id
            );
            *moved |= *relay != killed || m["relay"].as_str() != Some(killed.as_str());
        }
        // Sampling a window, not waiting for a condition: every sample
        // must show a lease.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        moved.iter().all(|m| *m),
        "a member still renews through the killed relay: {moved:?}"
    );
    agreed(
        &alive,
        &peers(&alive),
        "the survivors to remove the killed relay",
    );
}
