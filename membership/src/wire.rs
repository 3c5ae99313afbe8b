//! The membership protocol between nodes: one libp2p stream per request,
//! carrying one length-prefixed CBOR request and one answer, each at most
//! [`MAX_FRAME`] bytes. Peers' bytes are validated here; nothing a peer sends
//! can panic the node or make it allocate more than a frame.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use openraft::{
    error::{InstallSnapshotError, RaftError},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use p3_dht::{Node, PeerId, Stream};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    error::{MembershipError, Result},
    map::Map,
    raft::{NodeId, TypeConfig},
};

/// Stream protocol id of the membership protocol.
pub const MEMBERSHIP_PROTOCOL: &str = "/p3/membership/1.0.0";

/// The largest request or answer: a snapshot of a map of thousands of
/// members fits; a peer cannot make the node buffer more.
pub const MAX_FRAME: usize = 4 << 20;

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
    },
    /// The sender renews its membership lease. Only the leader answers.
    Heartbeat {
        /// The sender's incarnation (a heartbeat of an older incarnation
        /// renews nothing).
        incarnation: u64,
    },
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
    },
    /// The heartbeat is acknowledged by a leader that confirmed its
    /// leadership with a quorum after receiving it.
    Renewed {
        /// The map's epoch at the leader.
        epoch: u64,
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

/// Writes one frame: a 4-byte big-endian length and the CBOR body.
async fn write_frame<T: Serialize>(stream: &mut Stream, value: &T) -> Result<()> {
    let mut body = Vec::new();
    ciborium::into_writer(value, &mut body)
        .map_err(|e| MembershipError::Protocol(format!("cannot encode: {e}")))?;
    if body.len() > MAX_FRAME {
        return Err(MembershipError::Protocol(format!(
            "a {} byte message is over the {MAX_FRAME} byte limit",
            body.len()
        )));
    }
    let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
    stream.write_all(&length.to_be_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one frame written by [`write_frame`].
async fn read_frame<T: DeserializeOwned>(stream: &mut Stream, peer: &PeerId) -> Result<T> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await?;
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(MembershipError::Protocol(format!(
            "{peer} sent a {length} byte message; the limit is {MAX_FRAME}"
        )));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    ciborium::from_reader(body.as_slice())
        .map_err(|e| MembershipError::Protocol(format!("{peer} sent a malformed message: {e}")))
}

/// Times a call asks again after its stream broke before the answer.
const STREAM_TRIES: u32 = 2;

/// Sends `request` to `peer` and waits at most `deadline` for its answer.
pub async fn call(
    node: &Node,
    peer: PeerId,
    request: &Request,
    deadline: Duration,
) -> Result<Response> {
    let exchange = async {
        let mut tries = 0;
        loop {
            let mut stream = node
                .open_stream(peer, MEMBERSHIP_PROTOCOL)
                .await
                .map_err(|e| MembershipError::Unreachable(format!("{peer}: {e}")))?;
            let answer = match write_frame(&mut stream, request).await {
                Ok(()) => read_frame(&mut stream, &peer).await,
                Err(e) => Err(e),
            };
            let _ = stream.close().await;
            match answer {
                // libp2p drops an inbound stream that arrives while the
                // peer's previous one is still being handed over; every
                // membership request may be sent again.
                Err(MembershipError::Io(e)) if tries < STREAM_TRIES => {
                    tries += 1;
                    tracing::debug!(%peer, error = %e, "membership stream broke; asking again");
                    tokio::time::sleep(Duration::from_millis(5 * tries as u64)).await;
                }
                answer => return answer,
            }
        }
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| {
            MembershipError::Unreachable(format!("{peer} did not answer within {deadline:?}"))
        })?
}

/// Reads the request of an inbound stream.
pub async fn receive(stream: &mut Stream, peer: &PeerId) -> Result<Request> {
    read_frame(stream, peer).await
}

/// Writes the answer to an inbound stream and closes it.
pub async fn answer(stream: &mut Stream, response: &Response) -> Result<()> {
    write_frame(stream, response).await?;
    let _ = stream.close().await;
    Ok(())
}
