//! P³ speaks the standard Kademlia wire protocol: a plain rust-libp2p peer that
//! knows nothing of P³ except the protocol id joins the DHT of a running cluster.

mod common;

use std::path::PathBuf;

use common::{p3ctl_json, wait_for, Cluster, DEADLINE};
use futures::StreamExt;
use libp2p::{
    identify, identity, kad,
    kad::{store::MemoryStore, Mode, QueryResult},
    multiaddr::Protocol,
    noise, ping,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, PeerId, StreamProtocol, SwarmBuilder,
};

#[derive(NetworkBehaviour)]
struct Plain {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_libp2p_kademlia_peer_joins_the_dht() {
    let cluster = tokio::task::block_in_place(|| {
        let cluster = Cluster::start(3);
        cluster.wait_formed();
        cluster
    });

    let key = identity::Keypair::generate_ed25519();
    let local = key.public().to_peer_id();
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| Plain {
            kad: kad::Behaviour::with_config(
                key.public().to_peer_id(),
                MemoryStore::new(key.public().to_peer_id()),
                kad::Config::new(StreamProtocol::new("/p3/kad/1.0.0")),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                "/plain/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
        })
        .unwrap()
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    swarm.behaviour_mut().kad.set_mode(Some(Mode::Server));

    let seed: Multiaddr = cluster.nodes[0].addr.parse().unwrap();
    let Some(Protocol::P2p(seed_peer)) = seed.iter().last() else {
        panic!("seed address without /p2p")
    };
    let seed_addr: Multiaddr = seed
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    swarm.behaviour_mut().kad.add_address(&seed_peer, seed_addr);

    // The plain peer finds every P³ node through a standard closest-peers query.
    let query = swarm
        .behaviour_mut()
        .kad
        .get_closest_peers(b"interop".to_vec());
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            if let SwarmEvent::Behaviour(PlainEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::GetClosestPeers(result),
                ..
            })) = swarm.select_next_some().await
            {
                if id == query {
                    break result.expect("closest-peers query failed").peers;
                }
            }
        }
    })
    .await
    .expect("closest-peers query did not finish");
    let found: Vec<PeerId> = found.into_iter().map(|p| p.peer_id).collect();
    for node in &cluster.nodes {
        assert!(
            found.contains(&node.peer_id.parse().unwrap()),
            "plain peer did not find {}",
            node.peer_id
        );
    }

    // And every P³ node admits the plain peer to its routing table (learned
    // through identify), while the plain peer keeps running.
    let dirs: Vec<PathBuf> = cluster.nodes.iter().map(|n| n.dir.clone()).collect();
    let local_id = local.to_string();
    let mut admitted = tokio::task::spawn_blocking(move || {
        for dir in dirs {
            wait_for(
                "a P³ node to add the plain peer to its routing table",
                DEADLINE,
                || {
                    let peers = p3ctl_json(&dir, &["peers"])?;
                    peers
                        .as_array()?
                        .iter()
                        .any(|p| p["peer_id"] == local_id.as_str() && p["in_routing_table"] == true)
                        .then_some(())
                },
            );
        }
    });
    loop {
        tokio::select! {
            result = &mut admitted => { result.expect("routing-table check failed"); break; }
            _ = swarm.select_next_some() => {}
        }
    }

    // Content: after a put, the plain peer finds the nodes that hold the value
    // through standard provider records under the multihash key 0x1e 0x20 ‖ blake3.
    // (Values up to 64 KiB travel inside P³'s messages and are not announced.)
    let value = b"content any Kademlia peer can locate. ".repeat(2000);
    let hash = blake3::hash(&value);
    let dir = cluster.nodes[0].dir.clone();
    let mut put = tokio::task::spawn_blocking(move || {
        let file = dir.join("value");
        std::fs::write(&file, value).unwrap();
        let out = common::p3ctl(&dir, &["put", "global/located", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    loop {
        tokio::select! {
            result = &mut put => { result.expect("put failed"); break; }
            _ = swarm.select_next_some() => {}
        }
    }
    let mut key = vec![0x1e, 0x20];
    key.extend_from_slice(hash.as_bytes());
    let holders: Vec<PeerId> = cluster
        .nodes
        .iter()
        .map(|n| n.peer_id.parse().unwrap())
        .collect();
    let mut providers = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    // Announcements are made in the background after the put; ask until every
    // holder (all three nodes own the object) has announced itself.
    while !holders.iter().all(|h| providers.contains(h)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "providers of {hash} found: {providers:?}, expected all of {holders:?}"
        );
        let query = swarm.behaviour_mut().kad.get_providers(key.clone().into());
        loop {
            if let SwarmEvent::Behaviour(PlainEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::GetProviders(result),
                step,
                ..
            })) = swarm.select_next_some().await
            {
                if id != query {
                    continue;
                }
                if let Ok(kad::GetProvidersOk::FoundProviders {
                    providers: found, ..
                }) = result
                {
                    providers.extend(found);
                }
                if step.last {
                    break;
                }
            }
        }
    }
}
