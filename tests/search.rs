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

/// How long the audit test waits for one shard's answer before it asks again.
const ASK_DEADLINE: Duration = Duration::from_secs(5);

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
        ("meta.n = 412", Box::new(|n, _| n == 412)),
        ("meta.n = 403", Box::new(|n, _| n == 403)),
        (
            "meta.n > 100 and meta.n <= 130 and type = c",
            Box::new(|n, t| n > 100 && n <= 130 && t == "c"),
        ),
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

/// A template take that finds nothing waits, and takes the first matching
/// write made after it started (from another node), not a decoy written
/// before it; a query about contents is matched against the value.
#[test]
fn a_waiting_template_take_gets_the_next_matching_write() {
    let cluster = Cluster::start(3);
    cluster.wait_formed();
    p3ctl_ok(&cluster.nodes[0].dir, &["ns", "create", "later"]);
    let file = |name: &str, text: &str| {
        let path = cluster.root.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (note, wrong, right) = (
        file("note", "a note"),
        file("wrong", "plain"),
        file("right", "has the needle"),
    );
    let take = |query: &str| {
        KillOnDrop(
            common::p3ctl_command(
                &cluster.nodes[2].dir,
                &["take", "later", "--match", query, "--wait", "60s"],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        )
    };
    let put = |name: &str, path: &str, type_tag: &str| {
        p3ctl_ok(
            &cluster.nodes[1].dir,
            &["put", &format!("later/{name}"), path, "--type", type_tag],
        );
    };
    put("decoy", &note, "note");

    // Whether the taker (on node 2) has searched, found nothing, and waits.
    let waiting = |n: usize| {
        wait_for("the taker to wait", DEADLINE, || {
            (cluster.nodes[2]
                .log()
                .matches("template take waiting")
                .count()
                >= n)
                .then_some(())
        })
    };
    // First by type, then by content (a write of the right type but the
    // wrong content is skipped): the taker waits, a non-match is written,
    // then a match; it gets the match.
    let rounds = [
        ("type = task", ("skip", &note, "note"), "task"),
        ("content ~ needle", ("plain", &wrong, "task"), "needle"),
    ];
    for (round, (query, (skip, skip_path, skip_type), want)) in rounds.into_iter().enumerate() {
        let taker = take(query);
        waiting(round + 1);
        put(skip, skip_path, skip_type);
        put(want, &right, "task");
        let (ok, out, err) = taker.finish();
        assert!(ok, "the take failed: {err}");
        assert_eq!(out, b"has the needle");
        assert!(err.contains(&format!("later/{want}")), "{err}");
    }
    for kept in ["decoy", "skip", "plain"] {
        p3ctl_ok(&cluster.nodes[0].dir, &["stat", &format!("later/{kept}")]);
    }
}

/// An owner of index shards that was down while objects were written holds
/// their rows once it is back: asked directly (as a searching node asks
/// each owner), it alone finds every object of the shards it keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_owner_that_missed_writes_is_caught_up_by_the_audit() {
    use p3::dht::{db::COLUMN_FAMILIES, Database, Keypair, NetworkConfig, Node, PeerId};
    use p3::objectspace::{
        index::{shard_of, SHARDS},
        protocol::{PeerRequest, PeerResponse},
        ObjectName, SpaceError,
    };
    use std::collections::BTreeMap;

    let mut cluster = tokio::task::block_in_place(|| {
        let cluster = Cluster::start(4);
        cluster.wait_formed();
        cluster
    });
    let dir = cluster.nodes[3].dir.clone();
    cluster.nodes[3].stop("KILL");
    let names: Vec<String> = (0..48).map(|i| format!("audited/{i:02}")).collect();
    let value = cluster.root.path().join("value");
    std::fs::write(&value, "v").unwrap();
    tokio::task::block_in_place(|| {
        for name in &names {
            // Keys the dead node was primary of are served once the group
            // has removed it.
            wait_for(&format!("a put of {name}"), DEADLINE, || {
                let path = format!("global/{name}");
                p3ctl(&cluster.nodes[0].dir, &["put", &path, value.to_str()?])
                    .status
                    .success()
                    .then_some(())
            });
        }
        let seed = cluster.nodes[0].addr.clone();
        cluster.nodes[3] = common::NodeProc::start(&dir, &[&seed]);
    });
    let returned: PeerId = cluster.nodes[3].peer_id.parse().unwrap();
    let mut expected: BTreeMap<u8, BTreeSet<String>> = BTreeMap::new();
    for name in &names {
        let shard = shard_of(&ObjectName::new(name).unwrap());
        expected.entry(shard).or_default().insert(name.clone());
    }

    // Another peer of the swarm, to ask the returned node directly.
    let db = Database::open(&cluster.root.path().join("asker"), COLUMN_FAMILIES).unwrap();
    let config = NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![cluster.nodes[0].addr.parse().unwrap()],
        ..NetworkConfig::default()
    };
    let (asker, mut inbound) = Node::start(config, Keypair::generate_ed25519(), db)
        .await
        .unwrap();
    tokio::spawn(async move { while inbound.requests.recv().await.is_some() {} });

    let deadline = Instant::now() + DEADLINE;
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "the returned owner never held every row: {last}"
        );
        let mut owned = 0;
        let mut behind = Vec::new();
        for shard in 0..SHARDS {
            let request = PeerRequest::Search {
                ns: p3::objectspace::Namespace::new("global").unwrap(),
                shard,
                incarnation: 0,
                query: "name ~ \"audited/*\"".into(),
                after: None,
            };
            // The network bounds a request only loosely (callers set their
            // own deadline): one that gets no answer is asked again next
            // round, within the test's deadline.
            let asked = asker.request::<_, PeerResponse>(returned, &request);
            let Ok(answer) = tokio::time::timeout(ASK_DEADLINE, asked).await else {
                behind.push(format!("shard {shard}: no answer within {ASK_DEADLINE:?}"));
                continue;
            };
            match answer {
                Ok(PeerResponse::Found {
                    entries,
                    next: None,
                }) => {
                    owned += 1;
                    let got: BTreeSet<String> =
                        entries.into_iter().map(|e| e.summary.name).collect();
                    if got != expected.get(&shard).cloned().unwrap_or_default() {
                        behind.push(format!("shard {shard}: {} rows", got.len()));
                    }
                }
                Ok(PeerResponse::Error(SpaceError::Unavailable(e)))
                    if e.contains("not an owner") => {}
                other => behind.push(format!("shard {shard}: {other:?}")),
            }
        }
        if owned > 0 && behind.is_empty() {
            // With 4 nodes and 3 owners per shard it keeps most of them.
            assert!(owned >= 4, "the returned node keeps only {owned} shards");
            break;
        }
        last = format!("{owned} shards owned; {}", behind.join(", "));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
