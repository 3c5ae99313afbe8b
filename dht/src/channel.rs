//! Request channels for the layers above the object space's own requests:
//! a protocol whose requests travel framed on one long-lived stream per
//! peer (see `rpc`), instead of a new libp2p stream per message.
//!
//! A stream per message costs a substream's opening, protocol negotiation
//! and closing on both nodes; for the membership group, whose Raft
//! heartbeats and lease renewals are small and constant, that was most of
//! what an idle cluster spent (`docs/scale.md`).

use std::{sync::Arc, time::Duration};

use libp2p::PeerId;

use crate::{
    rpc::{Failed, Rpc},
    DhtError,
};

/// The requesting side of one protocol's channel. Cheap to clone.
#[derive(Clone)]
pub struct Channel {
    pub(crate) rpc: Arc<Rpc>,
}

impl Channel {
    /// Sends `body` to `peer` and waits at most `timeout` for its answer.
    /// A failure names the peer; whether a request that failed after it was
    /// sent was acted on is unknown, as with any connection.
    pub async fn request(
        &self,
        peer: PeerId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, DhtError> {
        match self.rpc.request_within(peer, body, timeout).await {
            Ok(answer) => Ok(answer),
            Err(Failed::Sent(e)) => Err(e),
            Err(Failed::NoStream { reason, .. }) => Err(DhtError::Request { peer, reason }),
        }
    }
}
