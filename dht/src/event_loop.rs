//! The task that owns the `Swarm`: it turns [`Command`]s from [`crate::Node`]
//! handles into swarm calls and swarm events into answers, forwarded requests and
//! gossip deliveries. Nothing here waits on anything but the swarm and its
//! channels, so one slow caller never stalls the network.

mod gossip;
mod members;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    iter,
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, stream::FuturesUnordered, FutureExt, StreamExt};
use libp2p::{
    gossipsub::{self, TopicHash},
    identify,
    identity::Keypair,
    kad::{self, GetClosestPeersError, GetProvidersOk, QueryId, QueryResult, RecordKey},
    multiaddr::Protocol,
    ping,
    request_response::{self, OutboundRequestId, ResponseChannel},
    swarm::{ConnectionId, SwarmEvent},
    Multiaddr, PeerId, Swarm,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::{
    addresses::{by_distance, is_loopback, peer_of, worth_dialling},
    behaviour::{Behaviour, BehaviourEvent},
    config::{Connections, NetworkConfig},
    db::Database,
    node::{Command, GossipMessage, InboundRequest, Lookup, NodeStatus, PeerInfo, ReplyTo},
    redial::Redials,
    silence::Silence,
    transport::{build_swarm, handshake_failure},
    DhtError, KAD_PROTOCOL, RPC_PROTOCOL,
};

type Reply<T> = oneshot::Sender<Result<T, DhtError>>;
/// An inbound request's answer, once the layer above has written it (`None` if it
/// dropped the request).
type PendingAnswer = BoxFuture<'static, Option<(ResponseChannel<Vec<u8>>, Vec<u8>)>>;

struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: NetworkConfig,
    started: Instant,
    commands: mpsc::Receiver<Command>,
    requests: mpsc::Sender<InboundRequest>,
    closest: HashMap<QueryId, (Vec<u8>, Reply<Lookup>)>,
    providing: HashMap<QueryId, Reply<()>>,
    providers: HashMap<QueryId, (HashSet<PeerId>, Reply<HashSet<PeerId>>)>,
    outbound: HashMap<OutboundRequestId, Reply<Vec<u8>>>,
    /// Answers being prepared by the layer above for inbound requests.
    responses: FuturesUnordered<PendingAnswer>,
    topics: HashMap<TopicHash, broadcast::Sender<GossipMessage>>,
    /// Remote address of each open connection, to judge what its peer announces.
    remotes: HashMap<ConnectionId, Multiaddr>,
    /// Connected peers that identify says speak P³'s RPC: the ones that can own
    /// objects (a plain Kademlia peer can be in the table but cannot).
    p3_peers: HashSet<PeerId>,
    /// The last round-trip time ping measured to each connected peer.
    rtts: HashMap<PeerId, Duration>,
    /// Unconnected routing-table peers to dial again.
    redials: Redials,
    /// When each connection's peer last answered a ping.
    silence: Silence<ConnectionId>,
    /// Addresses whose handshake failed, already reported to the user.
    handshake_failures: HashSet<String>,
    /// How many peers were identified as P³ nodes so far ([`crate::Node::identified`]).
    identified: watch::Sender<u64>,
    /// Whether this node has joined the membership map, from when on the
    /// routing table follows the map and Kademlia's own bootstraps are
    /// redundant (`members.rs`).
    table_follows_map: bool,
}

/// Builds the swarm, listens, dials the seeds and spawns the loop.
pub(crate) fn spawn(
    config: NetworkConfig,
    key: Keypair,
    db: Database,
    commands: mpsc::Receiver<Command>,
    requests: mpsc::Sender<InboundRequest>,
    identified: watch::Sender<u64>,
) -> Result<libp2p_stream::Control, DhtError> {
    let behaviour = Behaviour::new(&key, &config, db)?;
    let streams = behaviour.streams.new_control();
    let mut swarm = build_swarm(key, &config, behaviour)?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| DhtError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
    }
    let failure_timeout = config.failure_timeout;
    let mut event_loop = EventLoop {
        swarm,
        config,
        started: Instant::now(),
        commands,
        requests,
        closest: HashMap::new(),
        providing: HashMap::new(),
        providers: HashMap::new(),
        outbound: HashMap::new(),
        responses: FuturesUnordered::new(),
        topics: HashMap::new(),
        remotes: HashMap::new(),
        p3_peers: HashSet::new(),
        rtts: HashMap::new(),
        redials: Redials::default(),
        silence: Silence::new(failure_timeout),
        handshake_failures: HashSet::new(),
        identified,
        table_follows_map: false,
    };
    event_loop.dial_seeds();
    tokio::spawn(event_loop.run());
    Ok(streams)
}

impl EventLoop {
    async fn run(mut self) {
        let mut reconnect = tokio::time::interval(self.config.reconnect_interval);
        reconnect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut liveness = tokio::time::interval(self.config.failure_timeout / 3);
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let done = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    self.on_swarm_event(event);
                    self.cut_bootstrap();
                }
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(done)) => break Some(done),
                    Some(command) => self.on_command(command),
                    None => break None,
                },
                Some(answer) = self.responses.next(), if !self.responses.is_empty() => {
                    if let Some((channel, body)) = answer {
                        // Fails only if the peer has gone; it will see the request fail.
                        let _ = self.swarm.behaviour_mut().rpc.send_response(channel, body);
                    }
                }
                _ = reconnect.tick() => {
                    self.reconnect_if_isolated();
                    if self.config.connections == Connections::All {
                        self.redial_table();
                    }
                }
                _ = liveness.tick() => {
                    for connection in self.silence.silent(Instant::now()) {
                        tracing::debug!(?connection, "peer silent for the failure timeout; closing");
                        self.swarm.close_connection(connection);
                    }
                }
            }
        };
        tracing::debug!("swarm task stopping");
        drop(self.swarm);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    fn routing_table_size(&mut self) -> usize {
        self.swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum()
    }

    /// Dials every seed; seeds that name their peer id go straight into the
    /// routing table so the first bootstrap query has somewhere to start.
    fn dial_seeds(&mut self) {
        for addr in self.config.bootstrap.clone() {
            if let Some(peer) = peer_of(&addr) {
                if peer == *self.swarm.local_peer_id() {
                    continue;
                }
                let without_peer: Multiaddr = addr
                    .iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect();
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, without_peer);
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial seed");
            }
        }
    }

    /// Dials the routing-table peers this node is not connected to, as
    /// [`Redials`] says.
    fn redial_table(&mut self) {
        let known: Vec<PeerId> = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .flat_map(|bucket| {
                bucket
                    .iter()
                    .map(|entry| *entry.node.key.preimage())
                    .collect::<Vec<_>>()
            })
            .collect();
        let unconnected: Vec<PeerId> = known
            .into_iter()
            .filter(|peer| !self.swarm.is_connected(peer))
            .collect();
        for peer in self.redials.due(&unconnected) {
            // Fails only when a dial is already under way: fine.
            let _ = self.swarm.dial(peer);
        }
    }

    /// A node with no live connection is cut off whatever its routing table says:
    /// the table keeps entries of peers that died (Kademlia never drops a peer's
    /// last address), including seeds that were down when the node started.
    /// Not so an on-demand member of a map: no connection is its idle state
    /// (its lease renewals dial the leader), and redialling the seeds then
    /// was 77 needless dials in a `p3sim` run of 400 nodes.
    fn reconnect_if_isolated(&mut self) {
        let idle_member =
            self.table_follows_map && self.config.connections == Connections::OnDemand;
        if !idle_member
            && !self.config.bootstrap.is_empty()
            && self.swarm.connected_peers().next().is_none()
        {
            tracing::info!("no connected peer; dialling the seeds again");
            self.dial_seeds();
        }
    }

    fn status(&mut self) -> NodeStatus {
        let local = *self.swarm.local_peer_id();
        NodeStatus {
            peer_id: local.to_string(),
            listen_addrs: self
                .swarm
                .listeners()
                .map(|a| format!("{a}/p2p/{local}"))
                .collect(),
            connected_peers: self.swarm.connected_peers().count(),
            routing_table_size: self.routing_table_size(),
            uptime_secs: self.started.elapsed().as_secs(),
            swarm_key: self.config.swarm_key.map(|key| key.fingerprint()),
        }
    }

    fn peers(&mut self) -> Vec<PeerInfo> {
        let mut table: BTreeMap<PeerId, Vec<String>> = BTreeMap::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                let addrs = entry.node.value.iter().map(ToString::to_string).collect();
                table.insert(*entry.node.key.preimage(), addrs);
            }
        }
        let known: BTreeSet<PeerId> = table
            .keys()
            .chain(self.swarm.connected_peers())
            .copied()
            .collect();
        known
            .into_iter()
            .map(|peer| {
                let addrs = table.remove(&peer);
                PeerInfo {
                    peer_id: peer.to_string(),
                    in_routing_table: addrs.is_some(),
                    addrs: addrs.unwrap_or_default(),
                    connected: self.swarm.is_connected(&peer),
                    rtt_us: self.rtts.get(&peer).map(|d| d.as_micros() as u64),
                }
            })
            .collect()
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::MemberChanges(changes) => self.follow_members(changes),
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peers());
            }
            Command::Closest { key, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_closest_peers(key.clone());
                self.closest.insert(id, (key, reply));
            }
            Command::Request { peer, body, reply } => {
                let id = self.swarm.behaviour_mut().rpc.send_request(&peer, body);
                self.outbound.insert(id, reply);
            }
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::Subscribe { topic, reply } => {
                let _ = reply.send(self.subscribe(topic));
            }
            Command::StartProviding { key, reply } => {
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(RecordKey::new(&key))
                {
                    Ok(id) => {
                        self.providing.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(DhtError::Kademlia(e.to_string())));
                    }
                }
            }
            Command::Providers { key, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(RecordKey::new(&key));
                self.providers.insert(id, (HashSet::new(), reply));
            }
            Command::StopProviding(key) => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .stop_providing(&RecordKey::new(&key));
            }
            Command::Connected(reply) => {
                let connected = self
                    .swarm
                    .connected_peers()
                    .filter(|p| self.p3_peers.contains(p))
                    .copied()
                    .collect();
                let _ = reply.send(connected);
            }
            Command::Shutdown(_) => unreachable!("handled by the run loop"),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!("listening on {address}/p2p/{}", self.swarm.local_peer_id());
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                tracing::debug!(%peer_id, addr = %endpoint.get_remote_address(), "connected");
                self.redials.connected(&peer_id);
                self.silence.opened(connection_id, Instant::now());
                self.remotes
                    .insert(connection_id, endpoint.get_remote_address().clone());
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                num_established,
                ..
            } => {
                self.remotes.remove(&connection_id);
                self.silence.closed(connection_id);
                if num_established == 0 {
                    self.p3_peers.remove(&peer_id);
                    self.rtts.remove(&peer_id);
                }
                tracing::debug!(%peer_id, ?cause, num_established, "connection closed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let Some(failed) = handshake_failure(&error) {
                    // The one failure a user can fix: say how, once per address
                    // (and cause), in a bounded set.
                    if self.handshake_failures.len() < 256
                        && self.handshake_failures.insert(failed.clone())
                    {
                        tracing::warn!(
                            "cannot connect: the handshake failed at {failed}; {}",
                            match self.config.swarm_key {
                                Some(key) => format!("that node is not in this node's private swarm (key {})", key.fingerprint()),
                                None => "that node may be in a private swarm: give this node its key (swarm_key_file in config.toml)".to_owned(),
                            }
                        );
                    }
                } else {
                    tracing::debug!(?peer_id, %error, "dial failed");
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, %error, "refused an incoming connection");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            // Only peers that speak our Kademlia protocol belong in the table.
            BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                connection_id,
            }) if info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL) => {
                if info.protocols.iter().any(|p| p.as_ref() == RPC_PROTOCOL)
                    && self.p3_peers.insert(peer_id)
                {
                    self.identified.send_modify(|n| *n += 1);
                }
                let via_loopback = self.remotes.get(&connection_id).is_some_and(is_loopback);
                for addr in info
                    .listen_addrs
                    .into_iter()
                    .filter(|a| worth_dialling(a, via_loopback))
                {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Ok(rtt),
            }) => {
                self.rtts.insert(peer, rtt);
                self.silence.heard(connection, Instant::now());
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            }) => {
                // A peer that stops answering pings is gone even if no RST arrived.
                tracing::debug!(%peer, %error, "ping failed; closing connection");
                self.swarm.close_connection(connection);
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            }) => self.on_query_progress(id, result, step.last, stats.num_requests()),
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            }) => {
                tracing::debug!(%peer, "added to routing table");
                // With `Connections::All`, keep a connection to every peer in
                // the table: the layers above see the network through connected
                // peers (owners, listings), so a node that just joined must not
                // see only its seed. On demand, a request dials its peer.
                if self.config.connections == Connections::All && !self.swarm.is_connected(&peer) {
                    if let Err(error) = self.swarm.dial(peer) {
                        tracing::debug!(%peer, %error, "cannot dial a new routing-table peer");
                    }
                }
            }
            BehaviourEvent::Rpc(event) => self.on_rpc_event(event),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. }) => {
                self.deliver(message)
            }
            _ => {}
        }
    }

    fn on_query_progress(&mut self, id: QueryId, result: QueryResult, last: bool, requests: u32) {
        match result {
            QueryResult::GetClosestPeers(result) => {
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                if let Some((key, reply)) = self.closest.remove(&id) {
                    let local = *self.swarm.local_peer_id();
                    let peers = by_distance(
                        &key,
                        peers
                            .into_iter()
                            .map(|p| p.peer_id)
                            .chain(iter::once(local)),
                    );
                    let _ = reply.send(Ok(Lookup { peers, requests }));
                }
            }
            QueryResult::StartProviding(result) => {
                if let Some(reply) = self.providing.remove(&id) {
                    let _ = reply.send(
                        result
                            .map(drop)
                            .map_err(|e| DhtError::Kademlia(e.to_string())),
                    );
                }
            }
            QueryResult::GetProviders(result) => {
                if let Some((found, _)) = self.providers.get_mut(&id) {
                    if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
                        found.extend(providers);
                    }
                    // A timeout still returns whatever was found before it.
                    if last {
                        if let Some((found, reply)) = self.providers.remove(&id) {
                            let _ = reply.send(Ok(found));
                        }
                    }
                }
            }
            QueryResult::Bootstrap(result) => tracing::debug!(?result, "routing-table refresh"),
            _ => {}
        }
    }

    fn on_rpc_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let (reply, answer) = oneshot::channel();
                let inbound = InboundRequest {
                    peer,
                    body: request,
                    reply: ReplyTo::Swarm(reply),
                };
                match self.requests.try_send(inbound) {
                    Ok(()) => self.responses.push(
                        answer
                            .map(move |body| body.ok().map(|b| (channel, b)))
                            .boxed(),
                    ),
                    // Dropping the channel fails the peer's request at once instead
                    // of letting it time out.
                    Err(e) => tracing::warn!(%peer, "dropping inbound request: {e}"),
                }
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Err(DhtError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }
}
