//! Search through per-namespace index shards, and template take (a bag of
//! tasks): exact answers from any node after puts, removes and TTL expiry, and
//! every object taken exactly once by concurrent takers on different nodes.
//! Real node processes on 127.0.0.1; takers are separate `p3ctl` processes.

mod common;

use std::{
    collections::{BTreeSet, HashSet},
    time::{Duration, Instant},
};

use common::{objects::search, p3ctl, p3ctl_ok, wait_for, Cluster, KillOnDrop, DEADLINE};
use futures::future::join_all;
use p3::objectspace::{
    object::{MetaValue, PutOptions},
    Space,
};

/// Writes `objects` (name, type, n, ttl) through `dir`'s node, 8 at a time.
async fn put_all(dir: &std::path::Path, ns: &str, objects: &[(String, &str, u64, Option<u64>)]) {
    for batch in objects.chunks(8) {
        let puts = batch.iter().map(|(name, type_tag, n, ttl)| async move {
            let mut space = Space::connect(dir).await.expect("connect");
            let mut options = PutOptions {
                type_tag: (*type_tag).to_owned(),
                ttl_ms: *ttl,
                ..PutOptions::default()
            };
            options.meta.insert("n".into(), MetaValue::Num(*n as f64));
            space
                .put_bytes(
                    &format!("{ns}/{name}"),
                    &options,
                    format!("value {n}").as_bytes(),
                )
                .await
                .expect("put");
        });
        join_all(puts).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_is_exact_among_1000_objects_from_any_node() {
    let cluster = tokio::task::block_in_place(|| {
        let cluster = Cluster::start(5);
        cluster.wait_formed();
        p3ctl_ok(&cluster.nodes[0].dir, &["ns", "create", "s"]);
        cluster
    });
    // 1000 objects: types a/b/c, meta.n = i; every 10th has a TTL, and those
    // are written last (below), after the removals.
    const TTL: Duration = Duration::from_secs(10);
    let objects: Vec<(String, &str, u64, Option<u64>)> = (0..1000u64)
        .map(|i| {
            let ttl = (i % 10 == 7).then_some(TTL.as_millis() as u64);
            (
                format!("obj/{i:04}"),
                ["a", "b", "c"][(i % 3) as usize],
                i,
                ttl,
            )
        })
        .collect();
    let write = |expiring: bool| {
        let objects = &objects;
        join_all(cluster.nodes.iter().enumerate().map(move |(k, node)| {
            let mine: Vec<_> = objects
                .iter()
                .filter(|o| o.3.is_some() == expiring)
                .skip(k)
                .step_by(5)
                .cloned()
                .collect();
            let dir = node.dir.clone();
            async move { put_all(&dir, "s", &mine).await }
        }))
    };
    write(false).await;

    // Remove every 25th (none of them expiring).
    let removed: HashSet<u64> = (0..1000).filter(|i| i % 25 == 3).collect();
    tokio::task::block_in_place(|| {
        for i in &removed {
            p3ctl_ok(
                &cluster.nodes[(*i % 5) as usize].dir,
                &["rm", &format!("s/obj/{i:04}")],
            );
        }
    });
    let expiring_from = Instant::now();
    write(true).await;

    let expect = |keep: &dyn Fn(u64, &str) -> bool, expired: bool| -> BTreeSet<String> {
        objects
            .iter()
            .filter(|(_, t, n, ttl)| {
                !removed.contains(n) && (ttl.is_none() || !expired) && keep(*n, t)
            })
            .map(|(name, ..)| name.clone())
            .collect()
    };
    type Oracle = Box<dyn Fn(u64, &str) -> bool>;
    let queries: Vec<(&str, Oracle)> = vec![
        (
            "type = a and meta.n < 500",
            Box::new(|n, t| t == "a" && n < 500),
        ),
        ("meta.n >= 900", Box::new(|n, _| n >= 900)),
        (
            r#"name ~ "obj/01*" and type != b"#,
            Box::new(|n, t| (100..200).contains(&n) && t != "b"),
        ),
        ("*", Box::new(|_, _| true)),
    ];
    tokio::task::block_in_place(|| {
        // Before the TTLs run out, the expiring objects are found too (the
        // index follows writes within moments; the TTL leaves it seconds).
        let want = expect(&|_, _| true, false);
        let before_expiry = TTL.saturating_sub(expiring_from.elapsed() + Duration::from_secs(1));
        wait_for(
            "search to find the expiring objects too",
            before_expiry,
            || (search(&cluster.nodes[1].dir, "s", "*") == want).then_some(()),
        );
        // After: exact answers, from every node.
        let deadline = TTL + DEADLINE;
        for (query, keep) in &queries {
            let want = expect(keep.as_ref(), true);
            for node in &cluster.nodes {
                wait_for(
                    &format!("search {query:?} through a node to be exact"),
                    deadline,
                    || (search(&node.dir, "s", query) == want).then_some(()),
                );
            }
            eprintln!("{query:?}: {} matches", want.len());
        }
    });
}

#[test]
fn template_takers_on_six_nodes_take_every_task_exactly_once() {
    let cluster = Cluster::start(6);
    cluster.wait_formed();
    p3ctl_ok(&cluster.nodes[0].dir, &["ns", "create", "bag"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tasks: Vec<(String, &str, u64, Option<u64>)> = (0..200u64)
        .map(|i| (format!("task/{i:03}"), "task", i, None))
        .collect();
    runtime.block_on(put_all(&cluster.nodes[1].dir, "bag", &tasks));
    // A decoy that must never be taken.
    let decoy = cluster.root.path().join("decoy");
    std::fs::write(&decoy, "keep me").unwrap();
    p3ctl_ok(
        &cluster.nodes[2].dir,
        &[
            "put",
            "bag/decoy",
            decoy.to_str().unwrap(),
            "--type",
            "note",
        ],
    );
    wait_for("all 200 tasks to be searchable", DEADLINE, || {
        (search(&cluster.nodes[3].dir, "bag", "type = task").len() == 200).then_some(())
    });

    // Six takers, one per node, each taking until nothing matches.
    let script = r#"n=0; while [ $n -lt 250 ]; do n=$((n+1)); out=$("$P" take bag --match "type = task" --data-dir "$D" 2>&1 >/dev/null) || { case "$out" in *"does not exist"*) exit 0;; *) echo "$out" >&2; exit 1;; esac; }; echo "$out"; done; exit 1"#;
    let takers: Vec<KillOnDrop> = cluster
        .nodes
        .iter()
        .map(|node| {
            KillOnDrop(
                std::process::Command::new("sh")
                    .args(["-c", script])
                    .env("P", common::p3ctl_bin())
                    .env("D", &node.dir)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let mut taken: Vec<String> = Vec::new();
    let mut per_taker = Vec::new();
    for taker in takers {
        let (ok, out, err) = taker.finish();
        assert!(ok, "a taker failed: {err}");
        let out = String::from_utf8_lossy(&out);
        let mine: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("took bag/"))
            .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
            .collect();
        per_taker.push(mine.len());
        taken.extend(mine);
    }
    eprintln!("tasks taken per node: {per_taker:?}");
    let unique: BTreeSet<&String> = taken.iter().collect();
    assert_eq!(unique.len(), taken.len(), "a task was taken twice");
    let want: BTreeSet<String> = tasks.iter().map(|(n, ..)| n.clone()).collect();
    let got: BTreeSet<String> = taken.into_iter().collect();
    assert_eq!(got, want, "tasks lost or invented");
    let out = p3ctl(&cluster.nodes[5].dir, &["get", "bag/decoy"]);
    assert_eq!(out.stdout, b"keep me", "the non-matching object was taken");
}
