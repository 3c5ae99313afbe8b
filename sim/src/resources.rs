//! What the nodes hold: memory of the process, connections, routing-table
//! entries and map sizes per node.

use std::time::Duration;

use serde::Serialize;

use crate::{clock::Dilation, cluster::Cluster, node::SimNode};

/// Resources per node, over the running nodes.
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// Running nodes measured.
    pub nodes: usize,
    /// Resident memory of the whole process divided by the running nodes, MiB.
    pub rss_mib_per_node: f64,
    /// Open connections per node: mean and most.
    pub connections_mean: f64,
    /// See `connections_mean`.
    pub connections_max: usize,
    /// The most connections by a node's role in lease renewals: the
    /// membership leader, a relay (a node some member renewed through
    /// last), and every other node.
    pub connections_max_by_role: ByRole,
    /// Kademlia routing-table entries per node: mean and most.
    pub routing_mean: f64,
    /// See `routing_mean`.
    pub routing_max: usize,
    /// Members in each node's map (every node holds the whole map today).
    pub map_members_max: usize,
    /// CPU the whole process used while the settled cluster did nothing but
    /// keep itself up (leases, Raft, Kademlia, gossip), in cores (CPU
    /// seconds per simulated second).
    pub idle_cores: f64,
    /// Bytes each node sent per second over the same idle window (mean).
    pub idle_bytes_per_node_s: f64,
}

/// A figure per role in lease renewals ([`Resources::connections_max_by_role`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ByRole {
    /// The membership leader.
    pub leader: usize,
    /// The busiest relay (0 without relays).
    pub relay: usize,
    /// The busiest of the other nodes.
    pub other: usize,
}

/// How long idle CPU is measured (simulated time).
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// Measures the running nodes of `cluster`.
pub async fn measure(cluster: &Cluster, dilation: Dilation) -> Resources {
    let (before, sent_before) = (cpu_seconds(), p3_dht::memory::bytes_sent());
    tokio::time::sleep(dilation.real(IDLE_WINDOW)).await;
    let idle_cores = (cpu_seconds() - before) / IDLE_WINDOW.as_secs_f64();
    let idle_sent = p3_dht::memory::bytes_sent().saturating_sub(sent_before);
    let mut connections = Vec::new();
    let mut routing = Vec::new();
    let mut map_members = 0;
    // (peer id, connections, whether it leads), and the relays renewed through.
    let mut roles = Vec::new();
    let mut relays = std::collections::BTreeSet::new();
    for node in cluster.up() {
        let membership = node.membership().map(|m| m.status());
        if let Some(status) = status(node).await {
            connections.push(status.connected_peers);
            routing.push(status.routing_table_size);
            let peer = status.peer_id.clone();
            let leads = membership
                .as_ref()
                .is_some_and(|m| m.leader.as_ref() == Some(&peer));
            roles.push((peer, status.connected_peers, leads));
        }
        if let Some(m) = membership {
            map_members = map_members.max(m.members.len());
            relays.extend(m.relay);
        }
    }
    let mut by_role = ByRole::default();
    for (peer, count, leads) in roles {
        let most = if leads {
            &mut by_role.leader
        } else if relays.contains(&peer) {
            &mut by_role.relay
        } else {
            &mut by_role.other
        };
        *most = (*most).max(count);
    }
    let nodes = cluster.up().count();
    Resources {
        nodes,
        rss_mib_per_node: rss_bytes() as f64 / (1 << 20) as f64 / nodes.max(1) as f64,
        connections_mean: mean(&connections),
        connections_max: connections.iter().copied().max().unwrap_or(0),
        connections_max_by_role: by_role,
        routing_mean: mean(&routing),
        routing_max: routing.iter().copied().max().unwrap_or(0),
        map_members_max: map_members,
        idle_cores,
        idle_bytes_per_node_s: idle_sent as f64 / IDLE_WINDOW.as_secs_f64() / nodes.max(1) as f64,
    }
}

/// Connections and CPU of the settled cluster over a longer window, sampled:
/// connections on demand come and go with periodic work (a Kademlia table
/// refresh dials most of the table), which one sample can miss.
#[derive(Debug, Clone, Serialize)]
pub struct Watched {
    /// How long the cluster was watched, simulated seconds.
    pub secs: f64,
    /// Samples taken.
    pub samples: usize,
    /// Open connections per node, averaged over nodes and then samples.
    pub connections_mean: f64,
    /// The highest per-node mean of any one sample.
    pub connections_peak: f64,
    /// CPU the whole process used over the window, in cores (CPU seconds
    /// per simulated second).
    pub cores: f64,
    /// Bytes each node sent per second over the window (mean).
    pub bytes_per_node_s: f64,
}

/// How often [`watch`] samples the connections (simulated time).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Watches the running nodes of `cluster` for `window` (simulated time).
pub async fn watch(cluster: &Cluster, window: Duration, dilation: Dilation) -> Watched {
    let start = dilation.stopwatch();
    let (before, sent_before) = (cpu_seconds(), p3_dht::memory::bytes_sent());
    let mut means = Vec::new();
    while start.elapsed() < window {
        let next = SAMPLE_EVERY.min(window.saturating_sub(start.elapsed()));
        tokio::time::sleep(dilation.real(next)).await;
        let mut connections = Vec::new();
        for node in cluster.up() {
            if let Some(status) = status(node).await {
                connections.push(status.connected_peers);
            }
        }
        means.push(mean(&connections));
    }
    let secs = start.secs();
    let nodes = cluster.up().count().max(1) as f64;
    let sent = p3_dht::memory::bytes_sent().saturating_sub(sent_before) as f64;
    Watched {
        secs,
        samples: means.len(),
        connections_mean: means.iter().sum::<f64>() / means.len().max(1) as f64,
        connections_peak: means.iter().copied().fold(0.0, f64::max),
        cores: (cpu_seconds() - before) / secs,
        bytes_per_node_s: sent / secs / nodes,
    }
}

async fn status(node: &SimNode) -> Option<p3_dht::NodeStatus> {
    node.network()?.status().await.ok()
}

fn mean(values: &[usize]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<usize>() as f64 / values.len() as f64
}

/// The process's resident memory (Linux: `/proc/self/status`), 0 where
/// it cannot be read.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// User and system CPU time of the process so far (Linux: `/proc/self/stat`,
/// in clock ticks of 1/100 s, the kernel's USER_HZ), 0 where it cannot be read.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces, so cut at its ')').
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, the 12th and 13th after ')'.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}
