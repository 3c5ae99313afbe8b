//! The [`Node`] handle: the only way upper layers use the network.
//!
//! Each method sends a command to the swarm task ([`crate::event_loop`]) and awaits
//! its answer, so the handle is cheap to clone and safe to use from any task.

use std::{collections::HashSet, time::Duration};

use libp2p::{
    identity::{Keypair, PublicKey},
    PeerId, StreamProtocol,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::{
    address_book::MemberChanges,
    channel::Channel,
    config::{Connections, NetworkConfig},
    db::Database,
    event_loop,
    rpc::{self, Failed, Rpc},
    DhtError,
};

/// What the swarm task is asked to do.
pub(crate) enum Command {
    Status(oneshot::Sender<NodeStatus>),
    MemberChanges(MemberChanges),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Closest {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<Lookup, DhtError>>,
    },
    Request {
        peer: PeerId,
        body: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, DhtError>>,
    },
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), DhtError>>,
    },
    Subscribe {
        topic: String,
        reply: oneshot::Sender<Result<broadcast::Receiver<GossipMessage>, DhtError>>,
    },
    StartProviding {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<(), DhtError>>,
    },
    Providers {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<HashSet<PeerId>, DhtError>>,
    },
    StopProviding(Vec<u8>),
    Connected(oneshot::Sender<Vec<PeerId>>),
    Shutdown(oneshot::Sender<()>),
}

/// A snapshot of the node's view of the network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node's PeerId.
    pub peer_id: String,
    /// Addresses the node listens on, each with its `/p2p/PEERID` suffix so it can
    /// be pasted into another node's `--bootstrap`.
    pub listen_addrs: Vec<String>,
    /// Peers with at least one open connection.
    pub connected_peers: usize,
    /// Peers in the Kademlia routing table.
    pub routing_table_size: usize,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// The fingerprint of the private swarm's key; `None` in a public network.
    #[serde(default)]
    pub swarm_key: Option<String>,
}

/// The answer of a Kademlia lookup of the peers closest to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The closest peers found, this node included, nearest first.
    pub peers: Vec<PeerId>,
    /// Requests the query sent to other peers.
    pub requests: u32,
}

/// A peer this node knows of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's id.
    pub peer_id: String,
    /// Addresses the node would dial it on.
    pub addrs: Vec<String>,
    /// Whether a connection is open right now.
    pub connected: bool,
    /// Whether the peer is in the Kademlia routing table.
    pub in_routing_table: bool,
    /// Round-trip time of the last ping to it, in microseconds, while connected.
    #[serde(default)]
    pub rtt_us: Option<u64>,
}

/// A gossipsub message delivered to a subscriber.
#[derive(Debug, Clone)]
pub struct GossipMessage {
    /// The peer that published it (messages are signed, so this is authenticated).
    pub source: Option<PeerId>,
    /// The topic it was published on.
    pub topic: String,
    /// Its payload.
    pub data: Vec<u8>,
}

/// A request from a peer, waiting for the layer above to answer it.
#[derive(Debug)]
pub struct InboundRequest {
    /// The authenticated peer that sent it.
    pub peer: PeerId,
    /// The request body (CBOR, at most the configured request limit).
    pub body: Vec<u8>,
    pub(crate) reply: ReplyTo,
}

/// Where a request's answer goes.
pub(crate) enum ReplyTo {
    /// To the swarm task, which answers through request-response.
    Swarm(oneshot::Sender<Vec<u8>>),
    /// Straight to the writer of the request stream it came on.
    Stream(crate::rpc::Responder),
}

impl std::fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplyTo::Swarm(_) => "ReplyTo::Swarm",
            ReplyTo::Stream(_) => "ReplyTo::Stream",
        })
    }
}

impl InboundRequest {
    /// Decodes the body; a malformed body is an error naming the peer, never a panic.
    pub fn decode<Q: DeserializeOwned>(&self) -> Result<Q, DhtError> {
        crate::cbor::decode(&self.body).map_err(|reason| DhtError::Malformed {
            peer: self.peer,
            reason,
        })
    }

    /// Sends the answer. Dropping the request without answering makes the peer's
    /// request fail instead of hang.
    pub fn respond<A: Serialize>(self, answer: &A) -> Result<(), DhtError> {
        let body = encode(answer)?;
        match self.reply {
            // The peer may have given up already; nothing to do then.
            ReplyTo::Swarm(reply) => drop(reply.send(body)),
            ReplyTo::Stream(answer) => answer.send(body),
        }
        Ok(())
    }
}

/// What a node receives that nobody asked for: requests from peers. Handed out
/// once, at start, to the layer that serves them.
#[derive(Debug)]
pub struct Inbound {
    /// Requests from peers, in arrival order.
    pub requests: mpsc::Receiver<InboundRequest>,
}

/// Handle on a running node's swarm. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    peer_id: PeerId,
    /// The node's identity: it signs changes to writer-only namespaces.
    key: std::sync::Arc<Keypair>,
    commands: mpsc::Sender<Command>,
    streams: libp2p_stream::Control,
    rpc: std::sync::Arc<Rpc>,
    connections: Connections,
    /// How long a request stream may go unused before it is closed
    /// (with [`Connections::OnDemand`]).
    idle_streams: Option<Duration>,
    /// Counts the peers identified as P³ nodes.
    identified: watch::Receiver<u64>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

/// A raw libp2p stream (futures `AsyncRead + AsyncWrite`) to or from a peer.
pub use libp2p::Stream;
/// Inbound streams of one protocol, as `(peer, stream)` pairs.
pub use libp2p_stream::IncomingStreams;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DhtError> {
    crate::cbor::encode(value).map_err(DhtError::Encode)
}

impl Node {
    /// Builds the swarm, starts listening and dialling the seeds, and spawns the
    /// task that drives it. Must be called inside a Tokio runtime.
    pub async fn start(
        config: NetworkConfig,
        key: Keypair,
        db: Database,
    ) -> Result<(Node, Inbound), DhtError> {
        let peer_id = key.public().to_peer_id();
        let signer = std::sync::Arc::new(key.clone());
        let (commands, command_rx) = mpsc::channel(256);
        let (request_tx, requests) = mpsc::channel(256);
        let limits = (config.max_request_bytes, config.max_response_bytes);
        // As for request-response: the caller's deadline governs (a replica
        // that fetches a gigabyte before it answers may rightly take minutes).
        let timeout = config
            .request_timeout
            .max(crate::behaviour::REQUEST_OUTER_BOUND);
        let connections = config.connections;
        let idle_streams =
            (connections == Connections::OnDemand).then_some(config.idle_connection_timeout);
        let (identified_tx, identified) = watch::channel(0);
        let streams = event_loop::spawn(
            config,
            key,
            db,
            command_rx,
            request_tx.clone(),
            identified_tx,
        )?;
        let incoming = streams
            .clone()
            .accept(StreamProtocol::new(crate::REQUEST_STREAM_PROTOCOL))
            .map_err(|_| DhtError::Transport("request streams are already accepted".into()))?;
        tokio::spawn(rpc::serve(incoming, request_tx, limits.0));
        let rpc = Rpc::new(
            streams.clone(),
            StreamProtocol::new(crate::REQUEST_STREAM_PROTOCOL),
            limits,
            timeout,
            idle_streams,
        );
        Ok((
            Node {
                peer_id,
                key: signer,
                commands,
                streams,
                rpc: std::sync::Arc::new(rpc),
                connections,
                idle_streams,
                identified,
            },
            Inbound { requests },
        ))
    }

    /// A count that moves each time a peer is first identified as a P³ node
    /// (it speaks P³'s request protocol): a layer with nobody to ask yet
    /// awaits a change instead of polling [`Node::connected`]. Stops
    /// changing (`changed` fails) once the node has stopped.
    pub fn identified(&self) -> watch::Receiver<u64> {
        self.identified.clone()
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Which peers this node keeps connections to: with
    /// [`Connections::OnDemand`], [`Node::connected`] names only the peers
    /// it talks to, not every live node.
    pub fn connections(&self) -> Connections {
        self.connections
    }

    /// This node's public key (its PeerId is derived from it).
    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    /// Signs `bytes` with this node's identity key (ed25519).
    pub fn sign(&self, bytes: &[u8]) -> Result<Vec<u8>, DhtError> {
        self.key
            .sign(bytes)
            .map_err(|e| DhtError::Encode(format!("cannot sign: {e}")))
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// Listen addresses, connection count, routing-table size and uptime.
    pub async fn status(&self) -> Result<NodeStatus, DhtError> {
        self.ask(Command::Status).await
    }

    /// Tells the swarm how the members the layer above knows changed:
    /// dials to members use their addresses even when Kademlia's table has
    /// no room for them, and the routing table follows the members.
    pub async fn update_members(&self, changes: MemberChanges) -> Result<(), DhtError> {
        self.commands
            .send(Command::MemberChanges(changes))
            .await
            .map_err(|_| DhtError::Stopped)
    }

    /// Every peer in the routing table or connected right now.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, DhtError> {
        self.ask(Command::Peers).await
    }

    /// The peers the DHT says are closest to `key` (XOR distance of the Kademlia
    /// key), this node included, nearest first: the owners of that key.
    pub async fn closest_peers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, DhtError> {
        Ok(self.lookup(key).await?.peers)
    }

    /// [`Node::closest_peers`], with what the Kademlia query cost.
    pub async fn lookup(&self, key: Vec<u8>) -> Result<Lookup, DhtError> {
        self.ask(|reply| Command::Closest { key, reply }).await?
    }

    /// Sends `request` to `peer` as CBOR and decodes its CBOR answer. The network
    /// only bounds the exchange loosely (an hour); callers put their own deadline
    /// on it, sized to the work the request asks for.
    pub async fn request<Q: Serialize, A: DeserializeOwned>(
        &self,
        peer: PeerId,
        request: &Q,
    ) -> Result<A, DhtError> {
        let body = encode(request)?;
        let answer = match self.rpc.request(peer, body).await {
            Ok(answer) => answer,
            Err(Failed::Sent(e)) => return Err(e),
            Err(Failed::NoStream { reason, body }) => {
                tracing::debug!(%peer, %reason, "no request stream; asking through request-response");
                self.ask(|reply| Command::Request { peer, body, reply })
                    .await??
            }
        };
        crate::cbor::decode(&answer).map_err(|reason| DhtError::Malformed { peer, reason })
    }

    /// Publishes `data` on a gossipsub topic.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), DhtError> {
        self.ask(|reply| Command::Publish {
            topic: topic.to_owned(),
            data,
            reply,
        })
        .await?
    }

    /// Subscribes to a gossipsub topic. Slow receivers lose the oldest messages
    /// (the receiver reports how many) rather than stall the swarm.
    pub async fn subscribe(
        &self,
        topic: &str,
    ) -> Result<broadcast::Receiver<GossipMessage>, DhtError> {
        self.ask(|reply| Command::Subscribe {
            topic: topic.to_owned(),
            reply,
        })
        .await?
    }

    /// Announces this node as a provider of `key` (a DHT provider record).
    pub async fn start_providing(&self, key: Vec<u8>) -> Result<(), DhtError> {
        self.ask(|reply| Command::StartProviding { key, reply })
            .await?
    }

    /// The peers that announced themselves as providers of `key`.
    pub async fn providers(&self, key: Vec<u8>) -> Result<HashSet<PeerId>, DhtError> {
        self.ask(|reply| Command::Providers { key, reply }).await?
    }

    /// Withdraws this node's provider record for `key` (the copies other nodes
    /// hold expire on their own).
    pub async fn stop_providing(&self, key: Vec<u8>) -> Result<(), DhtError> {
        self.commands
            .send(Command::StopProviding(key))
            .await
            .map_err(|_| DhtError::Stopped)
    }

    /// P³ peers (identified as speaking its RPC) with an open connection right
    /// now. With [`Connections::All`] that is every live node; with
    /// [`Connections::OnDemand`] only the peers this node talks to.
    pub async fn connected(&self) -> Result<Vec<PeerId>, DhtError> {
        self.ask(Command::Connected).await
    }

    /// Opens a stream to `peer` speaking `protocol`, dialling it if needed.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: &'static str,
    ) -> Result<Stream, DhtError> {
        self.streams
            .clone()
            .open_stream(peer, StreamProtocol::new(protocol))
            .await
            .map_err(|e| DhtError::Request {
                peer,
                reason: e.to_string(),
            })
    }

    /// Accepts inbound streams of `protocol`; one acceptor per protocol.
    pub fn accept_streams(&self, protocol: &'static str) -> Result<IncomingStreams, DhtError> {
        self.streams
            .clone()
            .accept(StreamProtocol::new(protocol))
            .map_err(|_| DhtError::Transport(format!("{protocol} is already being accepted")))
    }

    /// A request channel of `protocol` (one per protocol), each request and
    /// answer at most `max_bytes`: the channel to ask peers through, and
    /// the requests peers send, to be answered with
    /// [`InboundRequest::respond`].
    pub fn channel(
        &self,
        protocol: &'static str,
        max_bytes: u64,
    ) -> Result<(Channel, mpsc::Receiver<InboundRequest>), DhtError> {
        let incoming = self.accept_streams(protocol)?;
        let (tx, requests) = mpsc::channel(256);
        tokio::spawn(rpc::serve(incoming, tx, max_bytes));
        let rpc = Rpc::new(
            self.streams.clone(),
            StreamProtocol::new(protocol),
            (max_bytes, max_bytes),
            crate::behaviour::REQUEST_OUTER_BOUND,
            self.idle_streams,
        );
        Ok((
            Channel {
                rpc: std::sync::Arc::new(rpc),
            },
            requests,
        ))
    }

    /// Stops the swarm task; waits at most `timeout` for it to finish.
    pub async fn shutdown(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.ask(Command::Shutdown)).await;
    }
}
