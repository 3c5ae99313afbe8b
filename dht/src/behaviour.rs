//! The composed libp2p behaviour of a P³ node and how it is configured.

use std::num::NonZeroUsize;

use libp2p::{
    gossipsub, identify,
    identity::Keypair,
    kad::{self, Mode},
    ping, request_response,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
    StreamProtocol,
};

use crate::{
    address_book::AddressBook, codec::LimitedCodec, config::NetworkConfig, db::Database,
    store::RocksStore, DhtError, IDENTIFY_PROTOCOL, KAD_PROTOCOL, RPC_PROTOCOL,
};

/// Longest any request-response exchange may take.
pub(crate) const REQUEST_OUTER_BOUND: std::time::Duration = std::time::Duration::from_secs(3600);

/// Requests one connection may have in flight in each direction.
const MAX_CONCURRENT_REQUESTS: usize = 8192;

/// Every protocol a P³ node speaks. Identify and ping are what other libp2p
/// implementations require before they admit a peer to their routing table.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub kad: kad::Behaviour<RocksStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    /// Off unless [`NetworkConfig::gossip`].
    pub gossipsub: Toggle<gossipsub::Behaviour>,
    pub rpc: request_response::Behaviour<LimitedCodec>,
    /// Raw streams for bulk bytes (blob transfer), driven by the layer above.
    pub streams: libp2p_stream::Behaviour,
    /// Where the members the layer above knows of are, for dials.
    pub address_book: AddressBook,
}

impl Behaviour {
    pub fn new(key: &Keypair, config: &NetworkConfig, db: Database) -> Result<Self, DhtError> {
        let peer_id = key.public().to_peer_id();

        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config.set_query_timeout(config.query_timeout);
        kad_config.set_periodic_bootstrap_interval(Some(config.refresh_interval));
        // Enough parallelism to converge fast in small clusters without flooding big ones.
        kad_config.set_parallelism(NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN));
        let store = RocksStore::new(db, peer_id, config.store_limits.clone());
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
        if !config.listen.is_empty() {
            // A listening node serves the DHT even before it has confirmed an
            // external address, which on a LAN or loopback it never would.
            kad.set_mode(Some(Mode::Server));
        }

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                .with_agent_version(format!("p3/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        );

        let gossipsub = if config.gossip {
            let gossipsub_config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .max_transmit_size(1 << 20)
                .build()
                .map_err(|e| DhtError::Gossip(e.to_string()))?;
            Some(
                gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossipsub_config,
                )
                .map_err(|e| DhtError::Gossip(e.to_string()))?,
            )
        } else {
            None
        };

        let rpc = request_response::Behaviour::with_codec(
            LimitedCodec {
                max_request: config.max_request_bytes,
                max_response: config.max_response_bytes,
            },
            [(
                StreamProtocol::new(RPC_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            // Only an outer bound: a request that moves a large value (a replica
            // fetching its blob before it answers) may rightly take long, so
            // callers set each request's deadline (see `Node::request`).
            request_response::Config::default()
                .with_request_timeout(config.request_timeout.max(REQUEST_OUTER_BOUND))
                // Blocking reads park a request at the primary for as long as
                // they wait; the default 100 per connection would starve others.
                .with_max_concurrent_streams(MAX_CONCURRENT_REQUESTS),
        );

        Ok(Self {
            kad,
            identify,
            // Three pings per failure timeout; the event loop closes a
            // connection none of them was answered on (see `silence`).
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(config.failure_timeout / 3)
                    .with_timeout(config.failure_timeout),
            ),
            gossipsub: Toggle::from(gossipsub),
            rpc,
            streams: libp2p_stream::Behaviour::new(),
            address_book: AddressBook::default(),
        })
    }
}
