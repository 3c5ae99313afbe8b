//! The `Node` handle against real swarms talking libp2p over 127.0.0.1, each with
//! its own RocksDB: requests, gossip and provider records.

use std::time::{Duration, Instant};

use p3_dht::{db::COLUMN_FAMILIES, Database, DhtError, Inbound, Keypair, NetworkConfig, Node};
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(30);

struct TestNode {
    node: Node,
    inbound: Option<Inbound>,
    addr: String,
    _dir: TempDir,
}

async fn start(bootstrap: &[&str], config: NetworkConfig) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), COLUMN_FAMILIES).unwrap();
    let config = NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: bootstrap.iter().map(|a| a.parse().unwrap()).collect(),
        ..config
    };
    let (node, inbound) = Node::start(config, Keypair::generate_ed25519(), db)
        .await
        .unwrap();
    let addr = wait("a listen address", || async {
        node.status().await.unwrap().listen_addrs.first().cloned()
    })
    .await;
    TestNode {
        node,
        inbound: Some(inbound),
        addr,
        _dir: dir,
    }
}

/// Polls `check` until it yields `Some`, panicking after the deadline.
async fn wait<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pair(config: NetworkConfig) -> (TestNode, TestNode) {
    let a = start(&[], config.clone()).await;
    let b = start(&[&a.addr], config).await;
    wait("the two nodes to find each other", || async {
        let (sa, sb) = (
            a.node.status().await.unwrap(),
            b.node.status().await.unwrap(),
        );
        (sa.routing_table_size == 1 && sb.routing_table_size == 1).then_some(())
    })
    .await;
    (a, b)
}

#[tokio::test]
async fn requests_are_answered_and_limits_hold() {
    let config = NetworkConfig {
        max_request_bytes: 1024,
        ..NetworkConfig::default()
    };
    let (a, mut b) = pair(config).await;
    let mut requests = b.inbound.take().unwrap().requests;
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            match request.decode::<String>() {
                Ok(text) => request.respond(&text.to_uppercase()).unwrap(),
                // A malformed body gets no answer, which fails the request at the peer.
                Err(e) => assert!(matches!(e, DhtError::Malformed { .. })),
            }
        }
    });
    let b_id = b.node.peer_id();

    let answer: String = a.node.request(b_id, &"hello".to_owned()).await.unwrap();
    assert_eq!(answer, "HELLO");

    let err = a
        .node
        .request::<_, String>(b_id, &"x".repeat(4096))
        .await
        .unwrap_err();
    assert!(matches!(err, DhtError::Request { .. }), "{err}");

    // Dropped unanswered, a request is refused at once, not left to its deadline.
    let err = a.node.request::<_, String>(b_id, &42u32).await.unwrap_err();
    assert!(matches!(err, DhtError::Request { .. }), "{err}");
    assert!(err.to_string().contains("without answering"), "{err}");

    // The peer is still serving after the bad requests.
    let answer: String = a.node.request(b_id, &"again".to_owned()).await.unwrap();
    assert_eq!(answer, "AGAIN");
}

#[tokio::test]
async fn a_channel_carries_many_requests_at_once_within_its_limit() {
    const PROTOCOL: &str = "/p3/test-channel/1.0.0";
    let (a, b) = pair(NetworkConfig::default()).await;
    let (to_b, _) = a.node.channel(PROTOCOL, 1024).unwrap();
    let (_, mut requests) = b.node.channel(PROTOCOL, 1024).unwrap();
    // One acceptor per protocol: a second channel of it is refused.
    assert!(b.node.channel(PROTOCOL, 1024).is_err());
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let Ok(n) = request.decode::<u32>() else {
                continue; // unanswered: the request fails at the peer
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Answered out of order: later requests overtake earlier ones.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(u64::from(50 - n % 50))).await;
                request.respond(&(n * 2)).unwrap();
            });
        }
    });
    let b_id = b.node.peer_id();
    let asks = (0..200u32).map(|n| {
        let to_b = to_b.clone();
        async move {
            let mut body = Vec::new();
            ciborium::into_writer(&n, &mut body).unwrap();
            let answer = to_b.request(b_id, body, DEADLINE).await.unwrap();
            let doubled: u32 = ciborium::from_reader(answer.as_slice()).unwrap();
            assert_eq!(doubled, n * 2, "the answer to request {n}");
        }
    });
    futures::future::join_all(asks).await;
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 200);

    let err = to_b
        .request(b_id, vec![0u8; 4096], DEADLINE)
        .await
        .unwrap_err();
    assert!(matches!(err, DhtError::Request { .. }), "{err}");
    // A malformed body goes unanswered and fails; the channel still serves.
    let err = to_b.request(b_id, vec![0xff], DEADLINE).await.unwrap_err();
    assert!(matches!(err, DhtError::Request { .. }), "{err}");
    assert!(err.to_string().contains("without answering"), "{err}");
    let mut body = Vec::new();
    ciborium::into_writer(&7u32, &mut body).unwrap();
    let answer = to_b.request(b_id, body, DEADLINE).await.unwrap();
    assert_eq!(
        ciborium::from_reader::<u32, _>(answer.as_slice()).unwrap(),
        14
    );
}

/// Frames larger than the stream's send window are written in parts (by a
/// task that holds the stream until the frame is out): many at once, both
/// ways, must arrive whole and unmixed.
#[tokio::test]
async fn large_frames_in_flight_together_arrive_whole() {
    const PROTOCOL: &str = "/p3/test-large/1.0.0";
    const LIMIT: u64 = 3 << 20;
    let (a, b) = pair(NetworkConfig::default()).await;
    let (to_b, _) = a.node.channel(PROTOCOL, LIMIT).unwrap();
    let (_, mut requests) = b.node.channel(PROTOCOL, LIMIT).unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            // The answer is the request reversed: as large, and checkable.
            let mut body = request.body.clone();
            body.reverse();
            let _ = request.respond(&serde_bytes::ByteBuf::from(body));
        }
    });
    let b_id = b.node.peer_id();
    let asks = (0..8u8).map(|n| {
        let to_b = to_b.clone();
        async move {
            let size = (1 << 20) + usize::from(n) * 100_003;
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8 ^ n).collect();
            let answer = to_b.request(b_id, body.clone(), DEADLINE).await.unwrap();
            let answer: serde_bytes::ByteBuf = ciborium::from_reader(answer.as_slice()).unwrap();
            let mut want = body;
            want.reverse();
            assert!(
                answer.into_vec() == want,
                "request {n} of {size} bytes came back changed"
            );
        }
    });
    futures::future::join_all(asks).await;
}

#[tokio::test]
async fn gossip_reaches_subscribers() {
    let (a, b) = pair(NetworkConfig {
        gossip: true,
        ..NetworkConfig::default()
    })
    .await;
    let mut messages = a.node.subscribe("events").await.unwrap();
    let _b_sub = b.node.subscribe("events").await.unwrap();
    // Publishing fails until b has heard of a's subscription; that is a real condition.
    wait("gossipsub to know a subscriber", || async {
        b.node.publish("events", b"put x".to_vec()).await.ok()
    })
    .await;
    let message = tokio::time::timeout(DEADLINE, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.data, b"put x");
    assert_eq!(message.source, Some(b.node.peer_id()));
    assert_eq!(message.topic, "events");
}

#[tokio::test]
async fn a_node_without_gossip_refuses_topics_and_still_serves_requests() {
    let (a, b) = pair(NetworkConfig::default()).await;
    for refused in [
        a.node.subscribe("events").await.map(drop),
        a.node.publish("events", b"put x".to_vec()).await,
    ] {
        match refused {
            Err(DhtError::Gossip(reason)) => assert!(reason.contains("gossip is off"), "{reason}"),
            other => panic!("gossip without gossipsub: {other:?}"),
        }
    }
    // The connection carries everything else.
    let key = vec![0x1e, 0x21, 7, 7, 7];
    a.node.start_providing(key.clone()).await.unwrap();
    let providers = b.node.providers(key).await.unwrap();
    assert!(providers.contains(&a.node.peer_id()), "{providers:?}");
}

#[tokio::test]
async fn provider_records_are_found_by_other_nodes() {
    let (a, b) = pair(NetworkConfig::default()).await;
    let key = vec![0x1e, 0x20, 7, 7, 7];
    a.node.start_providing(key.clone()).await.unwrap();
    let providers = b.node.providers(key).await.unwrap();
    assert!(providers.contains(&a.node.peer_id()), "{providers:?}");
}

#[tokio::test]
async fn closest_peers_include_self_and_are_ordered() {
    let (a, b) = pair(NetworkConfig::default()).await;
    let from_a = a.node.closest_peers(b"key".to_vec()).await.unwrap();
    let from_b = b.node.closest_peers(b"key".to_vec()).await.unwrap();
    assert_eq!(from_a.len(), 2);
    assert_eq!(from_a, from_b);
    assert!(from_a.contains(&a.node.peer_id()) && from_a.contains(&b.node.peer_id()));
}

#[tokio::test]
async fn listening_on_a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), COLUMN_FAMILIES).unwrap();
    let config = NetworkConfig {
        listen: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()],
        ..NetworkConfig::default()
    };
    let err = Node::start(config, Keypair::generate_ed25519(), db)
        .await
        .unwrap_err();
    assert!(matches!(err, DhtError::Listen { .. }), "{err}");
    assert!(err.to_string().contains(&port.to_string()));
}
