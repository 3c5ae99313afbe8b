//! Acknowledged writes across crashes: a primary killed after a put, every
//! node restarted, a node killed under sixteen concurrent writers. Real node
//! processes on 127.0.0.1, each in a temp dir.

mod common;

use std::{fs, time::Instant};

use common::objects::*;
use common::{p3ctl, pseudo_random, wait_for, Cluster, DEADLINE};
use serde_json::Value;

#[test]
fn kill_primary_after_put_keeps_data_and_repairs() {
    let started = Instant::now();
    let mut cluster = Cluster::start(5);
    cluster.wait_formed();
    let all: Vec<String> = cluster.nodes.iter().map(|n| n.peer_id.clone()).collect();

    let value = pseudo_random((3 * MIB + 17) as usize, 3);
    let file = cluster.root.path().join("value");
    fs::write(&file, &value).unwrap();
    let written = put(&cluster.nodes[0].dir, "global/survivor", &file, &[]);
    let version = written["version"].as_u64().expect("put without version");
    assert!(written["acked_by"].as_u64() >= Some(2), "{written}");

    // The third owner receives it right after the acknowledgement.
    let before = wait_for("the third owner to hold global/survivor", DEADLINE, || {
        let stat = stat(&cluster.nodes[0].dir, "global/survivor");
        (stat["replicas"].as_array().map_or(0, Vec::len) == 3).then_some(stat)
    });
    let replicas = before["replicas"]
        .as_array()
        .expect("stat without replicas");
    let primaries: Vec<&Value> = replicas.iter().filter(|r| r["primary"] == true).collect();
    assert_eq!(primaries.len(), 1, "exactly one primary: {before}");
    assert_eq!(replicas.len(), 3, "{before}");
    let primary = primaries[0]["peer"].as_str().unwrap().to_owned();
    let victim = cluster
        .index_of(&primary)
        .unwrap_or_else(|| panic!("primary {primary} is none of the nodes"));
    eprintln!(
        "primary of global/survivor is node {}; killing it",
        victim + 1
    );
    cluster.nodes[victim].stop("KILL");

    // Background repair alone brings the object back to R copies on the new
    // owner set: no read has happened since the kill, so no read repair either.
    let alive: Vec<String> = all.iter().filter(|p| **p != primary).cloned().collect();
    let repair_started = Instant::now();
    for owner in expected_owners("global", "survivor", &alive, 3) {
        let i = cluster.index_of(&owner).expect("owner is a node");
        let node = &cluster.nodes[i];
        wait_for(
            &format!(
                "node {} to hold global/survivor v{version} by repair",
                i + 1
            ),
            DEADLINE,
            || {
                let local = node.json(&["stat", "global/survivor", "--local"])?;
                (local["version"] == version && local["hash"] == written["hash"]).then_some(())
            },
        );
    }
    eprintln!(
        "background repair restored 3 copies in {:?}",
        repair_started.elapsed()
    );

    let live: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != victim).collect();
    for &i in &live {
        let t = Instant::now();
        let out = p3ctl(&cluster.nodes[i].dir, &["get", "global/survivor"]);
        assert!(
            out.status.success(),
            "get through node {} after the primary died failed after {:?}: {}",
            i + 1,
            t.elapsed(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same_bytes(
            &out.stdout,
            &value,
            &format!("value read through node {} after the primary died", i + 1),
        );
        eprintln!("get through node {} took {:?}", i + 1, t.elapsed());
    }

    let mut owners = expected_owners("global", "survivor", &alive, 3);
    owners.sort();
    let watcher = &cluster.nodes[live[0]];
    let mut last = Value::Null;
    let t = Instant::now();
    wait_for(
        "3 live replicas of global/survivor at the written version",
        DEADLINE,
        || {
            let now = watcher.json(&["stat", "global/survivor"])?;
            if now != last {
                eprintln!("stat through node {}: {now}", live[0] + 1);
                last = now.clone();
            }
            let replicas = now["replicas"].as_array()?;
            let mut peers: Vec<String> = replicas
                .iter()
                .filter(|r| r["version"] == version)
                .filter_map(|r| r["peer"].as_str().map(str::to_owned))
                .collect();
            peers.sort();
            let primaries = replicas.iter().filter(|r| r["primary"] == true).count();
            (replicas.len() == 3 && peers == owners && primaries == 1).then_some(())
        },
    );
    eprintln!(
        "kill_primary_after_put_keeps_data_and_repairs: repaired in {:?}; total {:?}",
        t.elapsed(),
        started.elapsed()
    );
    assert!(!last.to_string().contains(&primary), "{last}");
}

#[test]
fn restart_all_nodes_keeps_every_object() {
    let started = Instant::now();
    let mut cluster = Cluster::start(5);
    cluster.wait_formed();
    let sizes = [
        0,
        1,
        7,
        100,
        1000,
        KIB,
        4 * KIB,
        64 * KIB - 1,
        64 * KIB,
        100 * KIB,
        256 * KIB,
        MIB - 1,
        MIB,
        MIB + 1,
        3 * MIB,
        2,
        333,
        12345,
        500 * KIB,
        10,
    ];
    let mut objects = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        let value = pseudo_random(size as usize, 1000 + i as u64);
        let file = cluster.root.path().join(format!("value{i}"));
        fs::write(&file, &value).unwrap();
        let path = format!("global/obj-{i:02}");
        let through = i % 5;
        let written = put(&cluster.nodes[through].dir, &path, &file, &[]);
        assert_eq!(written["hash"], blake3_hex(&value).as_str(), "{written}");
        objects.push((path, value, through));
    }

    // No waiting between the last acknowledged put and the crash: every
    // acknowledged write must already be durable on its owners.
    let statuses = cluster.restart_all(|i| if i % 2 == 0 { "TERM" } else { "KILL" });
    for (i, status) in statuses.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        assert!(
            status.success(),
            "node {} on SIGTERM exited with {status}",
            i + 1
        );
    }
    cluster.wait_formed();

    for (path, value, through) in &objects {
        let reader = (through + 1) % 5;
        let dir = &cluster.nodes[reader].dir;
        let what = format!("{path} through node {} after the restart", reader + 1);
        assert_reads(dir, path, value, &what);
        assert_eq!(stat(dir, path)["version"], 1, "{path}");
    }
    eprintln!(
        "restart_all_nodes_keeps_every_object: {:?}",
        started.elapsed()
    );
}

/// Sixteen writers at once through one node while another node, the primary
/// of about a fifth of their keys and an owner of more, is killed with
/// SIGKILL mid-stream: every write that was acknowledged is readable
/// afterwards, with its bytes, through every surviving node. (Concurrent
/// writes reach each replica gathered into shared messages and log syncs;
/// an acknowledgement must still mean every owner holds that write.)
#[test]
fn sixteen_writers_lose_no_acknowledged_write_when_a_primary_is_killed() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    };
    const WRITERS: usize = 16;
    const EACH: usize = 12;
    let mut cluster = Cluster::start(5);
    cluster.wait_formed();
    let client = cluster.nodes[0].dir.clone();
    let root = cluster.root.path().to_path_buf();
    let acked = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, root) = (client.clone(), root.clone());
            let (acked, count) = (acked.clone(), count.clone());
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let path = format!("global/w{w}-{i}");
                    let value = pseudo_random(1024 + w * 31 + i, (w * 100 + i) as u64);
                    let file = root.join(format!("value-{w}-{i}"));
                    fs::write(&file, &value).unwrap();
                    let out = p3ctl(&client, &["put", &path, file.to_str().unwrap(), "--json"]);
                    if out.status.success() {
                        acked.lock().unwrap().push((path, value));
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    wait_for("a third of the writes to be acknowledged", DEADLINE, || {
        (count.load(Ordering::SeqCst) >= WRITERS * EACH / 3).then_some(())
    });
    cluster.nodes[1].stop("KILL");
    for writer in writers {
        writer.join().expect("a writer thread panicked");
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} of {} writes acknowledged around the kill",
        acked.len(),
        WRITERS * EACH
    );
    for i in [0, 2, 3, 4] {
        let node = &cluster.nodes[i];
        for (path, value) in &acked {
            let what = format!("acknowledged {path} through node {}", i + 1);
            assert_reads(&node.dir, path, value, &what);
        }
    }
}
