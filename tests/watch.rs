//! Waiting for changes: blocking gets and watches across nodes. Real node
//! processes on 127.0.0.1; every client is a separate `p3ctl` process.

mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{p3ctl_err, p3ctl_ok, p3ctl_spawn, Cluster, KillOnDrop, DEADLINE};
use serde_json::Value;

/// Writes `value` to `path` through `dir`'s node; returns when acknowledged.
fn put(dir: &std::path::Path, path: &str, value: &str) {
    let file = dir.join(format!("value-{}", rand_suffix()));
    std::fs::write(&file, value).unwrap();
    p3ctl_ok(dir, &["put", path, file.to_str().unwrap()]);
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Waits for `child` to exit, at most `deadline`; returns its stdout and when it
/// exited.
fn exit_of(mut child: KillOnDrop, deadline: Duration) -> (String, Instant) {
    let start = Instant::now();
    loop {
        if child.0.try_wait().unwrap().is_some() {
            let at = Instant::now();
            let (ok, out, err) = child.finish();
            assert!(ok, "blocking get failed: {err}");
            return (String::from_utf8_lossy(&out).into_owned(), at);
        }
        assert!(
            start.elapsed() < deadline,
            "blocking get did not return in {deadline:?}"
        );
        thread::sleep(Duration::from_millis(5)); // polling a local process's exit
    }
}

#[test]
fn blocking_get_returns_within_a_second_of_a_write_elsewhere() {
    let cluster = Cluster::start(5);
    cluster.wait_formed();
    let (reader, writer) = (&cluster.nodes[0], &cluster.nodes[3]);

    // It waits: a missing object is still missing after the wait, and the
    // command took at least that long.
    let started = Instant::now();
    let err = p3ctl_err(&reader.dir, &["get", "global/never", "--wait", "1s"]);
    assert!(err.contains("does not exist after waiting"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // Until it exists.
    let get = KillOnDrop(p3ctl_spawn(
        &reader.dir,
        &["get", "global/later", "--wait", "60s"],
    ));
    let mut get = get;
    assert!(
        get.0.try_wait().unwrap().is_none(),
        "get returned before the write"
    );
    put(&writer.dir, "global/later", "first");
    let acked = Instant::now();
    let (value, returned) = exit_of(get, DEADLINE);
    assert_eq!(value, "first");
    let latency = returned.saturating_duration_since(acked);
    eprintln!("blocking get returned {latency:?} after the write was acknowledged");
    assert!(latency < Duration::from_secs(1), "{latency:?}");

    // Until a newer version than the one it has seen.
    let mut get = KillOnDrop(p3ctl_spawn(
        &cluster.nodes[1].dir,
        &[
            "get",
            "global/later",
            "--wait",
            "60s",
            "--after-version",
            "1",
        ],
    ));
    assert!(
        get.0.try_wait().unwrap().is_none(),
        "get returned before the write"
    );
    put(&cluster.nodes[2].dir, "global/later", "second");
    let acked = Instant::now();
    let (value, returned) = exit_of(get, DEADLINE);
    assert_eq!(value, "second");
    let latency = returned.saturating_duration_since(acked);
    eprintln!("blocking get --after-version returned {latency:?} after the write");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
}

#[test]
fn watch_sees_puts_from_three_other_nodes_in_version_order() {
    let cluster = Cluster::start(5);
    cluster.wait_formed();
    let mut watcher = KillOnDrop(p3ctl_spawn(
        &cluster.nodes[0].dir,
        &["watch", "global/w/", "--json"],
    ));
    let stdout = watcher.0.stdout.take().unwrap();
    let (tx, events) = mpsc::channel::<Value>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let event: Value = serde_json::from_str(&line).expect("watch printed invalid JSON");
            if tx.send(event).is_err() {
                break;
            }
        }
    });

    // A second watcher on the same node, for one object only; it is in place
    // once it says so (its node's subscription is the first watcher's).
    let mut exact = KillOnDrop(p3ctl_spawn(
        &cluster.nodes[0].dir,
        &["watch", "global/w/a", "--exact", "--json"],
    ));
    let mut said = String::new();
    BufReader::new(exact.0.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(said.starts_with("watching"), "{said}");

    // The watch is in place once it reports a probe write (gossip subscriptions
    // take a moment to reach the other nodes).
    let started = Instant::now();
    'probe: for round in 0..200 {
        put(&cluster.nodes[1].dir, "global/w/probe", &format!("{round}"));
        while let Ok(event) = events.recv_timeout(Duration::from_millis(100)) {
            if event["name"] == "w/probe" {
                break 'probe;
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the watch never saw a probe write"
        );
    }

    // Three writers on three other nodes, each writing the same three objects.
    const ROUNDS: u64 = 4;
    let writers: Vec<_> = (1..=3)
        .map(|i| {
            let dir = cluster.nodes[i].dir.clone();
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    for name in ["a", "b", "c"] {
                        put(&dir, &format!("global/w/{name}"), &format!("{i}:{round}"));
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("a writer failed");
    }

    let last = 3 * ROUNDS; // every put is one version
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    let deadline = Instant::now() + DEADLINE;
    while ["w/a", "w/b", "w/c"]
        .iter()
        .any(|n| seen.get(*n).and_then(|v| v.last()) != Some(&last))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("watch stopped short; saw {seen:?}"));
        let name = event["name"].as_str().unwrap().to_owned();
        if name != "w/probe" {
            assert_eq!(event["kind"], "put", "{event}");
            seen.entry(name)
                .or_default()
                .push(event["version"].as_u64().unwrap());
        }
    }
    for (name, versions) in &seen {
        let expected: Vec<u64> = (1..=last).collect();
        assert_eq!(
            versions, &expected,
            "events of {name} out of order or missing"
        );
    }

    // The exact watcher saw w/a's puts, in order, and nothing else.
    let stdout = exact.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    for version in 1..=last {
        let line = lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("the exact watch stopped before version {version}"));
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["name"], "w/a", "{event}");
        assert_eq!(event["version"], version, "{event}");
    }
}
