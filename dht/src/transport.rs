//! The swarm's transport: TCP (or, in `p3sim`, in-process memory), then (in a private swarm) the pre-shared key's
//! encryption, then noise and yamux; and how a failed dial is explained to the
//! user.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use either::Either;
use libp2p::{
    core::{
        transport::{upgrade::Version, DialOpts, ListenerId, PortUse, TransportEvent},
        Transport,
    },
    identity::Keypair,
    noise,
    pnet::PnetConfig,
    swarm::DialError,
    tcp, yamux, Multiaddr, Swarm, SwarmBuilder, TransportError,
};

use crate::{behaviour::Behaviour, config::NetworkConfig, DhtError};

/// Builds the swarm around `behaviour`.
pub(crate) fn build_swarm(
    key: Keypair,
    config: &NetworkConfig,
    behaviour: Behaviour,
) -> Result<Swarm<Behaviour>, DhtError> {
    let transport_err = |e: &dyn std::fmt::Display| DhtError::Transport(e.to_string());
    let swarm_key = config.swarm_key;
    Ok(SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        // TCP with Nagle off, the swarm key's stream cipher under everything
        // else if there is one, then noise (identity and encryption) and yamux.
        .with_other_transport(|key| {
            // `/memory/PORT` addresses go to the in-process transport that
            // `p3sim` runs its nodes on; a node never listens on one otherwise.
            let tcp = FreshPorts(tcp::tokio::Transport::new(
                tcp::Config::default().nodelay(true),
            ))
            .or_transport(crate::memory::transport());
            let base =
                match swarm_key {
                    Some(swarm_key) => Either::Left(tcp.and_then(move |socket, _| {
                        PnetConfig::new(swarm_key.psk()).handshake(socket)
                    })),
                    None => Either::Right(tcp),
                };
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                base.upgrade(Version::V1Lazy)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()),
            )
        })
        .map_err(|e| transport_err(&e))?
        .with_dns()
        .map_err(|e| transport_err(&e))?
        .with_behaviour(|_| behaviour)
        .map_err(|e: std::convert::Infallible| -> DhtError { match e {} })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
        .build())
}

/// A transport that dials from a fresh port every time. libp2p dials from
/// the listening port by default (port reuse, for NAT hole punching, which
/// P³ does not do). Two nodes that dial each other at the same instant — a
/// routing-table refresh on both finds the other — then make one TCP
/// connection by simultaneous open; both sides act as noise's initiator and
/// both handshakes fail ("input error"). Neither redials a peer not yet in
/// its routing table, so such a pair stayed apart until the next refresh, a
/// minute later. From fresh ports the two dials are two connections.
struct FreshPorts<T>(T);

impl<T: Transport + Unpin> Transport for FreshPorts<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let opts = DialOpts {
            port_use: PortUse::New,
            ..opts
        };
        self.0.dial(addr, opts)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

/// If a dial failed after the TCP connection was made, the addresses where
/// it did, each with the innermost cause. The other side answered but the
/// handshake did not complete, which between P³ nodes means their swarm keys
/// differ (two private swarms, or a private swarm and a public node).
/// Refused, unreachable or timed-out dials are not handshake failures.
pub(crate) fn handshake_failure(error: &DialError) -> Option<String> {
    let DialError::Transport(attempts) = error else {
        return None;
    };
    let failed: Vec<String> = attempts
        .iter()
        .filter_map(|(addr, e)| match e {
            TransportError::Other(e) if !unreachable(e.kind()) => {
                Some(format!("{addr} ({})", innermost(e)))
            }
            _ => None,
        })
        .collect();
    (!failed.is_empty()).then(|| failed.join(", "))
}

fn unreachable(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused | TimedOut | HostUnreachable | NetworkUnreachable | AddrNotAvailable
    )
}

/// The last error of `e`'s source chain: the one that says what happened.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    use futures::future::poll_fn;
    use libp2p::core::{multiaddr::Protocol, Endpoint};

    use super::*;

    /// Polls `transport` until `pick` takes one of its events.
    async fn event<T: Transport + Unpin, O>(
        transport: &mut T,
        mut pick: impl FnMut(TransportEvent<T::ListenerUpgrade, T::Error>) -> Option<O>,
    ) -> O {
        poll_fn(|cx| loop {
            match Pin::new(&mut *transport).poll(cx) {
                Poll::Ready(event) => {
                    if let Some(picked) = pick(event) {
                        return Poll::Ready(picked);
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }

    /// Listens on 127.0.0.1 and returns the address.
    async fn listen<T: Transport + Unpin>(transport: &mut T) -> Multiaddr {
        let any: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        assert!(transport.listen_on(ListenerId::next(), any).is_ok());
        event(transport, |e| match e {
            TransportEvent::NewAddress { listen_addr, .. } => Some(listen_addr),
            _ => None,
        })
        .await
    }

    /// The port `a` (listening) dials `b` from, as `b` sees it, when libp2p
    /// asks for port reuse (its default).
    async fn source_port<T: Transport + Unpin>(a: &mut T, b: &mut T) -> u16 {
        let b_addr = listen(b).await;
        let reuse = DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        };
        let Ok(dial) = a.dial(b_addr, reuse) else {
            panic!("127.0.0.1 is dialable");
        };
        let incoming = event(b, |e| match e {
            TransportEvent::Incoming { send_back_addr, .. } => Some(send_back_addr),
            _ => None,
        });
        let (_, remote) = futures::future::join(dial, incoming).await;
        port(&remote)
    }

    fn port(addr: &Multiaddr) -> u16 {
        match addr.iter().nth(1) {
            Some(Protocol::Tcp(port)) => port,
            _ => panic!("a TCP address: {addr}"),
        }
    }

    #[tokio::test]
    async fn dials_leave_from_a_fresh_port_not_the_listening_one() {
        let tcp = || tcp::tokio::Transport::new(tcp::Config::default());
        // Plain TCP reuses the listening port: the simultaneous-open hazard.
        let (mut a, mut b) = (tcp(), tcp());
        let listening = port(&listen(&mut a).await);
        assert_eq!(source_port(&mut a, &mut b).await, listening);
        // The node's transport does not.
        let (mut a, mut b) = (FreshPorts(tcp()), FreshPorts(tcp()));
        let listening = port(&listen(&mut a).await);
        assert_ne!(source_port(&mut a, &mut b).await, listening);
    }
}
