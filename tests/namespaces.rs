//! Namespaces and the errors a user sees when using objects wrongly, each
//! checked through every node of a cluster. Real node processes on 127.0.0.1.

mod common;

use std::{fs, path::Path, time::Instant};

use common::objects::*;
use common::{p3ctl, p3ctl_err, p3ctl_ok, wait_for, Cluster, DEADLINE};
use serde_json::Value;

/// `ns ls` without P³'s own namespaces (`p3.workers` exists as soon as a
/// worker runs; `p3.jobs` once a job is submitted).
fn user_namespaces(dir: &Path) -> Vec<String> {
    let out = p3ctl_ok(dir, &["ns", "ls", "--json"]);
    let namespaces: Vec<String> = serde_json::from_slice(&out.stdout).expect("invalid JSON");
    namespaces
        .into_iter()
        .filter(|n| !n.starts_with("p3."))
        .collect()
}

#[test]
fn namespaces_and_bad_input() {
    let started = Instant::now();
    let cluster = Cluster::start(3);
    cluster.wait_formed();
    let dir = &cluster.nodes[0].dir;
    let other = &cluster.nodes[1].dir;
    let value = cluster.root.path().join("value");
    fs::write(&value, b"some bytes").unwrap();
    let value_s = value.to_str().unwrap();

    // A namespace: created, written, read through another node, listed.
    p3ctl_ok(dir, &["ns", "create", "scratch"]);
    let err = p3ctl_err(dir, &["ns", "create", "scratch"]);
    assert!(err.contains("namespace scratch already exists"), "{err}");
    put(dir, "scratch/a", &value, &[]);
    assert_eq!(get(other, "scratch/a"), b"some bytes");
    assert_eq!(user_namespaces(dir), ["global", "scratch"]);

    // A missing namespace: the error says how to create it, through any node.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let err = p3ctl_err(&node.dir, &["put", "nope/x", value_s]);
        assert!(
            err.contains("namespace nope does not exist; create it with `p3ctl ns create nope`"),
            "put nope/x through node {}: {err}",
            i + 1
        );
    }

    // Removing a namespace removes its objects, for good: a namespace of the same
    // name created later does not bring them back.
    p3ctl_ok(dir, &["ns", "rm", "scratch"]);
    assert_eq!(user_namespaces(dir), ["global"]);
    let err = p3ctl_err(dir, &["get", "scratch/a"]);
    assert!(err.contains("namespace scratch does not exist"), "{err}");
    p3ctl_ok(dir, &["ns", "create", "scratch"]);
    for node in &cluster.nodes {
        let err = p3ctl_err(&node.dir, &["get", "scratch/a"]);
        assert!(err.contains("scratch/a does not exist"), "{err}");
    }
    let out = p3ctl_ok(dir, &["ls", "scratch", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        serde_json::json!([]),
        "the re-created namespace must be empty"
    );
    let err = p3ctl_err(dir, &["ns", "rm", "global"]);
    assert!(err.contains("always exists"), "{err}");

    // Invalid names are refused with what a valid one looks like.
    let err = p3ctl_err(dir, &["put", "Bad/x", value_s]);
    assert!(err.contains("invalid namespace \"Bad\""), "{err}");
    let err = p3ctl_err(dir, &["put", "global/", value_s]);
    assert!(err.contains("invalid object"), "{err}");
    let err = p3ctl_err(dir, &["get", "noslash"]);
    assert!(err.contains("expected NAMESPACE/NAME"), "{err}");
    let longest = format!("global/{}", "n".repeat(1024));
    put(dir, &longest, &value, &[]);
    assert_eq!(get(other, &longest), b"some bytes");
    let too_long = format!("global/{}", "n".repeat(1025));
    let err = p3ctl_err(dir, &["put", &too_long, value_s]);
    assert!(
        err.contains("invalid object name") && err.contains("1-1024 bytes"),
        "{err}"
    );

    // Missing objects, and conditional writes and removals that do not match,
    // through every node (the primary of the object among them: a node handles
    // a write it is primary for itself, the others forward it).
    put(dir, "global/r", &value, &[]);
    let all: Vec<String> = cluster.nodes.iter().map(|n| n.peer_id.clone()).collect();
    let primary_of = |name: &str| expected_owners("global", name, &all, 1)[0].clone();
    let (r_primary, missing_primary) = (primary_of("r"), primary_of("never-written"));
    // Every case through every node is tried before failing, to show the pattern.
    let mut wrong = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let through = |primary: &str| {
            let role = if node.peer_id == primary {
                "primary"
            } else {
                "not primary"
            };
            format!("through node {} ({role})", i + 1)
        };
        let cases: [(&[&str], &str, &str); 4] = [
            (
                &["get", "global/never-written"],
                "global/never-written does not exist",
                &missing_primary,
            ),
            (
                &["rm", "global/never-written"],
                "global/never-written does not exist",
                &missing_primary,
            ),
            (
                &["rm", "global/r", "--if-version", "2"],
                "version conflict on global/r: expected version 2, current version is 1",
                &r_primary,
            ),
            (
                &["put", "global/r", value_s, "--if-version", "0"],
                "version conflict on global/r: expected version 0, current version is 1",
                &r_primary,
            ),
        ];
        for (args, want, primary) in cases {
            let err = p3ctl_err(&node.dir, args);
            if !err.contains(want) {
                wrong.push(format!(
                    "`p3ctl {}` {}: want {want:?}, got: {err}",
                    args.join(" "),
                    through(primary)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "wrong errors:\n{}", wrong.join("\n"));
    assert_eq!(
        stat(other, "global/r")["version"],
        1,
        "refused writes must not change the object"
    );
    assert_eq!(
        get(dir, "global/r"),
        b"some bytes",
        "a refused rm must not remove"
    );
    p3ctl_ok(other, &["rm", "global/r", "--if-version", "1"]);
    let err = p3ctl_err(dir, &["get", "global/r"]);
    assert!(err.contains("global/r does not exist"), "{err}");

    // Listing by prefix.
    for name in ["logs/a", "logs/b", "logsx", "other"] {
        put(dir, &format!("global/{name}"), &value, &[]);
    }
    let out = p3ctl_ok(other, &["ls", "global/logs/", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("invalid JSON");
    let paths: Vec<&str> = listed
        .as_array()
        .expect("ls --json is not a list")
        .iter()
        .filter_map(|s| s["path"].as_str())
        .collect();
    assert_eq!(paths, ["global/logs/a", "global/logs/b"], "{listed}");

    // TTL: a 1 s object disappears everywhere, a 1 h one stays.
    let before = now_ms();
    put(dir, "global/brief", &value, &["--ttl", "1s"]);
    put(dir, "global/lasting", &value, &["--ttl", "1h"]);
    let lasting = stat(other, "global/lasting");
    let expires = lasting["expires_ms"]
        .as_u64()
        .expect("no expires_ms with --ttl");
    assert!(
        (before + 3_600_000..=now_ms() + 3_600_000).contains(&expires),
        "expires_ms should be about now + 1 h: {lasting}"
    );
    for node in &cluster.nodes {
        wait_for("global/brief to expire", DEADLINE, || {
            let out = p3ctl(&node.dir, &["get", "global/brief"]);
            let err = String::from_utf8_lossy(&out.stderr);
            (!out.status.success() && err.contains("global/brief does not exist")).then_some(())
        });
    }
    assert_eq!(get(other, "global/lasting"), b"some bytes");
    let out = p3ctl_ok(other, &["ls", "global", "--json"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listed.contains("global/brief"),
        "expired object listed: {listed}"
    );
    assert!(listed.contains("global/lasting"), "{listed}");
    eprintln!("namespaces_and_bad_input: {:?}", started.elapsed());
}
