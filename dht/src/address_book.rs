//! Addresses of peers that the layer above vouches for (the membership map's
//! members), offered whenever the swarm dials one of them. Kademlia's table
//! keeps at most k peers per bucket and identify remembers a bounded number,
//! so in a network larger than those a node could fail to dial a key's owner
//! that the map names, with its addresses, right there.

use std::{
    collections::HashMap,
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

/// A behaviour that only answers "where is this peer?" when the swarm dials.
#[derive(Default)]
pub(crate) struct AddressBook {
    peers: HashMap<PeerId, Vec<Multiaddr>>,
}

impl AddressBook {
    /// Replaces the whole book: the peers of the latest map and their
    /// addresses (peers left out are forgotten). Returns what changed, so
    /// the routing table can follow the map by its differences instead of
    /// being rebuilt from every member on each of the map's changes.
    pub fn replace(&mut self, peers: HashMap<PeerId, Vec<Multiaddr>>) -> Changes {
        let removed = self
            .peers
            .keys()
            .filter(|p| !peers.contains_key(p))
            .copied()
            .collect();
        let added = peers
            .iter()
            .filter(|(p, addrs)| self.peers.get(p) != Some(addrs))
            .map(|(p, addrs)| (*p, addrs.clone()))
            .collect();
        self.peers = peers;
        Changes { added, removed }
    }
}

/// How one [`AddressBook::replace`] changed the book.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Peers that are new, or whose addresses changed, with their addresses.
    pub added: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Peers the book no longer names.
    pub removed: Vec<PeerId>,
}

impl NetworkBehaviour for AddressBook {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(peer
            .and_then(|p| self.peers.get(&p))
            .cloned()
            .unwrap_or_default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dial_is_offered_the_addresses_of_the_latest_book_only() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let addr: Multiaddr = "/memory/7".parse().unwrap();
        let mut book = AddressBook::default();
        let offered = |book: &mut AddressBook, peer| {
            book.handle_pending_outbound_connection(
                ConnectionId::new_unchecked(0),
                Some(peer),
                &[],
                Endpoint::Dialer,
            )
            .unwrap()
        };
        book.replace(HashMap::from([(a, vec![addr.clone()])]));
        assert_eq!(offered(&mut book, a), vec![addr]);
        assert!(offered(&mut book, b).is_empty());
        book.replace(HashMap::from([(b, Vec::new())]));
        assert!(
            offered(&mut book, a).is_empty(),
            "a peer left out is forgotten"
        );
    }

    #[test]
    fn a_replacement_reports_new_moved_and_departed_peers_only() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let (one, two): (Multiaddr, Multiaddr) =
            ("/memory/1".parse().unwrap(), "/memory/2".parse().unwrap());
        let mut book = AddressBook::default();
        let first = book.replace(HashMap::from([
            (a, vec![one.clone()]),
            (b, vec![one.clone()]),
        ]));
        assert_eq!(first.added.len(), 2);
        assert!(first.removed.is_empty());

        let second = book.replace(HashMap::from([
            (a, vec![one.clone()]),
            (c, vec![two.clone()]),
        ]));
        assert_eq!(second.added, vec![(c, vec![two.clone()])], "a is unchanged");
        assert_eq!(second.removed, vec![b]);

        let third = book.replace(HashMap::from([(a, vec![two.clone()]), (c, vec![two])]));
        assert_eq!(third.added.len(), 1, "only a moved");
        assert_eq!(third.added[0].0, a);
        assert!(third.removed.is_empty());
    }
}
