//! A node never trusts a peer: malformed, oversized, inconsistent and forged
//! messages from a real libp2p peer get error answers (or a closed stream), and
//! the node keeps serving its clients with its data intact.

mod common;

use std::time::{Duration, Instant};

use common::{p3ctl, NodeProc};
use futures::{AsyncReadExt, AsyncWriteExt};
use p3::dht::{
    db::COLUMN_FAMILIES, Database, Keypair, NetworkConfig, Node, PeerId, BLOB_PROTOCOL,
    REQUEST_STREAM_PROTOCOL,
};
use p3::objectspace::{
    blob::BlobHash,
    index::{shard_of, SHARDS},
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

    let db_dir = root.path().join("peer-db");
    let db = Database::open(&db_dir, COLUMN_FAMILIES).unwrap();
    let config = NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![target.addr.parse().unwrap()],
        ..NetworkConfig::default()
    };
    let (node, mut inbound) = Node::start(config, Keypair::generate_ed25519(), db)
        .await
        .unwrap();
    // This peer is a P³ peer to the target, so it may be asked things (as an
    // owner); it refuses everything at once, as the network layer does for a
    // dropped request.
    tokio::spawn(async move { while inbound.requests.recv().await.is_some() {} });
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
