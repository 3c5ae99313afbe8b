//! The membership protocol between nodes: CBOR requests and answers, each
//! at most [`MAX_FRAME`] bytes, framed on one long-lived stream per peer
//! ([`p3_dht::Channel`]). Peers' bytes are validated here; nothing a peer
//! sends can panic the node or make it allocate more than a frame.

use std::time::Duration;

use openraft::{
    error::{InstallSnapshotError, RaftError},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use p3_dht::{Channel, PeerId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    error::{MembershipError, Result},
    follow::{Catchup, Shared},
    map::Map,
    raft::{NodeId, TypeConfig},
};

/// Stream protocol id of the membership protocol.
pub const MEMBERSHIP_PROTOCOL: &str = "/p3/membership/4.0.0";

/// The largest request or answer: a snapshot of a map of thousands of
/// members fits; a peer cannot make the node buffer more.
pub const MAX_FRAME: usize = 4 << 20;

/// The most heartbeats in one relayed batch ([`Request::Batch`]): a relay
/// has about `members_per_relay` members; a leader refuses more.
pub const MAX_BATCH: usize = 1024;

/// One member's heartbeat, as a relay forwards it to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Beat {
    /// The member's peer id, as text: the peer that sent the heartbeat to
    /// the relay (libp2p authenticated it).
    pub peer: String,
    /// The member's incarnation.
    pub incarnation: u64,
    /// The epoch of the map the member holds.
    pub epoch: u64,
}

/// A request to a member of the membership group.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Raft: replicate log entries (or heartbeat).
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft: ask for a vote.
    Vote(VoteRequest<NodeId>),
    /// Raft: a chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// The sender asks to (re)join the map with these addresses, as this
    /// incarnation. Only the leader accepts.
    Join {
        /// The sender's addresses.
        addrs: Vec<String>,
        /// The sender's incarnation.
        incarnation: u64,
        /// The epoch of the map the sender holds.
        epoch: u64,
    },
    /// The sender renews its membership lease. Only the leader answers.
    Heartbeat {
        /// The sender's incarnation (a heartbeat of an older incarnation
        /// renews nothing).
        incarnation: u64,
        /// The epoch of the map the sender holds: the answer carries what
        /// it lacks.
        epoch: u64,
    },
    /// The sender renews its membership lease through the node asked, a
    /// relay ([`crate::relays`]), which forwards it to the leader in its
    /// next batch and answers as the leader would have.
    Relay {
        /// The sender's incarnation.
        incarnation: u64,
        /// The epoch of the map the sender holds.
        epoch: u64,
    },
    /// A relay forwards its members' heartbeats. Only the leader answers,
    /// after one confirmation of its leadership for the whole batch.
    Batch(Vec<Beat>),
    /// The current map, from whoever is asked.
    Map,
}

/// An answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::Append`].
    Append(std::result::Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::Vote`].
    Vote(std::result::Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::Snapshot`].
    Snapshot(
        std::result::Result<
            InstallSnapshotResponse<NodeId>,
            RaftError<NodeId, InstallSnapshotError>,
        >,
    ),
    /// The join is committed: the sender is a member at this epoch.
    Joined {
        /// The map's epoch with the sender in it.
        epoch: u64,
        /// What the sender's map lacks to reach the leader's.
        catchup: Catchup,
    },
    /// The heartbeat is acknowledged by a leader that confirmed its
    /// leadership with a quorum after receiving it.
    Renewed {
        /// The map's epoch at the leader.
        epoch: u64,
        /// What the sender's map lacks to reach it.
        catchup: Catchup,
    },
    /// A relayed batch is acknowledged, as [`Response::Renewed`] is, for
    /// the members the leader holds.
    Batch {
        /// The map's epoch at the leader.
        epoch: u64,
        /// Per heartbeat of the batch, in order: whether the leader holds
        /// that member (as that incarnation); one it does not must join.
        held: Vec<bool>,
        /// What the members lack of the leader's map.
        shared: Shared,
    },
    /// The sender is not in the map (as this incarnation): it must join.
    NotMember,
    /// Ask the leader instead (its peer id, when known).
    NotLeader {
        /// The leader's peer id, as text.
        leader: Option<String>,
    },
    /// The map.
    Map(Map),
    /// The request was understood and refused; one line why.
    Refused(String),
}

/// Encodes a request or answer, refusing one over [`MAX_FRAME`].
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    ciborium::into_writer(value, &mut body)
        .map_err(|e| MembershipError::Protocol(format!("cannot encode: {e}")))?;
    if body.len() > MAX_FRAME {
        return Err(MembershipError::Protocol(format!(
            "a {} byte message is over the {MAX_FRAME} byte limit",
            body.len()
        )));
    }
    Ok(body)
}

/// Decodes what `peer` sent; a malformed message is an error naming it.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8], peer: &PeerId) -> Result<T> {
    ciborium::from_reader(body)
        .map_err(|e| MembershipError::Protocol(format!("{peer} sent a malformed message: {e}")))
}

/// Times a call asks again after its stream broke before the answer.
const STREAM_TRIES: u32 = 2;

/// Sends `request` to `peer` and waits at most `deadline` for its answer.
pub async fn call(
    channel: &Channel,
    peer: PeerId,
    request: &Request,
    deadline: Duration,
) -> Result<Response> {
    let body = encode(request)?;
    let exchange = async {
        let mut tries = 0;
        loop {
            match channel.request(peer, body.clone(), deadline).await {
                Ok(answer) => return decode(&answer, &peer),
                // A stream to the peer broke (its connection closed, or the
                // peer dropped a stream opened in a burst): every
                // membership request may be sent again.
                Err(e) if tries < STREAM_TRIES => {
                    tries += 1;
                    tracing::debug!(%peer, error = %e, "membership request failed; asking again");
                    tokio::time::sleep(Duration::from_millis(5 * tries as u64)).await;
                }
                Err(e) => return Err(MembershipError::Unreachable(format!("{peer}: {e}"))),
            }
        }
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| {
            MembershipError::Unreachable(format!("{peer} did not answer within {deadline:?}"))
        })?
}
