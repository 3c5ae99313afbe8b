//! Lookups: Kademlia queries for the peers closest to random keys, from
//! random nodes, counted in requests. (A key's owners themselves come from
//! the membership map every node holds, with no message at all; these
//! lookups are what the DHT costs a node that does not hold the map.)

use std::time::Instant;

use rand::{rngs::StdRng, seq::IteratorRandom, Rng};
use serde::Serialize;

use crate::{cluster::Cluster, config::SimConfig, report::Spread};

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
    /// log₂ N / 2 + 2: the bound on hops.
    pub hop_bound: f64,
}

/// Runs `config.lookups` lookups.
pub async fn run(cluster: &Cluster, config: &SimConfig, rng: &mut StdRng) -> Lookups {
    let mut requests = Vec::new();
    let mut times = Vec::new();
    let mut failed = 0;
    for _ in 0..config.lookups {
        let Some(node) = cluster.up().choose(rng).and_then(|n| n.network()) else {
            failed += 1;
            continue;
        };
        let key: [u8; 32] = rng.gen();
        let start = Instant::now();
        match node.lookup(key.to_vec()).await {
            Ok(lookup) => {
                times.push(start.elapsed().as_secs_f64() * 1e3);
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
        hop_bound: n.log2() / 2.0 + 2.0,
    }
}
