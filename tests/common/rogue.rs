//! A bare libp2p peer for tests of what nodes do with peers' messages: a P³
//! peer to the nodes (so it may be asked things, as an owner), driven by the
//! test, that refuses everything it is asked at once, as the network layer
//! does for a dropped request.

use std::{path::Path, time::Duration};

use p3::dht::{db::COLUMN_FAMILIES, Database, Keypair, NetworkConfig, Node};

/// Starts the peer on 127.0.0.1 with its database under `root`, joined
/// through `seed` (a node's address with `/p2p/PEERID`).
pub async fn start(root: &Path, seed: &str) -> Node {
    let db = Database::open(&root.join("peer-db"), COLUMN_FAMILIES).unwrap();
    let config = NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![seed.parse().unwrap()],
        // Its parked lock requests may wait at a node for minutes.
        request_timeout: Duration::from_secs(300),
        ..NetworkConfig::default()
    };
    let (node, mut inbound) = Node::start(config, Keypair::generate_ed25519(), db)
        .await
        .unwrap();
    tokio::spawn(async move { while inbound.requests.recv().await.is_some() {} });
    node
}
