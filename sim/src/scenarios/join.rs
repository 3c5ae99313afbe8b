//! Join: N nodes start one after another, each bootstrapping from the
//! seeds, and each start is timed until the node is a member.

use std::time::Duration;

use serde::Serialize;

use crate::{cluster::Cluster, config::SimConfig, report::Spread, SimError};

/// What joining cost.
#[derive(Debug, Clone, Serialize)]
pub struct Join {
    /// Nodes started.
    pub nodes: usize,
    /// From the first start to the last node being a member, seconds.
    pub total_s: f64,
    /// Time from a node's start to its membership, ms.
    pub join_ms: Spread,
    /// KiB sent over all connections while one node joined (its own join,
    /// and the background traffic of the nodes already running).
    pub kib_per_join: Spread,
    /// From the last join until every node holds the same map, seconds.
    pub settle_s: Option<f64>,
    /// Times the nodes took the map whole (a Raft snapshot or a renewal's
    /// answer) because they were too far behind for the changes: every new
    /// member once the group's epoch is past the window.
    pub maps_whole: u64,
}

/// Starts `config.nodes` nodes in `cluster`, one after another.
pub async fn run(cluster: &mut Cluster, config: &SimConfig) -> Result<Join, SimError> {
    let start = config.dilation.stopwatch();
    let mut times = Vec::with_capacity(config.nodes);
    let mut sent = Vec::with_capacity(config.nodes);
    for i in 0..config.nodes {
        let before = p3_dht::memory::bytes_sent();
        let took = cluster.add().await?;
        times.push(took.as_secs_f64() * 1e3);
        sent.push((p3_dht::memory::bytes_sent() - before) as f64 / 1024.0);
        if (i + 1) % 100 == 0 {
            tracing::info!(nodes = i + 1, "joined so far");
        }
    }
    let total = start.elapsed();
    let settle = cluster.settle(config.settle_deadline).await;
    Ok(Join {
        nodes: config.nodes,
        total_s: total.as_secs_f64(),
        join_ms: Spread::of(&times),
        kib_per_join: Spread::of(&sent),
        settle_s: settle.map(|d: Duration| d.as_secs_f64()),
        maps_whole: cluster
            .up()
            .filter_map(crate::node::SimNode::membership)
            .map(p3_membership::Membership::maps_whole)
            .sum(),
    })
}
