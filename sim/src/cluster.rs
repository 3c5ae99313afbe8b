//! The nodes of a simulation: starting, failing and restarting them, and
//! what they agree on.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use p3_dht::{Multiaddr, PeerId};
use p3_membership::{placement, Map};

use crate::{
    node::{Crashed, NodeSettings, SimNode},
    SimError,
};

/// How often a condition over all nodes is checked while it is awaited.
const POLL: Duration = Duration::from_millis(50);

/// The nodes of one simulation.
pub struct Cluster {
    nodes: Vec<SimNode>,
    settings: NodeSettings,
    seeds: usize,
    root: PathBuf,
}

impl Cluster {
    /// An empty cluster whose nodes keep their data under `root`; the first
    /// `seeds` running nodes are the ones a starting node bootstraps from.
    pub fn new(root: &Path, settings: NodeSettings, seeds: usize) -> Self {
        Self {
            nodes: Vec::new(),
            settings,
            seeds,
            root: root.to_owned(),
        }
    }

    /// Every node, running or not.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// The running nodes.
    pub fn up(&self) -> impl Iterator<Item = &SimNode> {
        self.nodes.iter().filter(|n| n.is_up())
    }

    /// Starts one more node and returns once it is a member: the time that took.
    pub async fn add(&mut self) -> Result<Duration, SimError> {
        let index = self.nodes.len();
        let dir = self.root.join(format!("node-{index}"));
        std::fs::create_dir_all(&dir)?;
        self.nodes.push(SimNode::new(index, dir));
        self.start(index).await
    }

    /// Fails the nodes of `indexes` at once (those that run); their tasks
    /// stop while the returned shutdowns run.
    pub fn crash(&mut self, indexes: &[usize]) -> Vec<Crashed> {
        indexes
            .iter()
            .filter_map(|&i| self.nodes.get_mut(i).and_then(SimNode::crash))
            .collect()
    }

    /// Starts node `index` again (or for the first time) with its identity
    /// and data, and returns once it is a member.
    pub async fn start(&mut self, index: usize) -> Result<Duration, SimError> {
        let seeds = self.seed_addrs(&[index]);
        // The very first node founds the group; every later start, the
        // first node's restarts included, joins the group through a seed.
        let found = index == 0 && !self.root_founded();
        let settings = self.settings.clone();
        let node = self
            .nodes
            .get_mut(index)
            .ok_or_else(|| SimError::Invalid(format!("no node {index}")))?;
        node.start(seeds, found, &settings).await
    }

    /// Starts the nodes of `indexes` again, all at once, and returns once
    /// each is a member or failed to become one.
    pub async fn restart(&mut self, indexes: &[usize]) -> Vec<(usize, Result<Duration, SimError>)> {
        let seeds = self.seed_addrs(indexes);
        let settings = self.settings.clone();
        let starts = self
            .nodes
            .iter_mut()
            .filter(|n| indexes.contains(&n.index) && !n.is_up())
            .map(|n| {
                let (seeds, settings) = (seeds.clone(), &settings);
                async move { (n.index, n.start(seeds, false, settings).await) }
            });
        futures::future::join_all(starts).await
    }

    /// Whether the group was founded already (node 0 started once).
    fn root_founded(&self) -> bool {
        self.root.join("node-0").join("db").exists()
    }

    /// Addresses of up to `seeds` running nodes not in `starting`, the
    /// oldest first (the seeds of a real network are its long-lived nodes).
    fn seed_addrs(&self, starting: &[usize]) -> Vec<Multiaddr> {
        self.up()
            .filter(|n| !starting.contains(&n.index))
            .filter_map(SimNode::addr)
            .take(self.seeds)
            .collect()
    }

    /// The peer ids of the running nodes.
    pub fn up_peers(&self) -> BTreeSet<PeerId> {
        self.up().map(SimNode::peer).collect()
    }

    /// Whether every running node holds the same map, whose members are
    /// exactly the running nodes.
    pub fn settled(&self) -> bool {
        let up = self.up_peers();
        let mut epochs = BTreeSet::new();
        for node in self.up() {
            let Some(membership) = node.membership() else {
                return false;
            };
            let map = membership.map();
            let members: BTreeSet<PeerId> = map.members().map(|(p, _)| *p).collect();
            if members != up {
                return false;
            }
            epochs.insert(map.epoch());
        }
        epochs.len() <= 1
    }

    /// Waits until [`Cluster::settled`] holds, at most `deadline`; the time
    /// it took, or `None` if it did not settle (both simulated time).
    pub async fn settle(&self, deadline: Duration) -> Option<Duration> {
        let start = self.settings.dilation.stopwatch();
        loop {
            if self.settled() {
                return Some(start.elapsed());
            }
            if start.elapsed() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The fraction of `keys` on which every running node names the same
    /// owners.
    pub fn agreement(&self, keys: &[[u8; 32]]) -> f64 {
        if keys.is_empty() {
            return 1.0;
        }
        // Nodes holding equal maps name the same owners (placement is a pure
        // function of the map): compare the distinct maps only.
        let mut maps: Vec<std::sync::Arc<Map>> = Vec::new();
        for map in self.up().filter_map(SimNode::membership).map(|m| m.map()) {
            if !maps.contains(&map) {
                maps.push(map);
            }
        }
        if maps.len() <= 1 {
            return 1.0;
        }
        let replicas = self.settings.replicas;
        let agreed = keys
            .iter()
            .filter(|key| {
                let mut owners = maps
                    .iter()
                    .map(|m| placement::owners(m, &key[..], replicas));
                match owners.next() {
                    Some(first) => owners.all(|o| o == first),
                    None => true,
                }
            })
            .count();
        agreed as f64 / keys.len() as f64
    }

    /// Fails every running node, the newest first.
    pub async fn stop(&mut self) {
        for node in self.nodes.iter_mut().rev() {
            node.fail().await;
        }
    }
}
