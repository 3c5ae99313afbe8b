//! The swarm's transport: TCP, then (in a private swarm) the pre-shared key's
//! encryption, then noise and yamux; and how a failed dial is explained to the
//! user.

use either::Either;
use libp2p::{
    core::{transport::upgrade::Version, Transport},
    identity::Keypair,
    noise,
    pnet::PnetConfig,
    swarm::DialError,
    tcp, yamux, Swarm, SwarmBuilder, TransportError,
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
            let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
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
