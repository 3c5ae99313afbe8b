//! The running membership layer of a node: the Raft group, the answers to
//! peers' membership requests, this node's heartbeats (its lease), and — on
//! the leader — removing silent members and choosing voters. The decisions
//! are in [`crate::lease`] and [`crate::voters`]; this is the async glue.
//! `heartbeat.rs` is the member's own loop (join, renew the lease, follow
//! the map), `answer.rs` the answers to peers, `leader.rs` the leader's
//! duties, `addresses.rs` the members' addresses for the network layer;
//! this file starts them and holds the node's view.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use openraft::{ServerState, SnapshotPolicy};
use p3_dht::{Channel, Database, Node, PeerId};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{oneshot, watch, Notify},
    task::JoinHandle,
};

mod addresses;
mod answer;
mod heartbeat;
mod leader;
mod relay;

use crate::{
    confirm::Rounds,
    error::{MembershipError, Result},
    lease::{Lease, LeaseTimes, Liveness},
    map::Map,
    placement,
    raft::{
        network::Network,
        node_id,
        store::{LogStore, MapMachine},
        NodeId, Raft, RaftPeer,
    },
    wire::{self, Request, Response, MEMBERSHIP_PROTOCOL},
};

/// How the membership layer of a node runs.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Lease and drift.
    pub times: LeaseTimes,
    /// Whether this node founds a new group if it has none (a node started
    /// without seeds); others join a group through their peers.
    pub found: bool,
    /// Where to write `membership.json` (the status `p3ctl node status`
    /// shows), if anywhere.
    pub status_file: Option<PathBuf>,
    /// Raft entries applied between snapshots of the map
    /// ([`DEFAULT_SNAPSHOT_EVERY`]); a member further behind than a quarter
    /// of that gets the map whole instead of the changes.
    pub snapshot_every: u64,
    /// Members per relay of lease renewals ([`crate::relays`]): a map of
    /// more members renews through `⌈N / members_per_relay⌉` relays, so
    /// no node talks to many more than this many members for its leases;
    /// 0 renews every member with the leader directly.
    /// [`DEFAULT_MEMBERS_PER_RELAY`] by default.
    pub members_per_relay: usize,
}

/// Members per relay of lease renewals by default: 40 on average puts the
/// fullest of 25 relays at N = 1,000 near 55 (rendezvous hashing spreads
/// members binomially), under the 60 connections a node should need.
pub const DEFAULT_MEMBERS_PER_RELAY: usize = 40;

/// How many Raft entries a node applies between snapshots of its map by
/// default: a member joining a group of hundreds gets the map (O(N)) and at
/// most a quarter of this in entries, instead of the whole log (a
/// membership entry of O(N) per join: O(N²)).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 256;

/// The status of the membership layer, as `membership.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipStatus {
    /// The epoch of the map this node holds.
    pub epoch: u64,
    /// The members of that map (peer ids).
    pub members: Vec<String>,
    /// The voters of the Raft group, on a node that is one of them (Raft
    /// tells only its voters); empty on a node that follows the map.
    pub voters: Vec<String>,
    /// The leader of the group, if known.
    pub leader: Option<String>,
    /// The relay through which this node last renewed its lease; `None`
    /// when it renews with the leader directly ([`crate::relays`]).
    #[serde(default)]
    pub relay: Option<String>,
    /// How long this node's lease still holds, in milliseconds (0: none).
    pub lease_ms: u64,
}

/// Handle on the membership layer. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    node: Node,
    /// Requests to other members, on one stream per peer.
    channel: Channel,
    me: PeerId,
    id: NodeId,
    incarnation: u64,
    config: MembershipConfig,
    map: watch::Receiver<Arc<Map>>,
    /// Raft's state machine: what a leader answers members from, and
    /// where a renewal's answer publishes a newer map.
    machine: MapMachine,
    /// The leader that last renewed this node's lease, as far as this node
    /// knows when it does not vote (Raft tells only the group's members).
    followed: Mutex<Option<PeerId>>,
    /// The relay that last renewed this node's lease, if one did.
    relayed_by: Mutex<Option<PeerId>>,
    /// Woken when this node needs a newer map now (a peer asked at a newer
    /// epoch): the next renewal, which brings it, goes out at once.
    behind: Notify,
    lease: Mutex<Lease>,
    /// Woken whenever the lease is renewed, for [`Membership::lease_within`].
    renewed: Notify,
    liveness: Mutex<Liveness>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Heartbeats waiting for a quorum to confirm this node leads.
    confirmations: Mutex<Rounds<oneshot::Sender<Confirmed>>>,
    /// Members' heartbeats waiting in this relay for the next batch.
    relaying: Mutex<Rounds<relay::Waiting>>,
    /// Snapshots of the map this node installed from its leader.
    snapshots_installed: Arc<AtomicU64>,
    /// Whole maps this node took from a renewal's answer.
    followed_whole: AtomicU64,
}

/// A confirmation round's outcome: a quorum followed this node after the
/// round started, or why not.
type Confirmed = std::result::Result<(), String>;

/// A period in whole milliseconds, as openraft's configuration takes it.
fn millis(period: Duration) -> u64 {
    u64::try_from(period.as_millis()).unwrap_or(u64::MAX)
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// At most this many addresses, each at most this long, in a join.
const MAX_ADDRS: usize = 16;
const MAX_ADDR_LEN: usize = 256;
/// Membership requests answered at once.
const MAX_ANSWERING: usize = 256;
/// Raft entries sent in one append.
const MAX_PAYLOAD_ENTRIES: u64 = 32;
/// The fewest Raft entries between snapshots of the map
/// ([`MembershipConfig::snapshot_every`]): below this, a snapshot would
/// follow nearly every entry.
pub const MIN_SNAPSHOT_EVERY: u64 = 4;

impl Membership {
    /// Starts the membership layer of `node`, its Raft state in `db` (opened
    /// with [`crate::COLUMN_FAMILIES`]).
    pub async fn start(node: Node, db: Database, config: MembershipConfig) -> Result<Self> {
        let me = node.peer_id();
        let id = node_id(&me);
        if config.snapshot_every < MIN_SNAPSHOT_EVERY {
            return Err(MembershipError::Raft(format!(
                "snapshot_every must be at least {MIN_SNAPSHOT_EVERY} entries, not {}",
                config.snapshot_every
            )));
        }
        let times = config.times;
        let election = times.election_timeout();
        let raft_config = openraft::Config {
            cluster_name: "p3-membership".into(),
            heartbeat_interval: millis(times.raft_heartbeat()),
            election_timeout_min: millis(election.0),
            election_timeout_max: millis(election.1),
            // Every append (a catch-up batch too) must be answered within a
            // heartbeat interval or is retried after a back-off: a batch of
            // openraft's default 300 entries, each join's membership entry
            // naming every member, never reached a new member of a loaded
            // 150-node group in 150 ms.
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.snapshot_every / 4,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MembershipError::Raft(e.to_string()))?;
        // A member further behind than the entries a new member would be
        // sent before a snapshot gets the map whole, as a learner would.
        let window = (config.snapshot_every / 4).max(1) as usize;
        let (machine, map) = MapMachine::open(db.clone(), window)
            .map_err(|e| MembershipError::Storage(e.to_string()))?;
        let snapshots_installed = machine.installed();
        let answering = machine.clone();
        let (channel, incoming) = node
            .channel(MEMBERSHIP_PROTOCOL, wire::MAX_FRAME as u64)
            .map_err(|e| MembershipError::Raft(e.to_string()))?;
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            Network::new(channel.clone()),
            LogStore::new(db),
            machine,
        )
        .await
        .map_err(|e| MembershipError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| MembershipError::Raft(e.to_string()))?;
        if config.found && !initialized {
            let founder = BTreeMap::from([(
                id,
                RaftPeer {
                    peer: me.to_string(),
                },
            )]);
            raft.initialize(founder)
                .await
                .map_err(|e| MembershipError::Raft(e.to_string()))?;
            tracing::info!("founded the membership group");
        }
        let membership = Membership {
            inner: Arc::new(Inner {
                raft,
                node,
                channel,
                me,
                id,
                incarnation: rand::random(),
                config,
                map,
                machine: answering,
                followed: Mutex::default(),
                relayed_by: Mutex::default(),
                behind: Notify::new(),
                lease: Mutex::default(),
                renewed: Notify::new(),
                liveness: Mutex::default(),
                tasks: Mutex::default(),
                confirmations: Mutex::default(),
                relaying: Mutex::default(),
                snapshots_installed,
                followed_whole: AtomicU64::new(0),
            }),
        };
        let tasks = vec![
            tokio::spawn(membership.clone().serve(incoming)),
            tokio::spawn(membership.clone().keep_lease()),
            tokio::spawn(membership.clone().lead()),
            tokio::spawn(membership.clone().share_addresses()),
        ];
        *locked(&membership.inner.tasks) = tasks;
        // A status file left by a killed process would claim a lease.
        membership.write_status();
        Ok(membership)
    }

    /// The map this node holds now; shared, so taking it copies a pointer,
    /// not the members (writes take it on every request).
    pub fn map(&self) -> Arc<Map> {
        self.inner.map.borrow().clone()
    }

    /// Every other node this one may need to ask about the whole space: its
    /// connected peers and, when connections are made on demand (so few are
    /// open), every other member of its map.
    pub async fn everyone(&self) -> std::result::Result<Vec<PeerId>, p3_dht::DhtError> {
        let node = &self.inner.node;
        let mut peers = node.connected().await?;
        if node.connections() == p3_dht::Connections::OnDemand {
            let me = self.inner.me;
            let map = self.inner.map.borrow();
            peers.extend(map.members().map(|(p, _)| *p).filter(|p| *p != me));
            drop(map);
            peers.sort();
            peers.dedup();
        }
        Ok(peers)
    }

    /// How many times this node took the map whole — a Raft snapshot, or
    /// a renewal's answer — because it was too far behind for the changes.
    pub fn maps_whole(&self) -> u64 {
        self.inner.snapshots_installed.load(Ordering::Relaxed)
            + self.inner.followed_whole.load(Ordering::Relaxed)
    }

    /// A receiver that sees every map this node applies.
    pub fn watch(&self) -> watch::Receiver<Arc<Map>> {
        self.inner.map.clone()
    }

    /// The owners of `key` in the current map, nearest first.
    pub fn owners(&self, key: &[u8], r: usize) -> Vec<PeerId> {
        placement::owners(&self.inner.map.borrow(), key, r)
    }

    /// The intervals of `key` in the current map's memory, the current one
    /// first: where its state may be ([`placement::intervals`]).
    pub fn intervals(&self, key: &[u8], r: usize) -> Vec<placement::Interval> {
        placement::intervals(&self.inner.map.borrow(), key, r)
    }

    /// Whether `peer` is a member of the current map (no copy of the map).
    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.inner.map.borrow().member(peer).is_some()
    }

    /// Resolves once the group removes `peer`, a member now, from the map: a
    /// request to it can stop waiting then (a paused peer's half-open
    /// connection would hold it until the transport gives up). Never resolves
    /// for a peer that is not a member now (it may be joining).
    pub async fn removed(&self, peer: PeerId) {
        let mut maps = self.inner.map.clone();
        if maps.borrow_and_update().member(&peer).is_none() {
            std::future::pending::<()>().await;
        }
        let stopped = maps
            .wait_for(|m| !m.is_empty() && m.member(&peer).is_none())
            .await
            .is_err();
        if stopped {
            // The membership layer stopped: never resolve, the caller's own
            // deadline ends the wait.
            std::future::pending::<()>().await;
        }
    }

    /// Waits at most `deadline` for this node's map to reach `epoch`;
    /// whether it has. A peer that asks at a newer epoch knows of a change
    /// this node has not applied yet.
    pub async fn reach_epoch(&self, epoch: u64, deadline: Duration) -> bool {
        let mut maps = self.inner.map.clone();
        if maps.borrow().epoch() < epoch {
            self.inner.behind.notify_one();
        }
        let reached = tokio::time::timeout(deadline, maps.wait_for(|m| m.epoch() >= epoch)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Whether this node holds a membership lease now: only then may it act
    /// as an owner.
    pub fn has_lease(&self) -> bool {
        let epoch = self.inner.map.borrow().epoch();
        locked(&self.inner.lease).serves(Instant::now(), epoch)
    }

    /// Waits at most `deadline` for this node to hold a lease; returns
    /// whether it does. A node whose heartbeats were slow for a moment (a
    /// loaded leader) gets its lease back with the next answer, and a request
    /// that arrives meanwhile need not fail.
    pub async fn lease_within(&self, deadline: Duration) -> bool {
        // Every owner's request asks: the common case costs one lock.
        if self.has_lease() {
            return true;
        }
        let until = tokio::time::Instant::now() + deadline;
        // The lease waits for a renewal or, when it was granted at an epoch
        // this node's map has not reached, for the map.
        let mut maps = self.inner.map.clone();
        maps.borrow_and_update();
        loop {
            let renewed = self.inner.renewed.notified();
            tokio::pin!(renewed);
            // Registered before the check, so a renewal in between wakes it.
            renewed.as_mut().enable();
            if self.has_lease() {
                return true;
            }
            let changed = async {
                tokio::select! {
                    () = &mut renewed => true,
                    moved = maps.changed() => moved.is_ok(),
                }
            };
            match tokio::time::timeout_at(until, changed).await {
                Ok(true) => {}
                // Out of time, or the map will not change again (stopped).
                Ok(false) | Err(_) => return self.has_lease(),
            }
        }
    }

    /// Waits at most `deadline` until this node is in the map (as this
    /// incarnation) and holds a lease; returns whether it is.
    pub async fn joined(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        loop {
            let member = self
                .inner
                .map
                .borrow()
                .holds(&self.inner.me, self.inner.incarnation);
            if member && self.has_lease() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What `membership.json` says.
    pub fn status(&self) -> MembershipStatus {
        let map = self.map();
        let voters = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            if membership.voter_ids().any(|v| v == self.inner.id) {
                membership
                    .voter_ids()
                    .filter_map(|id| membership.get_node(&id).map(|n| n.peer.clone()))
                    .collect()
            } else {
                Vec::new()
            }
        };
        MembershipStatus {
            epoch: map.epoch(),
            members: map.members().map(|(p, _)| p.to_string()).collect(),
            voters,
            leader: self.leader().map(|p| p.to_string()),
            relay: locked(&self.inner.relayed_by).map(|p| p.to_string()),
            lease_ms: locked(&self.inner.lease)
                .remaining(Instant::now())
                .as_millis() as u64,
        }
    }

    /// Stops the layer's tasks and the Raft group of this node.
    pub async fn stop(&self) {
        for task in locked(&self.inner.tasks).drain(..) {
            task.abort();
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::debug!(error = %e, "membership group did not stop cleanly");
        }
    }

    /// The leader's peer id, if this node knows it: Raft's word on a
    /// voter, else the leader that last renewed its lease.
    fn leader(&self) -> Option<PeerId> {
        self.raft_leader().or(*locked(&self.inner.followed))
    }

    /// The leader Raft knows of, on a voter. A node that does not vote is
    /// told nothing by Raft (or, once it stopped voting, nothing new).
    fn raft_leader(&self) -> Option<PeerId> {
        // Borrowed, not cloned: the leader's metrics carry a replication
        // entry per member, and this runs on every heartbeat.
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        if !membership.voter_ids().any(|v| v == self.inner.id) {
            return None;
        }
        let leader = metrics.current_leader?;
        membership
            .get_node(&leader)
            .and_then(|n| n.peer.parse().ok())
    }

    fn leading(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.inner.id)
    }

    /// Sends `request` to `target`, or handles it here when that is this node.
    async fn ask(&self, target: PeerId, request: Request, deadline: Duration) -> Result<Response> {
        if target == self.inner.me {
            return Ok(self.handle(target, request).await);
        }
        wire::call(&self.inner.channel, target, &request, deadline).await
    }

    fn write_status(&self) {
        let Some(file) = &self.inner.config.status_file else {
            return;
        };
        let status = self.status();
        let temporary = file.with_extension("json.tmp");
        let written = serde_json::to_vec(&status)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, file));
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), error = %e, "cannot write the membership status");
        }
    }
}
