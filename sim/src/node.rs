//! One simulated node: the node `p3ctl node start` runs (network,
//! membership, object space), on a Tokio runtime of its own. Failing it
//! shuts that runtime down, which drops every task the node started, its
//! connections and its database at once, as killing its process would.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use p3_dht::{Database, Keypair, Multiaddr, NetworkConfig, Node, PeerId};
use p3_membership::{LeaseTimes, Membership, MembershipConfig};
use p3_objectspace::{
    service,
    store::{self, Store},
    Local, ObjectSpace, SpaceConfig,
};
use tokio::runtime::Runtime;

use crate::{clock::Dilation, SimError};

/// Memory-transport ports are never reused in a process: libp2p's memory
/// transport keeps a port registered after its listener is dropped, so a
/// node that restarts listens on a new one, as a restarted process on port
/// 0 would.
static NEXT_PORT: AtomicU64 = AtomicU64::new(1);

/// How long a node that restarts waits for its previous run to let go of
/// its database.
const REOPEN_DEADLINE: Duration = Duration::from_secs(10);

/// How a simulated node runs. Its durations are simulated time; the node's
/// timers are set to their real equivalents ([`Dilation::real`]).
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// How much slower than real time the node's timers run.
    pub dilation: Dilation,
    /// Owners per object (R).
    pub replicas: usize,
    /// How long a starting node waits to be a member before it counts as
    /// failed to join.
    pub join_deadline: Duration,
    /// Bytes of fetched blobs each node keeps as a cache.
    pub cache_bytes: u64,
    /// The network's failure timeout (pings every third of it on every
    /// connection).
    pub failure_timeout: Duration,
    /// Which peers a node keeps connections to.
    pub connections: p3_dht::Connections,
    /// How long an unused connection lives.
    pub idle: Duration,
    /// How often the Kademlia table is refreshed.
    pub refresh: Duration,
    /// Raft entries between snapshots of the map.
    pub snapshot_every: u64,
    /// Members per relay of lease renewals (0: none).
    pub members_per_relay: usize,
}

impl NodeSettings {
    /// The node's network settings: every timer, the defaults' included,
    /// `dilation` times slower.
    fn network(&self, listen: Vec<Multiaddr>, bootstrap: Vec<Multiaddr>) -> NetworkConfig {
        let real = |simulated| self.dilation.real(simulated);
        let defaults = NetworkConfig::default();
        NetworkConfig {
            listen,
            bootstrap,
            failure_timeout: real(self.failure_timeout),
            connections: self.connections,
            idle_connection_timeout: real(self.idle),
            refresh_interval: real(self.refresh),
            reconnect_interval: real(defaults.reconnect_interval),
            query_timeout: real(defaults.query_timeout),
            request_timeout: real(defaults.request_timeout),
            ..defaults
        }
    }

    /// The node's membership settings: the default lease, dilated (every
    /// other membership period is a fraction of it).
    fn membership(&self, found: bool) -> MembershipConfig {
        let lease = LeaseTimes::default();
        MembershipConfig {
            times: LeaseTimes {
                lease: self.dilation.real(lease.lease),
                drift: self.dilation.real(lease.drift),
            },
            found,
            status_file: None,
            snapshot_every: self.snapshot_every,
            members_per_relay: self.members_per_relay,
        }
    }

    /// The node's object-space settings, its periods dilated.
    fn space(&self) -> SpaceConfig {
        let defaults = SpaceConfig::default();
        SpaceConfig {
            replicas: self.replicas,
            cache_bytes: self.cache_bytes,
            repair_interval: self.dilation.real(defaults.repair_interval),
            rpc_timeout: self.dilation.real(defaults.rpc_timeout),
            ..defaults
        }
    }
}

/// A node of the simulation: its identity and data survive a failure.
pub struct SimNode {
    /// Its place in the cluster, in order of first start.
    pub index: usize,
    key: Keypair,
    peer: PeerId,
    dir: PathBuf,
    running: Option<Running>,
}

struct Running {
    runtime: Runtime,
    addr: Multiaddr,
    node: Node,
    membership: Membership,
    local: Local,
}

impl SimNode {
    /// A node that has not started yet, its data under `dir`.
    pub fn new(index: usize, dir: PathBuf) -> Self {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        Self {
            index,
            key,
            peer,
            dir,
            running: None,
        }
    }

    /// Its peer id.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Whether it runs.
    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// The address other nodes bootstrap from, while it runs.
    pub fn addr(&self) -> Option<Multiaddr> {
        self.running.as_ref().map(|r| r.addr.clone())
    }

    /// Its membership layer, while it runs.
    pub fn membership(&self) -> Option<&Membership> {
        self.running.as_ref().map(|r| &r.membership)
    }

    /// Its network handle, while it runs.
    pub fn network(&self) -> Option<&Node> {
        self.running.as_ref().map(|r| &r.node)
    }

    /// Starts it, bootstrapping from `seeds` (founding the group if `found`),
    /// and returns once it is a member: the (simulated) time that took.
    pub async fn start(
        &mut self,
        seeds: Vec<Multiaddr>,
        found: bool,
        settings: &NodeSettings,
    ) -> Result<Duration, SimError> {
        if self.running.is_some() {
            return Ok(Duration::ZERO);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(8)
            .thread_keep_alive(Duration::from_secs(1))
            .thread_name(format!("p3sim-{}", self.index))
            .enable_all()
            .build()
            .map_err(SimError::Runtime)?;
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let parse = |text: String| {
            text.parse::<Multiaddr>()
                .map_err(|e| SimError::Invalid(format!("{text}: {e}")))
        };
        let listen = parse(format!("/memory/{port}"))?;
        let addr = parse(format!("/memory/{port}/p2p/{}", self.peer))?;
        let boot = Boot {
            key: self.key.clone(),
            db: self.dir.join("db"),
            listen,
            seeds,
            found,
            settings: settings.clone(),
        };
        let started = settings.dilation.stopwatch();
        let booted = runtime.spawn(boot.run()).await;
        let (node, membership, local) = match booted {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                shut_down(runtime).await;
                return Err(e);
            }
            Err(e) => {
                shut_down(runtime).await;
                return Err(SimError::Invalid(format!(
                    "node {} panicked: {e}",
                    self.index
                )));
            }
        };
        self.running = Some(Running {
            runtime,
            addr,
            node,
            membership,
            local,
        });
        Ok(started.elapsed())
    }

    /// Fails it: from this moment it serves nothing, and every task of the
    /// node stops, unannounced, while the returned shutdown runs.
    pub fn crash(&mut self) -> Option<Crashed> {
        self.running.take().map(|r| Crashed(r.runtime))
    }

    /// Fails it and waits until everything it ran has stopped.
    pub async fn fail(&mut self) {
        if let Some(crashed) = self.crash() {
            crashed.finish().await;
        }
    }

    /// Runs `op` against the node's object space on the node's own runtime
    /// (so what it spawns dies with the node).
    pub async fn on<F, T>(&self, op: impl FnOnce(Local) -> F) -> Result<T, SimError>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let running = self.running.as_ref().ok_or(SimError::Down(self.index))?;
        running
            .runtime
            .spawn(op(running.local.clone()))
            .await
            .map_err(|e| SimError::Invalid(format!("node {} panicked: {e}", self.index)))
    }
}

/// A failed node whose tasks are still being stopped.
pub struct Crashed(Runtime);

impl Crashed {
    /// Waits until every task of the node has stopped (and its database is
    /// closed, unless a blocking call outlives the shutdown's deadline).
    pub async fn finish(self) {
        shut_down(self.0).await;
    }
}

/// Shuts a node's runtime down without blocking the caller's.
async fn shut_down(runtime: Runtime) {
    let _ =
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(2))).await;
}

/// What a node needs to start, moved onto its own runtime.
struct Boot {
    key: Keypair,
    db: PathBuf,
    listen: Multiaddr,
    seeds: Vec<Multiaddr>,
    found: bool,
    settings: NodeSettings,
}

impl Boot {
    async fn run(self) -> Result<(Node, Membership, Local), SimError> {
        let db = open(&self.db, &store::node_column_families()).await?;
        let store = Store::open(db.clone(), self.settings.cache_bytes)?;
        let network = self.settings.network(vec![self.listen], self.seeds);
        let (node, inbound) = Node::start(network, self.key, db.clone()).await?;
        let membership =
            Membership::start(node.clone(), db, self.settings.membership(self.found)).await?;
        let deadline = self.settings.dilation.real(self.settings.join_deadline);
        if !membership.joined(deadline).await {
            let status = membership.status();
            let listed = status.members.contains(&node.peer_id().to_string());
            let seen = format!(
                "its map: epoch {}, {} members, itself {}listed; leader {}; lease {} ms",
                status.epoch,
                status.members.len(),
                if listed { "" } else { "not " },
                status.leader.as_deref().unwrap_or("unknown"),
                status.lease_ms
            );
            return Err(SimError::NotJoined(self.settings.join_deadline, seen));
        }
        let space = ObjectSpace::new(
            node.clone(),
            membership.clone(),
            store,
            self.settings.space(),
        );
        service::start(&space, inbound)?;
        Ok((node, membership, Local::new(space)))
    }
}

/// Opens the database, waiting for a previous run of the node (whose
/// runtime is shutting down) to close it.
async fn open(path: &std::path::Path, column_families: &[&str]) -> Result<Database, SimError> {
    let deadline = Instant::now() + REOPEN_DEADLINE;
    loop {
        match Database::open(path, column_families) {
            Ok(db) => return Ok(db),
            Err(p3_dht::db::DbError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(SimError::Db(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_timer_of_a_node_is_dilated_alike() {
        let settings = |scale| NodeSettings {
            dilation: Dilation::new(scale).expect("in range"),
            replicas: 3,
            join_deadline: Duration::from_secs(30),
            cache_bytes: 1 << 20,
            failure_timeout: Duration::from_secs(3),
            connections: p3_dht::Connections::OnDemand,
            idle: Duration::from_secs(30),
            refresh: Duration::from_secs(300),
            snapshot_every: 1000,
            members_per_relay: 40,
        };
        let (one, four) = (settings(1), settings(4));
        let (a, b) = (one.network(vec![], vec![]), four.network(vec![], vec![]));
        for (x, y) in [
            (a.failure_timeout, b.failure_timeout),
            (a.idle_connection_timeout, b.idle_connection_timeout),
            (a.refresh_interval, b.refresh_interval),
            (a.reconnect_interval, b.reconnect_interval),
            (a.query_timeout, b.query_timeout),
            (a.request_timeout, b.request_timeout),
        ] {
            assert_eq!(y, x * 4);
        }
        assert_eq!(
            a.failure_timeout,
            Duration::from_secs(3),
            "scale 1 is real time"
        );
        let (a, b) = (one.membership(false).times, four.membership(false).times);
        assert_eq!((b.lease, b.drift), (a.lease * 4, a.drift * 4));
        assert_eq!(b.raft_heartbeat(), a.raft_heartbeat() * 4);
        let (a, b) = (one.space(), four.space());
        assert_eq!(b.repair_interval, a.repair_interval * 4);
        assert_eq!(b.rpc_timeout, a.rpc_timeout * 4);
        assert_eq!((b.replicas, b.cache_bytes), (3, 1 << 20));
    }
}
