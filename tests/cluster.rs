//! Cluster formation, restarts and crashes, with real `p3ctl` processes talking
//! libp2p over 127.0.0.1.

mod common;

use common::{p3ctl, wait_for, Cluster, NodeProc, DEADLINE};

/// The `count` PeerIds of `peers` nearest to `key` by Kademlia's XOR metric,
/// computed here independently of the nodes.
fn expected_owners(key: &str, peers: &[String], count: usize) -> Vec<String> {
    common::closest_by_xor(key.as_bytes(), peers, count)
}

#[test]
fn five_nodes_form_a_network_and_agree_on_owners() {
    let cluster = Cluster::start(5);
    cluster.wait_formed();

    let all: Vec<String> = cluster.nodes.iter().map(|n| n.peer_id.clone()).collect();
    for key in [
        "alpha",
        "beta",
        "global/readme.txt",
        "job-7f3a/task/17",
        "z",
    ] {
        let expected = expected_owners(key, &all, 3);
        for (i, node) in cluster.nodes.iter().enumerate() {
            let owners = node.json(&["closest", key]).expect("closest failed");
            let owners: Vec<String> =
                serde_json::from_value(owners).expect("closest JSON is not a list");
            assert_eq!(
                owners, expected,
                "node {i} disagrees on the owners of {key:?}"
            );
        }
    }
    // The full ordering, not only the first three, is the same everywhere.
    let expected = expected_owners("alpha", &all, 5);
    for node in &cluster.nodes {
        let owners: Vec<String> =
            serde_json::from_value(node.json(&["closest", "alpha", "--count", "5"]).unwrap())
                .unwrap();
        assert_eq!(owners, expected);
    }
}

#[test]
fn restart_keeps_peer_id_and_rejoins() {
    let mut cluster = Cluster::start(3);
    cluster.wait_formed();
    let dir = cluster.nodes[2].dir.clone();
    let peer_id = cluster.nodes[2].peer_id.clone();

    let status = cluster.nodes[2].stop("TERM");
    assert!(
        status.success(),
        "SIGTERM should shut the node down cleanly, got {status}"
    );
    assert!(
        !dir.join("api.json").exists(),
        "clean shutdown must remove api.json"
    );

    let out = p3ctl(&dir, &["node", "id"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        peer_id,
        "PeerId changed on disk"
    );

    let seed = cluster.nodes[0].addr.clone();
    cluster.nodes[2] = NodeProc::start(&dir, &[&seed]);
    assert_eq!(
        cluster.nodes[2].peer_id, peer_id,
        "PeerId changed after restart"
    );
    cluster.wait_formed();
    for i in 0..2 {
        wait_for(
            &format!("node {i} to reconnect to the restarted node"),
            DEADLINE,
            || {
                cluster.nodes[i]
                    .connected()
                    .contains(&peer_id)
                    .then_some(())
            },
        );
    }
}

#[test]
fn killed_node_is_dropped_from_connected_peers() {
    let mut cluster = Cluster::start(3);
    cluster.wait_formed();
    let victim = cluster.nodes[2].peer_id.clone();
    for i in 0..2 {
        wait_for(
            &format!("node {i} to be connected to node 2"),
            DEADLINE,
            || cluster.nodes[i].connected().contains(&victim).then_some(()),
        );
    }

    cluster.nodes[2].stop("KILL");

    for i in 0..2 {
        wait_for(
            &format!("node {i} to drop the killed node"),
            DEADLINE,
            || (!cluster.nodes[i].connected().contains(&victim)).then_some(()),
        );
        let status = cluster.nodes[i]
            .json(&["node", "status"])
            .expect("status failed");
        assert_eq!(
            status["connected_peers"], 1,
            "node {i} should be connected to the one survivor"
        );
    }
    // The stale api.json of the killed node must not fool clients.
    let out = p3ctl(&cluster.nodes[2].dir, &["node", "status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node is running"));
}

/// A paused node (SIGSTOP) sends no RST: only its silence to pings gives it
/// away. With `failure_timeout_ms = 1000` its peer must drop it within a few
/// seconds, not the 20 s a default libp2p ping takes, and take it back once
/// it resumes.
#[test]
fn a_paused_peer_is_dropped_within_the_failure_timeout_and_taken_back() {
    let root = tempfile::tempdir().expect("cannot create temp dir");
    let dirs: Vec<_> = (0..2)
        .map(|i| root.path().join(format!("node{i}")))
        .collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir).expect("cannot create data dir");
        std::fs::write(
            dir.join("config.toml"),
            "[network]\nfailure_timeout_ms = 1000\nreconnect_interval_secs = 1\n",
        )
        .expect("cannot write config.toml");
    }
    let a = NodeProc::start(&dirs[0], &[]);
    let b = NodeProc::start(&dirs[1], &[&a.addr]);
    wait_for("the nodes to connect", DEADLINE, || {
        a.connected().contains(&b.peer_id).then_some(())
    });

    common::mount::signal(b.pid(), "STOP");
    let paused = std::time::Instant::now();
    wait_for("the paused node to be dropped", DEADLINE, || {
        (!a.connected().contains(&b.peer_id)).then_some(())
    });
    let took = paused.elapsed();
    common::mount::signal(b.pid(), "CONT");
    // One second of silence, checked every third of it; the rest is slack
    // for a loaded machine.
    assert!(
        took < std::time::Duration::from_secs(8),
        "a peer paused for {took:?} was still connected"
    );
    wait_for("the resumed node to be connected again", DEADLINE, || {
        a.connected().contains(&b.peer_id).then_some(())
    });
}

#[test]
fn nodes_whose_seed_is_down_join_once_the_seed_comes_up() {
    let root = tempfile::tempdir().unwrap();
    // A port that was free a moment ago; the seed is started on it later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let seed_addr = format!("/ip4/127.0.0.1/tcp/{port}");
    // The seed's identity exists before it runs, so a joiner can name its PeerId:
    // that puts a not-yet-reachable entry into the joiner's routing table.
    let seed_dir = root.path().join("seed");
    let out = p3ctl(&seed_dir, &["node", "id"]);
    let seed_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let seed_with_id = format!("{seed_addr}/p2p/{seed_id}");

    let mut joiners = [
        NodeProc::start(&root.path().join("by-address"), &[&seed_addr]),
        NodeProc::start(&root.path().join("by-peer-id"), &[&seed_with_id]),
    ];
    for joiner in &joiners {
        assert!(joiner.connected().is_empty(), "nothing to join yet");
    }

    let seed = NodeProc::start_on(&seed_dir, &seed_addr, &[]);
    assert_eq!(seed.peer_id, seed_id);
    for joiner in &joiners {
        wait_for("a joiner to re-dial its seed", DEADLINE, || {
            joiner.connected().contains(&seed.peer_id).then_some(())
        });
        wait_for("the seed to add the joiner", DEADLINE, || {
            seed.routing_table().contains(&joiner.peer_id).then_some(())
        });
    }

    let status = joiners[0].stop("TERM");
    assert!(
        status.success(),
        "SIGTERM should shut the node down cleanly, got {status}"
    );
}

#[test]
fn json_logs_and_http_turned_off() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let node = NodeProc::start_with(
        &dir,
        "/ip4/127.0.0.1/tcp/0",
        &[],
        &["--log-format", "json", "--http-listen", "off"],
    );
    // Every line the node logged is one JSON object with a level and fields.
    let log = wait_for("the node to log that its API is ready", DEADLINE, || {
        let log = node.log();
        log.contains("local API ready").then_some(log)
    });
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(entry["level"].is_string(), "no level: {line}");
        assert!(entry["fields"].is_object(), "no fields: {line}");
    }
    assert!(
        log.contains(r#""message":"local API ready""#),
        "the API's readiness is logged as a JSON message: {log}"
    );
    let status = node.json(&["node", "status"]).expect("node status");
    assert_eq!(status["http"], serde_json::Value::Null, "{status}");
    let out = p3ctl(&dir, &["node", "dashboard"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("serves no HTTP"), "{err}");
}
