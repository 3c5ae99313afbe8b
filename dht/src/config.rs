//! Settings of the network layer. The CLI's configuration file is the one home of
//! all settings; it fills this struct.

use std::time::Duration;

use libp2p::Multiaddr;

use crate::{store::StoreLimits, swarm_key::SwarmKey};

/// How a node joins and uses the network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Addresses to listen on. A node that listens runs Kademlia in server mode.
    pub listen: Vec<Multiaddr>,
    /// Seeds: dialled at start-up and again whenever no peer is connected.
    /// Addresses may carry a `/p2p/PEERID` suffix; without it the peer id is
    /// learned through identify.
    pub bootstrap: Vec<Multiaddr>,
    /// Period of the Kademlia routing-table refresh (a bootstrap query).
    pub refresh_interval: Duration,
    /// How often the node checks whether it has any connected peer and, if not,
    /// re-dials the seeds.
    pub reconnect_interval: Duration,
    /// Connections with no open stream are kept this long. P³ nodes keep their
    /// cluster connected so a crashed peer is noticed quickly; with
    /// [`Connections::OnDemand`] a request stream unused this long is closed
    /// too, so this is how long an unused connection lives.
    pub idle_connection_timeout: Duration,
    /// Which peers the node keeps connections to.
    pub connections: Connections,
    /// Deadline of one Kademlia query (closest peers, providers).
    pub query_timeout: Duration,
    /// Base deadline of a request to a peer. Callers add time for the work a
    /// request asks for (moving a value); this layer itself only bounds an
    /// exchange by an hour, and a silent peer's connection is closed after
    /// `failure_timeout`, which fails its requests at once.
    pub request_timeout: Duration,
    /// A connected peer that answers no ping for this long is taken for gone
    /// (crashed, paused or cut off) and its connection closed, so requests to
    /// it fail at once instead of waiting out their deadlines.
    pub failure_timeout: Duration,
    /// Largest request body accepted from a peer, in bytes.
    pub max_request_bytes: u64,
    /// Largest response body accepted from a peer, in bytes.
    pub max_response_bytes: u64,
    /// Limits of the Kademlia record and provider store.
    pub store_limits: StoreLimits,
    /// The private swarm's key, or `None` for a public network. Nodes connect
    /// only to nodes with the same key (or, without one, to nodes without one).
    pub swarm_key: Option<SwarmKey>,
    /// Whether the node runs gossipsub ([`crate::Node::publish`],
    /// [`crate::Node::subscribe`]). Off by default: the object space sends
    /// events only to the peers that watch them and puts nothing on gossip,
    /// and gossipsub's per-peer state and handler cost every connection
    /// (`p3sim` at N = 150: 17–20 → 13 MiB per node, idle CPU −6–11 %).
    pub gossip: bool,
}

/// Which peers a node keeps connections to (`[network] connections`:
/// `"all"` or `"on-demand"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connections {
    /// Every peer of the routing table, redialled when lost: each node of a
    /// cluster of tens is connected to every other, and a crashed peer is
    /// noticed by its pings within `failure_timeout`, whether or not the
    /// node was talking to it.
    #[default]
    All,
    /// Only the peers the node talks to: a request stream unused for
    /// `idle_connection_timeout` is closed, a connection without streams is
    /// closed after as long, and routing-table peers are not redialled (a
    /// request dials its peer). A node's connections then follow its work
    /// (its membership leader, the owners it shares keys with, lookups)
    /// instead of N (`docs/scale.md`, step 1).
    OnDemand,
}

impl Connections {
    /// The routing-table refresh period used when none is configured. A
    /// refresh is a lookup per bucket and dials most of the table, so on
    /// demand it is what holds connections open: `p3sim` at N = 150 keeps
    /// 59 connections a node with a 60 s refresh, 12.6 averaged over a
    /// period with 300 s (libp2p's own default), 2.0 between refreshes.
    pub const fn default_refresh_interval(self) -> Duration {
        match self {
            Self::All => Duration::from_secs(60),
            Self::OnDemand => Duration::from_secs(300),
        }
    }

    /// How long an unused connection lives when none is configured: an hour
    /// when the cluster keeps every connection anyway; on demand, long
    /// enough for a burst of requests to one peer to share a connection,
    /// short enough that connections follow the node's current work.
    pub const fn default_idle_connection_timeout(self) -> Duration {
        match self {
            Self::All => Duration::from_secs(3600),
            Self::OnDemand => Duration::from_secs(30),
        }
    }
}

/// The shortest `failure_timeout` accepted: pings go out every third of it,
/// and a loaded node can take tens of milliseconds to answer one; below this,
/// live peers are cut off.
pub const MIN_FAILURE_TIMEOUT: Duration = Duration::from_millis(300);

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            refresh_interval: Connections::All.default_refresh_interval(),
            reconnect_interval: Duration::from_secs(5),
            idle_connection_timeout: Connections::All.default_idle_connection_timeout(),
            connections: Connections::All,
            query_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            failure_timeout: Duration::from_secs(3),
            max_request_bytes: 4 << 20,
            max_response_bytes: 16 << 20,
            store_limits: StoreLimits::default(),
            swarm_key: None,
            gossip: false,
        }
    }
}
