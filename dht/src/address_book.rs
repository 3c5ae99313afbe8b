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
    /// Applies the map's latest changes: peers added (or with new
    /// addresses) are offered with those addresses, peers removed are
    /// forgotten. Changes, not the whole map: each of the map's changes
    /// reaches every node, and re-reading N members' addresses on each made
    /// a join cost O(N) per node (multiaddr parsing was the top of the
    /// profile at N = 750).
    pub fn apply(&mut self, changes: &MemberChanges) {
        for peer in &changes.removed {
            self.peers.remove(peer);
        }
        for (peer, addrs) in &changes.added {
            self.peers.insert(*peer, addrs.clone());
        }
    }
}

/// How the members the layer above vouches for changed
/// ([`crate::Node::update_members`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemberChanges {
    /// Peers that are new, or whose addresses changed, with their addresses.
    pub added: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Peers that are no longer members.
    pub removed: Vec<PeerId>,
}

impl MemberChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
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
    fn a_dial_is_offered_the_addresses_of_current_members_only() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let (one, two): (Multiaddr, Multiaddr) =
            ("/memory/1".parse().unwrap(), "/memory/2".parse().unwrap());
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
        book.apply(&MemberChanges {
            added: vec![(a, vec![one.clone()])],
            removed: vec![],
        });
        assert_eq!(offered(&mut book, a), vec![one]);
        assert!(offered(&mut book, b).is_empty());
        book.apply(&MemberChanges {
            added: vec![(a, vec![two.clone()]), (b, vec![two.clone()])],
            removed: vec![],
        });
        assert_eq!(offered(&mut book, a), vec![two.clone()], "moved");
        book.apply(&MemberChanges {
            added: vec![],
            removed: vec![a],
        });
        assert!(
            offered(&mut book, a).is_empty(),
            "a removed peer is forgotten"
        );
        assert_eq!(offered(&mut book, b), vec![two]);
    }
}
