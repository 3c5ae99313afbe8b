//! Volatile objects and direct watches, end to end. A volatile object lives in
//! its R=3 owners' memory only: it outlives an owner's death, is never written
//! to any node's disk, is gone once every node has restarted, never shows up in
//! search, is limited to 64 KiB, and otherwise behaves like a durable object
//! (conditional writes, take, locks, TTL). Watch events go from the primary
//! that orders a write only to the nodes that registered a matching watch.
//! Real node processes on 127.0.0.1; every client is a separate `p3ctl` process.

mod common;

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use common::objects::{
    assert_same_bytes, blake3_hex, expected_owners, get, put, search, stat, take_once_everywhere,
    KIB,
};
use common::{
    p3ctl, p3ctl_bin, p3ctl_command, p3ctl_err, p3ctl_ok, p3ctl_spawn, pseudo_random, wait_for,
    Cluster, KillOnDrop, NodeProc, DEADLINE,
};
use serde_json::Value;

/// The largest volatile value.
const LIMIT: usize = 64 * KIB as usize;
/// The option of a volatile put.
const VOLATILE: &[&str] = &["--volatile"];

/// Writes `value` to a new file under the cluster's root (not a node's data
/// dir, which the disk scan reads); returns its path.
fn value_file(cluster: &Cluster, value: impl AsRef<[u8]>) -> PathBuf {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let n = FILES.fetch_add(1, Ordering::Relaxed);
    let file = cluster.root.path().join(format!("value-{n}"));
    fs::write(&file, value).expect("cannot write a value file");
    file
}

/// `p3ctl put PATH FILE --json EXTRA...` of `value` through node `i`, failing
/// the test unless it succeeds; the parsed answer.
fn put_value(
    cluster: &Cluster,
    i: usize,
    path: &str,
    value: impl AsRef<[u8]>,
    extra: &[&str],
) -> Value {
    let file = value_file(cluster, value);
    put(&cluster.nodes[i].dir, path, &file, extra)
}

/// `p3ctl put PATH - EXTRA...` through `dir`'s node with `value` on its stdin.
fn put_stdin(dir: &Path, path: &str, value: &[u8], extra: &[&str]) -> Output {
    let mut args = vec!["put", path, "-"];
    args.extend_from_slice(extra);
    let mut child = p3ctl_command(dir, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run p3ctl");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let value = value.to_vec();
    // From a thread, ignoring errors: p3ctl may refuse before reading it all.
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(&value);
    });
    let out = child.wait_with_output().expect("cannot wait for p3ctl");
    feeder.join().expect("the stdin feeder panicked");
    out
}

/// The one-line `p3ctl: ...` error of a command that must have failed.
fn one_line_error(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    assert!(!out.status.success(), "{what} should have failed: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: one line, got:\n{err}");
    assert!(err.starts_with("p3ctl: "), "{what}: {err}");
    err
}

/// Whether some regular file under `dir` (recursively) contains `needle`.
fn on_disk(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| match entry.file_type() {
        Ok(t) if t.is_dir() => on_disk(&entry.path(), needle),
        // Files RocksDB deletes while we look are simply skipped.
        Ok(t) if t.is_file() => fs::read(entry.path())
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)),
        _ => false,
    })
}

/// How many nodes have `needle` in some file of their data dir.
fn disks_holding(cluster: &Cluster, needle: &[u8]) -> usize {
    let holds = |node: &&NodeProc| on_disk(&node.dir, needle);
    cluster.nodes.iter().filter(holds).count()
}

/// Stops every node still running (even-numbered ones with SIGTERM, which must
/// exit cleanly, the others with SIGKILL), then starts all of them again on
/// their data dirs: node 1 first, the others joining through it. Unlike
/// `Cluster::restart_all`, it accepts nodes the test has already killed.
fn restart_every_node(cluster: &mut Cluster) {
    for (i, node) in cluster.nodes.iter_mut().enumerate() {
        if node.is_running() {
            let signal = if i % 2 == 0 { "TERM" } else { "KILL" };
            let status = node.stop(signal);
            assert!(
                signal == "KILL" || status.success(),
                "node {} on SIGTERM exited with {status}",
                i + 1
            );
        }
    }
    cluster.start_stopped();
}

/// `events_received` of `node status --json`: watch events the node has had
/// from other nodes since it started.
fn events_received(node: &NodeProc) -> u64 {
    let status = node.json(&["node", "status"]).expect("node status failed");
    status["events_received"]
        .as_u64()
        .unwrap_or_else(|| panic!("node status without a numeric events_received: {status}"))
}

/// The events a running `p3ctl watch --json` prints, as they come.
fn watch_events(watcher: &mut KillOnDrop) -> mpsc::Receiver<Value> {
    let stdout = watcher.0.stdout.take().expect("stdout is piped");
    let (tx, events) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let event: Value = serde_json::from_str(&line).expect("watch printed invalid JSON");
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    events
}

#[test]
fn volatile_object_survives_one_owner_and_is_gone_after_all_restart() {
    let mut cluster = Cluster::start(5);
    cluster.wait_formed();
    let (mem, disk) = ("global/in-memory", "global/on-disk");
    let volatile = pseudo_random(40 * KIB as usize, 1);
    let durable = pseudo_random(40 * KIB as usize, 2);
    let written = put_value(&cluster, 0, mem, &volatile, VOLATILE);
    assert!(
        written["acked_by"].as_u64() >= Some(2),
        "a majority of the owners holds it: {written}"
    );
    put_value(&cluster, 0, disk, &durable, &[]);

    // The owner outside the acknowledging majority receives it right after.
    let meta = wait_for(
        "all three owners to hold the volatile object",
        DEADLINE,
        || {
            let meta = stat(&cluster.nodes[2].dir, mem);
            (meta["replicas"].as_array().map_or(0, Vec::len) == 3).then_some(meta)
        },
    );
    assert_eq!(meta["volatile"], true, "{meta}");
    assert_eq!(meta["hash"], blake3_hex(&volatile).as_str(), "{meta}");
    let durable_meta = stat(&cluster.nodes[2].dir, disk);
    assert_eq!(durable_meta["volatile"], false, "{durable_meta}");

    // Each owner holds its own copy, and no node has the bytes on disk (while
    // the durable value's are, so the scan does find values).
    let replicas = meta["replicas"].as_array().expect("stat without replicas");
    assert_eq!(replicas.len(), 3, "{meta}");
    let node_of = |r: &Value| {
        let peer = r["peer"].as_str().expect("replica without peer");
        cluster
            .index_of(peer)
            .unwrap_or_else(|| panic!("owner {peer} is none of the nodes"))
    };
    for i in replicas.iter().map(node_of) {
        let local = cluster.nodes[i]
            .json(&["stat", mem, "--local"])
            .unwrap_or_else(|| panic!("owner node {} holds no copy of {mem}", i + 1));
        assert_eq!(local["volatile"], true, "node {}: {local}", i + 1);
        assert_eq!(local["version"], 1, "node {}: {local}", i + 1);
    }
    let (mem_disks, disk_disks) = (
        disks_holding(&cluster, &volatile[1000..1064]),
        disks_holding(&cluster, &durable[1000..1064]),
    );
    assert_eq!(mem_disks, 0, "{mem} is on {mem_disks} nodes' disks");
    assert!(disk_disks > 0, "{disk} is on no disk: the scan is blind");

    // The primary dies; the other owners still serve the value, to every node.
    let primaries: Vec<&Value> = replicas.iter().filter(|r| r["primary"] == true).collect();
    assert_eq!(primaries.len(), 1, "exactly one primary: {meta}");
    let victim = node_of(primaries[0]);
    eprintln!("primary of {mem} is node {}; killing it", victim + 1);
    cluster.nodes[victim].stop("KILL");
    for i in (0..5).filter(|&i| i != victim) {
        let what = format!("{mem} through node {} after the kill", i + 1);
        assert_same_bytes(&get(&cluster.nodes[i].dir, mem), &volatile, &what);
    }

    // Every node restarts: the volatile object is gone, the durable one is not.
    restart_every_node(&mut cluster);
    cluster.wait_formed();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let err = p3ctl_err(&node.dir, &["get", mem]);
        assert!(err.contains("does not exist"), "node {}: {err}", i + 1);
        let local = node.json(&["stat", mem, "--local"]);
        assert!(local.is_none(), "node {} holds {mem}: {local:?}", i + 1);
        let what = format!("{disk} through node {} after the restart", i + 1);
        assert_same_bytes(&get(&node.dir, disk), &durable, &what);
    }
}

#[test]
fn volatile_objects_never_appear_in_search() {
    let cluster = Cluster::start(5);
    cluster.wait_formed();
    p3ctl_ok(&cluster.nodes[0].dir, &["ns", "create", "vs"]);
    // Each volatile object is written before a durable one with the same type
    // and metadata, through different nodes.
    for (i, name) in ["mem-1", "disk-1", "mem-2", "disk-2"].iter().enumerate() {
        let mut extra = vec!["--type", "note", "--meta", "k=1"];
        if name.starts_with("mem") {
            extra.push("--volatile");
        }
        put_value(&cluster, i, &format!("vs/{name}"), name, &extra);
    }
    let durable: BTreeSet<String> = ["disk-1", "disk-2"].map(String::from).into();
    for (i, node) in cluster.nodes.iter().enumerate() {
        wait_for(
            &format!("search through node {} to find the durable objects", i + 1),
            DEADLINE,
            || {
                search(&node.dir, "vs", "type = note")
                    .is_superset(&durable)
                    .then_some(())
            },
        );
        for query in ["type = note", "meta.k = 1", "*"] {
            let found = search(&node.dir, "vs", query);
            assert_eq!(found, durable, "search {query:?} through node {}", i + 1);
        }
    }
    // They exist all the same.
    for name in ["mem-1", "mem-2"] {
        let read = get(&cluster.nodes[4].dir, &format!("vs/{name}"));
        assert_eq!(read, name.as_bytes(), "vs/{name}");
    }
}

#[test]
fn volatile_conditional_writes_take_and_locks() {
    let cluster = Cluster::start(5);
    cluster.wait_formed();
    let dir = |i: usize| &cluster.nodes[i].dir;

    // --if-version: 0 creates, the current version wins, a stale one loses.
    let path = "global/cas";
    let if_version = |n| ["--volatile", "--if-version", n];
    let first = put_value(&cluster, 0, path, "one", &if_version("0"));
    assert_eq!(first["version"], 1, "{first}");
    let stale = value_file(&cluster, "stale");
    let stale = stale.to_str().expect("non-UTF-8 temp path");
    let stale_put = |n| ["put", path, stale, "--volatile", "--if-version", n];
    let err = p3ctl_err(dir(1), &stale_put("0"));
    assert!(err.contains("version conflict"), "{err}");
    let out = put_stdin(dir(2), path, b"two", &if_version("1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the put from stdin: {stderr}");
    let err = p3ctl_err(dir(3), &stale_put("1"));
    let conflict = format!("version conflict on {path}: expected version 1");
    assert!(err.contains(&conflict), "{err}");
    assert_eq!(get(dir(4), path), b"two");
    let meta = stat(dir(4), path);
    assert!(meta["version"] == 2 && meta["volatile"] == true, "{meta}");

    // take: of five concurrent takers on five nodes, exactly one gets it.
    let values = [pseudo_random(LIMIT, 3), pseudo_random(1000, 4)];
    for (k, value) in values.iter().enumerate() {
        let path = format!("global/vtake-{k}");
        put_value(&cluster, k, &path, value, VOLATILE);
        let (taken, _) = take_once_everywhere(&cluster, &path);
        assert_same_bytes(&taken, value, &format!("{path} as taken"));
        let err = p3ctl_err(dir(4), &["get", &path]);
        assert!(err.contains("does not exist"), "{err}");
    }

    // Locks: three clients, each making 5 fenced read-increment-writes of a
    // volatile counter under `p3ctl lock --write`, lose no update.
    let counter = "global/vcount";
    put_value(&cluster, 0, counter, "0", VOLATILE);
    let cycle = format!(
        r#"v=$("$P" get {counter} --data-dir "$D") && echo $((v+1)) | "$P" put {counter} - --volatile --token "$P3_FENCING_TOKEN" --data-dir "$D" >/dev/null"#
    );
    let script = format!(
        r#"for i in $(seq 5); do "$P" lock {counter} --write --data-dir "$D" -- sh -c '{cycle}' || exit 1; done"#
    );
    let clients: Vec<KillOnDrop> = (1..=3)
        .map(|i| {
            KillOnDrop(
                Command::new("sh")
                    .args(["-c", &script])
                    .env("P", p3ctl_bin())
                    .env("D", dir(i))
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("cannot run sh"),
            )
        })
        .collect();
    for client in clients {
        let (ok, _, err) = client.finish();
        assert!(ok, "a locked client failed: {err}");
    }
    assert_eq!(get(dir(4), counter), b"15\n", "15 locked increments");
    assert_eq!(stat(dir(4), counter)["volatile"], true);

    // --ttl: the volatile object expires, its neighbour without one stays.
    let ttl = ["--volatile", "--ttl", "1s"];
    put_value(&cluster, 1, "global/brief", "x", &ttl);
    put_value(&cluster, 1, "global/lasting", "stays", VOLATILE);
    wait_for("global/brief to expire", DEADLINE, || {
        let out = p3ctl(dir(3), &["get", "global/brief"]);
        let gone = String::from_utf8_lossy(&out.stderr).contains("does not exist");
        (!out.status.success() && gone).then_some(())
    });
    assert_eq!(get(dir(3), "global/lasting"), b"stays");
}

#[test]
fn volatile_put_over_the_limit_is_refused() {
    let mut cluster = Cluster::start(3);
    cluster.wait_formed();
    // Exactly the limit is accepted.
    let max = pseudo_random(LIMIT, 5);
    let written = put_value(&cluster, 0, "global/max", &max, VOLATILE);
    assert_eq!(written["size"], LIMIT as u64, "{written}");
    let read = get(&cluster.nodes[1].dir, "global/max");
    assert_same_bytes(&read, &max, "the largest volatile value");

    // One byte more from a file, 65 KiB + 1 from stdin: refused in one line.
    // (The object names do not say "volatile", so the error must.)
    let over = pseudo_random(LIMIT + 1, 6);
    let file = value_file(&cluster, &over);
    let file = file.to_str().expect("non-UTF-8 temp path");
    let dir = &cluster.nodes[0].dir;
    let err = p3ctl_err(dir, &["put", "global/big", file, "--volatile"]);
    assert!(err.contains("volatile"), "{err}");
    let bigger = pseudo_random(65 * KIB as usize + 1, 7);
    let out = put_stdin(dir, "global/bigger", &bigger, VOLATILE);
    let err = one_line_error(&out, "a volatile put of 65 KiB + 1 from stdin");
    assert!(err.contains("volatile"), "{err}");

    // Nothing was stored, anywhere.
    for name in ["global/big", "global/bigger"] {
        for (i, node) in cluster.nodes.iter().enumerate() {
            let err = p3ctl_err(&node.dir, &["get", name]);
            assert!(err.contains("does not exist"), "node {}: {err}", i + 1);
            let local = node.json(&["stat", name, "--local"]);
            assert!(local.is_none(), "node {} holds {name}: {local:?}", i + 1);
        }
    }

    // The node keeps serving: a small volatile put, and the large value durably.
    cluster.nodes[0].assert_running();
    put_value(&cluster, 0, "global/small", "still serving", VOLATILE);
    assert_eq!(get(&cluster.nodes[2].dir, "global/small"), b"still serving");
    put_value(&cluster, 0, "global/big", &over, &[]);
    let read = get(&cluster.nodes[1].dir, "global/big");
    assert_same_bytes(&read, &over, "global/big, written durably");
}

#[test]
fn direct_watch_delivers_in_order_only_to_watchers() {
    const N: u64 = 30;
    let cluster = Cluster::start(5);
    cluster.wait_formed();
    let peers: Vec<String> = cluster.nodes.iter().map(|n| n.peer_id.clone()).collect();
    let primary_of = |name: &str| expected_owners("global", name, &peers, 1).remove(0);
    // Node 1 must not be the primary: events it ordered itself would reach its
    // watcher locally, not be received. The probe shares the key's primary, so
    // once a probe arrives that primary knows of the watch.
    let key = (0..)
        .map(|i| format!("dw/key-{i}"))
        .find(|name| primary_of(name.as_str()) != peers[0])
        .expect("some name has another primary");
    let probe = (0..)
        .map(|i| format!("dw/probe-{i}"))
        .find(|name| primary_of(name.as_str()) == primary_of(key.as_str()))
        .expect("some probe name has the key's primary");
    let (key_path, probe_path) = (format!("global/{key}"), format!("global/{probe}"));
    let before: Vec<u64> = cluster.nodes.iter().map(events_received).collect();

    let watch = ["watch", "global/dw/", "--json"];
    let mut watcher = KillOnDrop(p3ctl_spawn(&cluster.nodes[0].dir, &watch));
    let events = watch_events(&mut watcher);
    // The watch is in place everywhere that matters once it reports a probe.
    let started = Instant::now();
    'probe: for round in 0u64.. {
        put_value(&cluster, 1, &probe_path, round.to_le_bytes(), &[]);
        while let Ok(event) = events.recv_timeout(Duration::from_millis(100)) {
            if event["name"] == probe.as_str() {
                break 'probe;
            }
        }
        assert!(started.elapsed() < DEADLINE, "the watch saw no probe");
    }

    // Versions 1..=N, one after the other, written through nodes 2, 3 and 4.
    for version in 1..=N {
        let writer = 1 + (version as usize - 1) % 3;
        let written = put_value(&cluster, writer, &key_path, format!("v{version}"), &[]);
        assert_eq!(written["version"], version, "{written}");
    }
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while seen.last() != Some(&N) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the watch stopped short; saw versions {seen:?}"));
        if event["name"] == key.as_str() {
            assert_eq!(event["kind"], "put", "{event}");
            seen.push(event["version"].as_u64().expect("event without a version"));
        }
    }
    let want: Vec<u64> = (1..=N).collect();
    assert_eq!(seen, want, "events of {key} lost or out of order");

    let after: Vec<u64> = cluster.nodes.iter().map(events_received).collect();
    eprintln!("events_received before {before:?}, after {after:?}");
    let got = after[0].saturating_sub(before[0]);
    assert!(got >= N, "node 1 received {got} events for {N} writes");
    for (i, (b, a)) in before.iter().zip(&after).enumerate().skip(1) {
        assert_eq!(a, b, "node {} has no watcher yet received events", i + 1);
    }
}
