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
        for member in &changes.added {
            self.peers.insert(member.peer, member.addrs.clone());
        }
    }
}

/// How the members the layer above vouches for changed
/// ([`crate::Node::update_members`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemberChanges {
    /// Members that are new, or whose entry changed.
    pub added: Vec<MemberAddrs>,
    /// Peers that are no longer members.
    pub removed: Vec<PeerId>,
    /// Whether this node is itself a member as its current run (the layer
    /// above's map then comes from a live leader): from then on the routing
    /// table follows the map and Kademlia's own bootstraps are cut.
    pub joined: bool,
}

/// A member with the addresses it announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddrs {
    /// The member.
    pub peer: PeerId,
    /// Its addresses.
    pub addrs: Vec<Multiaddr>,
    /// Whether its entry was written while this node runs, so its addresses
    /// are current. An entry only loaded from disk may name the addresses of
    /// a run that has ended (after a whole cluster restarts, every node
    /// listens on new ports): dials are offered it, since it is often still
    /// right, but the routing table takes only current entries, or a node
    /// would cut its bootstrap with a table of addresses nobody listens on.
    pub current: bool,
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
        let member = |peer, addr: &Multiaddr| MemberAddrs {
            peer,
            addrs: vec![addr.clone()],
            current: true,
        };
        book.apply(&MemberChanges {
            added: vec![member(a, &one)],
            ..MemberChanges::default()
        });
        assert_eq!(offered(&mut book, a), vec![one]);
        assert!(offered(&mut book, b).is_empty());
        book.apply(&MemberChanges {
            added: vec![member(a, &two), member(b, &two)],
            ..MemberChanges::default()
        });
        assert_eq!(offered(&mut book, a), vec![two.clone()], "moved");
        book.apply(&MemberChanges {
            removed: vec![a],
            ..MemberChanges::default()
        });
        assert!(
            offered(&mut book, a).is_empty(),
            "a removed peer is forgotten"
        );
        assert_eq!(offered(&mut book, b), vec![two]);
    }
}
