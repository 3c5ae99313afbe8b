//! The settings of a simulation: their one home, checked before anything
//! starts.

use std::{path::PathBuf, time::Duration};

use crate::{clock::Dilation, SimError};

/// What to simulate. Its durations are simulated time ([`Dilation`]).
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes started.
    pub nodes: usize,
    /// The first nodes, which the others bootstrap from.
    pub seeds: usize,
    /// Owners per object (R).
    pub replicas: usize,
    /// Random keys whose owners every node is asked for (agreement).
    pub keys: usize,
    /// Kademlia lookups of random keys from random nodes.
    pub lookups: usize,
    /// Rounds of churn.
    pub rounds: usize,
    /// Probability that a running node fails in a round (Kwan & Reed's
    /// p_f = 0.022).
    pub p_fail: f64,
    /// Objects written per round of churn.
    pub writes: usize,
    /// How long the cluster gets to settle after a change before it counts
    /// as not settling.
    pub settle_deadline: Duration,
    /// How long a starting node may take to join.
    pub join_deadline: Duration,
    /// Each node's network failure timeout (`[network] failure_timeout_ms`):
    /// every connection is pinged three times in it.
    pub failure_timeout: Duration,
    /// Which peers each node keeps connections to (`[network] connections`).
    pub connections: p3_dht::Connections,
    /// How long an unused connection (and, on demand, request stream) lives
    /// (`[network] idle_connection_timeout_secs`).
    pub idle: Duration,
    /// How often each node refreshes its Kademlia table with lookups
    /// (`[network] refresh_interval_secs`).
    pub refresh: Duration,
    /// How long the settled cluster is watched (connections sampled, CPU
    /// and traffic over the window); zero: not at all.
    pub watch: Duration,
    /// Raft entries each node applies between snapshots of its map.
    pub snapshot_every: u64,
    /// Members per relay of lease renewals (0: every member renews with
    /// the leader).
    pub members_per_relay: usize,
    /// How much slower than real time every node's timers run.
    pub dilation: Dilation,
    /// Seed of the random choices (which node fails, which node serves an
    /// operation), so a run can be repeated.
    pub seed: u64,
    /// Where the nodes keep their databases (a temporary directory,
    /// removed at the end, if `None`).
    pub data_dir: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 50,
            seeds: 3,
            replicas: 3,
            keys: 1000,
            lookups: 100,
            rounds: 10,
            p_fail: 0.022,
            writes: 20,
            settle_deadline: Duration::from_secs(60),
            join_deadline: Duration::from_secs(30),
            failure_timeout: p3_dht::NetworkConfig::default().failure_timeout,
            connections: p3_dht::Connections::All,
            idle: p3_dht::NetworkConfig::default().idle_connection_timeout,
            refresh: p3_dht::NetworkConfig::default().refresh_interval,
            snapshot_every: p3_membership::DEFAULT_SNAPSHOT_EVERY,
            members_per_relay: p3_membership::DEFAULT_MEMBERS_PER_RELAY,
            watch: Duration::ZERO,
            dilation: Dilation::default(),
            seed: 1,
            data_dir: None,
        }
    }
}

impl SimConfig {
    /// Checks that the settings make a simulation.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |what: &str| Err(SimError::Invalid(what.to_owned()));
        if self.nodes == 0 {
            return invalid("--nodes must be at least 1");
        }
        if self.seeds == 0 {
            return invalid("--seeds must be at least 1");
        }
        if self.replicas == 0 {
            return invalid("--replicas must be at least 1");
        }
        if !(0.0..1.0).contains(&self.p_fail) {
            return invalid("--p-fail must be in [0, 1)");
        }
        if self.settle_deadline.is_zero() || self.join_deadline.is_zero() {
            return invalid("deadlines must be above zero");
        }
        if self.snapshot_every < p3_membership::MIN_SNAPSHOT_EVERY {
            return invalid(&format!(
                "--map-snapshot-every must be at least {}",
                p3_membership::MIN_SNAPSHOT_EVERY
            ));
        }
        if self.refresh.is_zero() {
            return invalid("--refresh-secs must be above zero");
        }
        if self.idle.is_zero() {
            return invalid("--idle-ms must be above zero");
        }
        if self.failure_timeout < p3_dht::MIN_FAILURE_TIMEOUT {
            let floor = p3_dht::MIN_FAILURE_TIMEOUT.as_millis();
            return invalid(&format!("--failure-timeout-ms must be at least {floor}"));
        }
        Ok(())
    }
}
