//! A node never trusts a peer: malformed, oversized, inconsistent and forged
//! messages from a real libp2p peer get error answers (or a closed stream), and
//! the node keeps serving its clients with its data intact.

mod common;

use std::time::{Duration, Instant};

use common::{objects, p3ctl, wait_for, NodeProc};
use futures::{AsyncReadExt, AsyncWriteExt};
use p3::dht::{Node, PeerId, BLOB_PROTOCOL, REQUEST_STREAM_PROTOCOL};
use p3::objectspace::{
    blob::BlobHash,
    index::{shard_of, SHARDS},
    lock::{LockMode, LockRequest},
    object::ObjectRecord,
    protocol::{PeerRequest, PeerResponse, ShardUpdates, SyncEntry, SYNC_BATCH},
    Namespace, ObjectName, SpaceError,
};

fn record(name: &str, blob: BlobHash, size: u64) -> ObjectRecord {
    ObjectRecord {
        ns: Namespace::new("global").unwrap(),
        name: ObjectName::new(name).unwrap(),
        version: 1,
        ns_incarnation: 0,
        blob: Some(blob),
        size,
        type_tag: String::new(),
        meta: Default::default(),
        created_ms: 1,
        modified_ms: 1,
        expires_ms: None,
        volatile: false,
        epoch: 0,
        signature: None,
    }
}

async fn ask(node: &Node, peer: PeerId, request: &PeerRequest) -> PeerResponse {
    node.request(peer, request).await.expect("the node answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peer_messages_get_errors_and_the_node_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let target_dir = root.path().join("target");
    let target = tokio::task::block_in_place(|| NodeProc::start(&target_dir, &[]));
    let out = p3ctl(&target_dir, &["put", "global/kept", "-"]);
    // stdin is empty: an empty object is a valid object.
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let node = common::rogue::start(root.path(), &target.addr).await;
    let peer: PeerId = target.peer_id.parse().unwrap();

    // Not a PeerRequest at all.
    let garbage: PeerResponse = node.request(peer, &"hello").await.unwrap();
    assert!(
        matches!(garbage, PeerResponse::Error(SpaceError::Invalid(_))),
        "{garbage:?}"
    );

    // An inline value that does not match the blob hash it claims.
    let forged = PeerRequest::Replicate {
        record: record("forged", BlobHash::of(b"real"), 4),
        inline: Some(b"fake".to_vec()),
        sources: vec![],
        ordered: false,
    };
    let answer = ask(&node, peer, &forged).await;
    assert!(
        matches!(answer, PeerResponse::Error(SpaceError::Corrupt(_))),
        "{answer:?}"
    );

    // A record whose blob nobody can send.
    let orphan = PeerRequest::Replicate {
        record: record("orphan", BlobHash::of(&[9u8; 100_000]), 100_000),
        inline: None,
        sources: vec!["not-a-peer-id".into()],
        ordered: false,
    };
    let answer = ask(&node, peer, &orphan).await;
    assert!(
        matches!(answer, PeerResponse::Error(SpaceError::Unavailable(_))),
        "{answer:?}"
    );

    // A write claimed as ordered by a peer that is not the key's primary.
    let usurper = PeerRequest::Replicate {
        record: record("usurped", BlobHash::of(b"x"), 1),
        inline: Some(b"x".to_vec()),
        sources: vec![],
        ordered: true,
    };
    let answer = ask(&node, peer, &usurper).await;
    assert!(
        matches!(&answer, PeerResponse::Error(SpaceError::Unavailable(e)) if e.contains("not the primary")),
        "{answer:?}"
    );

    // More repair entries than a sync may carry.
    let entry = SyncEntry {
        ns: Namespace::new("global").unwrap(),
        name: ObjectName::new("x").unwrap(),
        order: (0, 1, 1, None),
    };
    let answer = ask(&node, peer, &PeerRequest::Sync(vec![entry; SYNC_BATCH + 1])).await;
    assert!(
        matches!(answer, PeerResponse::Error(SpaceError::Invalid(_))),
        "{answer:?}"
    );

    // Index updates that claim records of another shard, or too many.
    let forged = record("forged-index", BlobHash::of(b"x"), 1);
    let wrong_shard = (shard_of(&forged.name) + 1) % SHARDS;
    for updates in [vec![(forged.clone(), None)], vec![(forged, None); 5000]] {
        let shard = if updates.len() == 1 { wrong_shard } else { 0 };
        let request = PeerRequest::Index(vec![ShardUpdates {
            ns: Namespace::new("global").unwrap(),
            shard,
            updates,
        }]);
        let answer = ask(&node, peer, &request).await;
        assert!(
            matches!(answer, PeerResponse::Error(SpaceError::Invalid(_))),
            "{answer:?}"
        );
    }
    // Index audits and shard searches: too many names, a shard that does not
    // exist, a query that does not parse.
    let global = Namespace::new("global").unwrap();
    let held = vec![(ObjectName::new("x").unwrap(), 0, (0, 1, 1, None)); SYNC_BATCH + 1];
    let search = |shard, query: &str| PeerRequest::Search {
        ns: global.clone(),
        shard,
        incarnation: 0,
        query: query.into(),
        after: None,
    };
    for request in [
        PeerRequest::IndexHave {
            ns: global.clone(),
            shard: 0,
            held,
        },
        search(SHARDS, "*"),
        search(0, "size ~ 3 and"),
    ] {
        let answer = ask(&node, peer, &request).await;
        assert!(
            matches!(answer, PeerResponse::Error(SpaceError::Invalid(_))),
            "{answer:?}"
        );
    }
    let search = p3ctl(&target_dir, &["search", "global", "*"]);
    assert!(
        search.status.success()
            && !String::from_utf8_lossy(&search.stdout).contains("forged-index"),
        "a refused index update was applied, or search failed: {}",
        String::from_utf8_lossy(&search.stderr)
    );

    // A request over the network's size limit never reaches the node's logic.
    let huge = PeerRequest::Replicate {
        record: record("huge", BlobHash::of(b"x"), 1),
        inline: Some(vec![0u8; 5 << 20]),
        sources: vec![],
        ordered: false,
    };
    assert!(node.request::<_, PeerResponse>(peer, &huge).await.is_err());

    // Blob streams: a frame announcing 4 GiB, then plain garbage.
    for bytes in [
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..],
        &[0, 0, 0, 3, 0xff, 0xfe, 0xfd][..],
    ] {
        let mut stream = node.open_stream(peer, BLOB_PROTOCOL).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        stream.flush().await.unwrap();
        let mut rest = Vec::new();
        // The node closes the stream; it does not hang on it.
        let read = tokio::time::timeout(Duration::from_secs(40), stream.read_to_end(&mut rest));
        assert!(read.await.is_ok(), "node kept a bad blob stream open");
    }

    // Request streams: a frame announcing 4 GiB, a frame of an unknown kind
    // (an answer where a request belongs), and a frame cut short. The node
    // greets the stream, then closes it without reading on.
    let header = |kind: u8, len: u32| {
        let mut frame = vec![kind];
        frame.extend_from_slice(&7u64.to_be_bytes());
        frame.extend_from_slice(&len.to_be_bytes());
        frame
    };
    let mut short = header(0, 100);
    short.extend_from_slice(b"cut");
    for bytes in [header(0, u32::MAX), header(1, 0), short] {
        let mut stream = node
            .open_stream(peer, REQUEST_STREAM_PROTOCOL)
            .await
            .unwrap();
        stream.write_all(&bytes).await.unwrap();
        stream.flush().await.unwrap();
        // The last one is cut short by the sender: the node sees the end
        // of the stream inside a frame.
        stream.close().await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(40), stream.read_to_end(&mut rest));
        assert!(read.await.is_ok(), "node kept a bad request stream open");
        assert_eq!(
            rest.first(),
            Some(&0x70),
            "the node greets a request stream first"
        );
        assert_eq!(rest.len(), 1, "a bad frame got an answer: {rest:?}");
    }

    // None of that was stored, and the node still serves its clients.
    let started = Instant::now();
    for name in ["forged", "orphan", "huge"] {
        let out = p3ctl(&target_dir, &["get", &format!("global/{name}")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("does not exist"),
            "{name}: {err}"
        );
    }
    let out = p3ctl(&target_dir, &["get", "global/kept"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    node.shutdown(Duration::from_secs(5)).await;
    drop(target);
}

/// Requests in flight from the flooding peer: more than a node handles and
/// queues for one peer together (128 + 1024), so some are refused.
const FLOOD_IN_FLIGHT: usize = 1500;
/// Bounds on the flood, whatever happens to the client.
const FLOOD_MAX_REQUESTS: u64 = 300_000;
const FLOOD_MAX_TIME: Duration = Duration::from_secs(120);
/// Lock requests the flooding peer parks at the node: more than its handling
/// slots.
const PARKED_LOCKS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_does_not_stop_other_nodes_clients() {
    let root = tempfile::tempdir().unwrap();
    let (target, other) = tokio::task::block_in_place(|| {
        let target = NodeProc::start(&root.path().join("target"), &[]);
        let other = NodeProc::start(&root.path().join("other"), &[&target.addr]);
        wait_for("the two nodes to connect", common::DEADLINE, || {
            target.connected().contains(&other.peer_id).then_some(())
        });
        (target, other)
    });
    let node = common::rogue::start(root.path(), &target.addr).await;
    let peer: PeerId = target.peer_id.parse().unwrap();

    // First the peer parks more lock requests at the target than it has
    // handling slots (128): it holds a lock the target orders and asks for
    // it again and again.
    let members = [target.peer_id.clone(), other.peer_id.clone()];
    let name = (0..)
        .map(|i| format!("flood-lock-{i}"))
        .find(|n| objects::expected_owners("global", n, &members, 1)[0] == target.peer_id)
        .unwrap();
    let acquire = |holder, wait_ms| {
        PeerRequest::Lock(LockRequest::Acquire {
            ns: Namespace::new("global").unwrap(),
            name: ObjectName::new(&name).unwrap(),
            holder,
            mode: LockMode::Write,
            lease_ms: 600_000,
            wait_ms,
            signature: None,
        })
    };
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        // Refused until the target's membership lease is in place.
        match ask(&node, peer, &acquire(1, 0)).await {
            PeerResponse::Granted { .. } => break,
            other => assert!(
                Instant::now() < deadline,
                "the lock was never granted: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lock_answers = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let parked: Vec<_> = (2..=PARKED_LOCKS + 1)
        .map(|holder| {
            let (node, request, answers) =
                (node.clone(), acquire(holder, 600_000), lock_answers.clone());
            tokio::spawn(async move {
                let _ = node.request::<_, PeerResponse>(peer, &request).await;
                answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
        })
        .collect();

    let head = PeerRequest::Head {
        ns: Namespace::new("global").unwrap(),
        name: ObjectName::new("anything").unwrap(),
        inline: true,
        epoch: 0,
    };
    // Until the client is done (or the bounds are hit): as many requests in
    // flight as the flooder can keep.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flood = {
        let (done, sent) = (done.clone(), sent.clone());
        tokio::spawn(async move {
            use futures::StreamExt;
            use std::sync::atomic::Ordering::Relaxed;
            let started = Instant::now();
            let (mut answered, mut busy) = (0u64, 0u64);
            let requests = futures::stream::iter(0..FLOOD_MAX_REQUESTS)
                .take_while(|_| {
                    let go = !done.load(Relaxed) && started.elapsed() < FLOOD_MAX_TIME;
                    async move { go }
                })
                .map(|_| {
                    sent.fetch_add(1, Relaxed);
                    node.request::<_, PeerResponse>(peer, &head)
                })
                .buffer_unordered(FLOOD_IN_FLIGHT);
            futures::pin_mut!(requests);
            while let Some(answer) = requests.next().await {
                match answer {
                    Ok(PeerResponse::Error(SpaceError::Unavailable(_))) => busy += 1,
                    Ok(_) => answered += 1,
                    Err(_) => {}
                }
            }
            node.shutdown(Duration::from_secs(5)).await;
            (answered, busy)
        })
    };
    wait_for_async("the flood to start", || {
        sent.load(std::sync::atomic::Ordering::Relaxed) > 5_000
    })
    .await;

    // A client of the other node writes objects the target owns too, and
    // reads them back through the target, while the flood goes on.
    let sent_before = sent.load(std::sync::atomic::Ordering::Relaxed);
    let client = tokio::task::spawn_blocking({
        let (target_dir, other_dir) = (target.dir.clone(), other.dir.clone());
        move || {
            let started = Instant::now();
            for i in 0..20 {
                let path = format!("global/during-flood-{i}");
                let value = format!("value {i}");
                let mut put = common::p3ctl_command(&other_dir, &["put", &path, "-"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                use std::io::Write;
                put.stdin
                    .take()
                    .unwrap()
                    .write_all(value.as_bytes())
                    .unwrap();
                let out = put.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "put {i} failed during the flood: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let out = p3ctl(&target_dir, &["get", &path]);
                assert!(
                    out.status.success(),
                    "get {i} failed during the flood: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(out.stdout, value.as_bytes());
            }
            started.elapsed()
        }
    });
    let client = client.await;
    let sent_during = sent.load(std::sync::atomic::Ordering::Relaxed) - sent_before;
    // Before the flooder stops (its shutdown fails what it still waits for).
    let locks_answered = lock_answers.load(std::sync::atomic::Ordering::Relaxed);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, busy) = flood.await.unwrap();
    let took = client.expect("the client failed during the flood");
    eprintln!("client: 20 puts and gets in {took:?}; flood: {sent_during} requests meanwhile, {answered} answered, {busy} refused as busy");
    // The client really ran during a flood.
    assert!(
        sent_during >= 2_000,
        "only {sent_during} flood requests while the client ran for {took:?}"
    );
    assert!(answered > 0, "the flooder was never answered");
    assert_eq!(
        locks_answered, 0,
        "the lock requests were answered instead of parked: the test did not hold the node's slots"
    );
    for request in parked {
        request.abort();
    }
    drop((target, other));
}

/// Waits up to a minute for `check`, polling every 10 ms.
async fn wait_for_async(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + common::DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
