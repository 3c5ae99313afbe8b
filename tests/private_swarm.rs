//! Private swarms: nodes that share a key (`p3ctl swarm-key new`, named by
//! `swarm_key_file` in config.toml) form a network that a node with another key,
//! or with none, cannot join; the outsider says why, the swarm keeps serving.
//! Real `p3ctl` processes on 127.0.0.1.

mod common;

use std::{fs, path::Path, process::Command};

use common::{objects, p3ctl_bin, wait_for, NodeProc, DEADLINE};

/// A new key file's text from `p3ctl swarm-key new`.
fn new_key() -> String {
    let out = Command::new(p3ctl_bin())
        .args(["swarm-key", "new"])
        .output()
        .expect("cannot run p3ctl");
    assert!(out.status.success(), "swarm-key new failed: {out:?}");
    String::from_utf8(out.stdout).expect("the key file is not UTF-8")
}

/// Makes `dir` a data directory whose node uses `key` (none: public).
fn data_dir_with(dir: &Path, key: Option<&str>) {
    fs::create_dir_all(dir).unwrap();
    if let Some(key) = key {
        fs::write(dir.join("swarm.key"), key).unwrap();
        // As a user should: other users cannot read it (the node warns if they can).
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.join("swarm.key"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(dir.join("config.toml"), "swarm_key_file = \"swarm.key\"\n").unwrap();
    }
}

fn start(dir: &Path, key: Option<&str>, seeds: &[&str]) -> NodeProc {
    data_dir_with(dir, key);
    NodeProc::start(dir, seeds)
}

#[test]
fn outsiders_cannot_join_a_private_swarm_and_say_why() {
    let root = tempfile::tempdir().unwrap();
    let key = new_key();
    assert!(
        key.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"),
        "{key}"
    );
    let other_key = new_key();
    assert_ne!(key, other_key);

    let a = start(&root.path().join("a"), Some(&key), &[]);
    let b = start(&root.path().join("b"), Some(&key), &[&a.addr]);
    wait_for("the two keyed nodes to connect", DEADLINE, || {
        a.connected().contains(&b.peer_id).then_some(())
    });
    let status = a.json(&["node", "status"]).unwrap();
    let fingerprint = status["swarm_key"]
        .as_str()
        .expect("no swarm_key in status");
    assert_eq!(
        b.json(&["node", "status"]).unwrap()["swarm_key"].as_str(),
        Some(fingerprint)
    );
    assert!(
        !key.contains(fingerprint),
        "the status must not show the key"
    );

    let outsiders = [
        (
            "another key",
            start(&root.path().join("other"), Some(&other_key), &[&a.addr]),
        ),
        (
            "no key",
            start(&root.path().join("public"), None, &[&a.addr]),
        ),
    ];
    for (what, outsider) in &outsiders {
        // The outsider's one line says what failed and what to check.
        let line = wait_for(
            &format!("the node with {what} to report its failed handshake"),
            DEADLINE,
            || {
                outsider
                    .log()
                    .lines()
                    .find(|l| l.contains("cannot connect: the handshake failed"))
                    .map(str::to_owned)
            },
        );
        let hint = match *what {
            "no key" => "swarm_key_file",
            _ => "not in this node's private swarm",
        };
        assert!(line.contains(hint), "{what}: {line}");
        assert!(
            line.contains(&a.addr.split("/p2p/").next().unwrap()),
            "{what}: {line}"
        );
        assert!(
            outsider.connected().is_empty(),
            "{what}: the outsider connected"
        );
        // It knows the seed it was given, and learned of nobody else.
        assert!(
            !outsider.routing_table().contains(&b.peer_id),
            "{what} learned of the swarm's other node"
        );
    }

    // The swarm serves as before and never let the outsiders in.
    let file = root.path().join("value");
    fs::write(&file, b"members only").unwrap();
    objects::put(&a.dir, "global/private", &file, &[]);
    assert_eq!(objects::get(&b.dir, "global/private"), b"members only");
    for node in [&a, &b] {
        let known = node.routing_table();
        for (what, outsider) in &outsiders {
            assert!(
                !known.contains(&outsider.peer_id),
                "{what} got into the routing table"
            );
            assert!(
                !node.connected().contains(&outsider.peer_id),
                "{what} is connected"
            );
        }
    }
}

#[test]
fn a_bad_swarm_key_file_stops_the_node_with_one_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("bad");
    data_dir_with(&dir, Some("/key/swarm/psk/1.0.0/\n/base16/\nnot-hex\n"));
    // Killed on drop, should it start after all.
    let mut node = common::KillOnDrop(common::p3ctl_spawn(
        &dir,
        &["node", "start", "--listen", "/ip4/127.0.0.1/tcp/0"],
    ));
    wait_for("node start to give up", DEADLINE, || {
        node.0.try_wait().unwrap()
    });
    let (ok, _, stderr) = node.finish();
    assert!(!ok, "the node started with a bad key file");
    let line = stderr
        .lines()
        .find(|l| l.contains("swarm_key_file"))
        .unwrap_or_else(|| panic!("no error naming swarm_key_file: {stderr}"));
    assert!(
        line.contains("not a swarm key") && line.contains("64 hex digits"),
        "{line}"
    );
}
