//! On-demand connections (`[network] connections = "on-demand"`), with real
//! `p3ctl` processes over 127.0.0.1: a node keeps a connection only while it
//! talks to the peer; requests dial again, and listings still reach every
//! member.

mod common;

use std::{fs, path::Path};

use common::{p3ctl_json, p3ctl_ok, wait_for, NodeProc, DEADLINE};

const ON_DEMAND: &str =
    "[network]\nconnections = \"on-demand\"\nidle_connection_timeout_secs = 1\n";

fn start(dir: &Path, seeds: &[&str]) -> NodeProc {
    fs::create_dir_all(dir).expect("cannot create data dir");
    fs::write(dir.join("config.toml"), ON_DEMAND).expect("cannot write config.toml");
    // Without a worker: its announcements (a write every 3 s) would keep the
    // nodes talking.
    NodeProc::start_with(dir, "/ip4/127.0.0.1/tcp/0", seeds, &["--no-worker"])
}

/// The leader of `node`'s membership group once its map lists `members`.
fn leader_once_members(node: &NodeProc, members: usize) -> String {
    wait_for(
        &format!("{}'s map to list {members} members", node.peer_id),
        DEADLINE,
        || {
            let status = node.json(&["node", "status"])?;
            let membership = &status["membership"];
            let listed = membership["members"].as_array()?.len();
            let lease = membership["lease_ms"].as_u64()?;
            let leader = membership["leader"].as_str()?;
            (listed == members && lease > 0).then(|| leader.to_owned())
        },
    )
}

#[test]
fn idle_peers_part_and_a_request_dials_them_again() {
    let root = tempfile::tempdir().expect("temp dir");
    let first = start(&root.path().join("node0"), &[]);
    let seed = first.addr.clone();
    let nodes = [
        first,
        start(&root.path().join("node1"), &[&seed]),
        start(&root.path().join("node2"), &[&seed]),
    ];
    let leaders: Vec<String> = nodes.iter().map(|n| leader_once_members(n, 3)).collect();
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
    let leader = leaders[0].clone();
    // The two that do not lead: each has only its leader to talk to (Raft
    // and its lease) once the joins' connections went idle.
    let followers: Vec<&NodeProc> = nodes.iter().filter(|n| n.peer_id != leader).collect();
    assert_eq!(followers.len(), 2);
    let (a, b) = (followers[0], followers[1]);
    let only_the_leader = |node: &NodeProc| {
        wait_for(
            &format!("{} to keep only its connection to the leader", node.peer_id),
            DEADLINE,
            || (node.connected() == [leader.clone()]).then_some(()),
        )
    };
    only_the_leader(a);
    only_the_leader(b);

    // With three owners of every key, a write through `a` reaches `b`:
    // the request dials it.
    let file = root.path().join("value");
    fs::write(&file, b"on demand").expect("write value");
    p3ctl_ok(&a.dir, &["put", "global/od", file.to_str().expect("utf-8")]);
    let read = p3ctl_ok(&b.dir, &["get", "global/od"]);
    assert_eq!(read.stdout, b"on demand");
    // A listing asks every member, connected or not.
    let listed = p3ctl_json(&a.dir, &["ls", "global/"]).expect("ls");
    let paths: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|o| o["path"].as_str())
        .collect();
    assert_eq!(paths, ["global/od"], "{listed:#}");
    // And once nothing more is asked, the followers part again.
    only_the_leader(a);
    only_the_leader(b);
}

/// A whole cluster of on-demand nodes stopped and started again: every node
/// listens on a new port, so the membership map each loads from disk names
/// addresses nobody listens on. A node must still find the others (its
/// routing table takes only the entries written in this run, and it keeps
/// bootstrapping through its seed until it has joined) and serve every
/// object through any node.
#[test]
fn a_whole_cluster_restarted_on_new_ports_serves_every_object() {
    const NODES: usize = 4;
    let root = tempfile::tempdir().expect("temp dir");
    let dirs: Vec<_> = (0..NODES)
        .map(|i| root.path().join(format!("node{i}")))
        .collect();
    let start_all = |dirs: &[std::path::PathBuf]| -> Vec<NodeProc> {
        let first = start(&dirs[0], &[]);
        let seed = first.addr.clone();
        let mut nodes = vec![first];
        nodes.extend(dirs[1..].iter().map(|dir| start(dir, &[&seed])));
        nodes
    };
    let formed = |nodes: &[NodeProc]| {
        for node in nodes {
            leader_once_members(node, NODES);
            let others: Vec<&String> = nodes
                .iter()
                .map(|n| &n.peer_id)
                .filter(|p| **p != node.peer_id)
                .collect();
            wait_for(
                &format!("{}'s routing table to hold the others", node.peer_id),
                DEADLINE,
                || {
                    let table = node.routing_table();
                    others.iter().all(|p| table.contains(p)).then_some(())
                },
            );
        }
    };
    let mut nodes = start_all(&dirs);
    formed(&nodes);
    let objects: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            (
                format!("global/restart-{i}"),
                format!("value {i}").into_bytes(),
            )
        })
        .collect();
    for (i, (path, value)) in objects.iter().enumerate() {
        let file = root.path().join(format!("value{i}"));
        fs::write(&file, value).expect("write value");
        p3ctl_ok(
            &nodes[i % NODES].dir,
            &["put", path, file.to_str().expect("utf-8")],
        );
    }
    let before: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    for node in &mut nodes {
        node.stop("KILL");
    }
    drop(nodes);

    let nodes = start_all(&dirs);
    let after: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    // Ports are the kernel's choice: that all four came back is as
    // likely as drawing the same four of ~28,000 again.
    assert_ne!(before, after, "the nodes must listen on new ports");
    formed(&nodes);
    for (i, (path, value)) in objects.iter().enumerate() {
        for reader in [(i + 1) % NODES, (i + 2) % NODES] {
            let read = p3ctl_ok(&nodes[reader].dir, &["get", path]);
            assert_eq!(read.stdout, *value, "{path} through node {reader}");
        }
    }
}
