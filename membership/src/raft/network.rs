//! openraft's network: each Raft RPC is one [`crate::wire`] exchange over the
//! membership channel of the node's swarm.

use std::time::Duration;

use openraft::{
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::{RPCOption, RaftNetwork, RaftNetworkFactory},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use p3_dht::{Channel, PeerId};

use super::{NodeId, RaftPeer, TypeConfig};
use crate::{
    error::MembershipError,
    wire::{self, Request, Response},
};

/// Makes a [`Connection`] per replication target.
#[derive(Clone)]
pub struct Network {
    channel: Channel,
}

impl Network {
    /// Raft RPCs over the membership `channel`.
    pub fn new(channel: Channel) -> Self {
        Network { channel }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, peer: &RaftPeer) -> Connection {
        Connection {
            channel: self.channel.clone(),
            target,
            peer: peer.peer.parse().ok(),
        }
    }
}

/// Sends Raft RPCs to one peer; dials lazily (the swarm reuses connections).
pub struct Connection {
    channel: Channel,
    target: NodeId,
    peer: Option<PeerId>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, RaftPeer, RaftError<NodeId, E>>>;

impl Connection {
    async fn call<E: std::error::Error>(
        &self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<NodeId, RaftPeer, RaftError<NodeId, E>>> {
        let Some(peer) = self.peer else {
            let error = MembershipError::Protocol("the member's peer id does not parse".into());
            return Err(RPCError::Unreachable(Unreachable::new(&error)));
        };
        let deadline = option.hard_ttl().max(Duration::from_millis(100));
        match wire::call(&self.channel, peer, &request, deadline).await {
            Ok(answer) => Ok(answer),
            Err(e @ MembershipError::Unreachable(_)) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn unexpected<E: std::error::Error>(
        &self,
        answer: &Response,
    ) -> RPCError<NodeId, RaftPeer, RaftError<NodeId, E>> {
        let error = MembershipError::Protocol(format!("unexpected answer {answer:?}"));
        RPCError::Network(NetworkError::new(&error))
    }

    fn remote<E: std::error::Error>(
        &self,
        error: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, RaftPeer, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, error))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.call(Request::Append(rpc), &option).await? {
            Response::Append(Ok(answer)) => Ok(answer),
            Response::Append(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(Request::Snapshot(rpc), &option).await? {
            Response::Snapshot(Ok(answer)) => Ok(answer),
            Response::Snapshot(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(Request::Vote(rpc), &option).await? {
            Response::Vote(Ok(answer)) => Ok(answer),
            Response::Vote(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(&other)),
        }
    }
}
