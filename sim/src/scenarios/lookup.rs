//! Lookups: Kademlia queries for the peers closest to random keys, from
//! random nodes, counted in requests; and the same lookups replayed over
//! the nodes' routing tables ([`crate::hops`]), counted in rounds. (A key's owners themselves come from
//! the membership map every node holds, with no message at all; these
//! lookups are what the DHT costs a node that does not hold the map.)

use std::collections::HashMap;

use p3_dht::PeerId;

use rand::{rngs::StdRng, seq::IteratorRandom, Rng};
use serde::Serialize;

use crate::{cluster::Cluster, config::SimConfig, hops, report::Spread};

/// What lookups cost.
#[derive(Debug, Clone, Serialize)]
pub struct Lookups {
    /// Lookups that answered.
    pub answered: usize,
    /// Lookups that failed.
    pub failed: usize,
    /// Requests each lookup sent.
    pub requests: Spread,
    /// Time each lookup took, ms.
    pub ms: Spread,
    /// Rounds each lookup needs to know the key's R closest peers, replayed
    /// over the routing tables the nodes held ([`crate::hops`]).
    pub hops: Spread,
    /// Replayed lookups that ran out of peers before knowing all R.
    pub hops_unfound: usize,
    /// log₂ N / 2 + 2: the bound on hops.
    pub hop_bound: f64,
}

/// Runs `config.lookups` lookups.
pub async fn run(cluster: &Cluster, config: &SimConfig, rng: &mut StdRng) -> Lookups {
    let tables = routing_tables(cluster).await;
    let mut requests = Vec::new();
    let mut times = Vec::new();
    let mut rounds = Vec::new();
    let mut hops_unfound = 0;
    let mut failed = 0;
    for _ in 0..config.lookups {
        let Some(node) = cluster.up().choose(rng).and_then(|n| n.network()) else {
            failed += 1;
            continue;
        };
        let key: [u8; 32] = rng.gen();
        match hops::hops(&tables, node.peer_id(), &key, config.replicas) {
            Some(n) => rounds.push(n as f64),
            None => hops_unfound += 1,
        }
        let start = config.dilation.stopwatch();
        match node.lookup(key.to_vec()).await {
            Ok(lookup) => {
                times.push(start.ms());
                requests.push(f64::from(lookup.requests));
            }
            Err(e) => {
                tracing::warn!(error = %e, "lookup failed");
                failed += 1;
            }
        }
    }
    let n = cluster.up().count().max(1) as f64;
    Lookups {
        answered: requests.len(),
        failed,
        requests: Spread::of(&requests),
        ms: Spread::of(&times),
        hops: Spread::of(&rounds),
        hops_unfound,
        hop_bound: n.log2() / 2.0 + 2.0,
    }
}

/// Each running node's Kademlia routing table.
async fn routing_tables(cluster: &Cluster) -> HashMap<PeerId, Vec<PeerId>> {
    let mut tables = HashMap::new();
    for node in cluster.up().filter_map(|n| n.network()) {
        let Ok(peers) = node.peers().await else {
            continue;
        };
        let table = peers
            .iter()
            .filter(|p| p.in_routing_table)
            .filter_map(|p| p.peer_id.parse().ok())
            .collect();
        tables.insert(node.peer_id(), table);
    }
    tables
}
