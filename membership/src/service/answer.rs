//! Answers to peers' membership requests: Raft's messages, joins and
//! heartbeats (only the leader takes those; a relay forwards the ones sent
//! through it, `relay.rs`), and the map. Each request runs
//! on its own task within [`crate::LeaseTimes::handle_deadline`].

use std::{sync::Arc, time::Instant};

use p3_dht::{InboundRequest, PeerId};
use tokio::sync::mpsc;

use super::{locked, Membership, MAX_ADDRS, MAX_ADDR_LEN, MAX_ANSWERING};
use crate::{
    map::{Change, Map},
    wire::{self, Request, Response},
};

impl Membership {
    /// Answers membership requests from peers, each on its own task, at most
    /// [`MAX_ANSWERING`] at once (beyond that the requests wait in their
    /// peers' streams, which slows those peers down).
    pub(super) async fn serve(self, mut incoming: mpsc::Receiver<InboundRequest>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ANSWERING));
        while let Some(inbound) = incoming.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let membership = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let peer = inbound.peer;
                let request = match wire::decode::<Request>(&inbound.body, &peer) {
                    Ok(request) => request,
                    Err(e) => {
                        // Dropped unanswered: the peer's request fails.
                        tracing::debug!(%peer, error = %e, "bad membership request");
                        return;
                    }
                };
                let response = membership.handle(peer, request).await;
                if let Err(e) = inbound.respond(&response) {
                    tracing::debug!(%peer, error = %e, "cannot answer a membership request");
                }
            });
        }
    }

    /// Answers one request from `peer` (which may be this node), within
    /// [`crate::LeaseTimes::handle_deadline`].
    pub(super) async fn handle(&self, peer: PeerId, request: Request) -> Response {
        let deadline = self.inner.config.times.handle_deadline();
        match tokio::time::timeout(deadline, self.handle_now(peer, request)).await {
            Ok(response) => response,
            Err(_) => Response::Refused(format!(
                "the membership group did not decide within {deadline:?}"
            )),
        }
    }

    async fn handle_now(&self, peer: PeerId, request: Request) -> Response {
        let raft = &self.inner.raft;
        match request {
            Request::Append(rpc) => Response::Append(raft.append_entries(rpc).await),
            Request::Vote(rpc) => Response::Vote(raft.vote(rpc).await),
            Request::Snapshot(rpc) => Response::Snapshot(raft.install_snapshot(rpc).await),
            Request::Map => Response::Map(Map::clone(&self.map())),
            Request::Join {
                addrs,
                incarnation,
                epoch,
            } => {
                if addrs.len() > MAX_ADDRS || addrs.iter().any(|a| a.len() > MAX_ADDR_LEN) {
                    return Response::Refused(format!(
                        "at most {MAX_ADDRS} addresses of at most {MAX_ADDR_LEN} bytes"
                    ));
                }
                if !self.leading() {
                    return self.not_leader();
                }
                self.join(peer, addrs, incarnation, epoch).await
            }
            Request::Heartbeat { incarnation, epoch } => {
                if !self.leading() {
                    return self.not_leader();
                }
                self.heartbeat(peer, incarnation, epoch).await
            }
            // A relay that leads answers as the leader; any other member
            // relays (the member chose it from its map, which may differ
            // from this node's for a moment: the leader decides).
            Request::Relay { incarnation, epoch } => {
                if self.leading() {
                    return self.heartbeat(peer, incarnation, epoch).await;
                }
                self.relay(peer, incarnation, epoch).await
            }
            Request::Batch(beats) => {
                if !self.leading() {
                    return self.not_leader();
                }
                self.answer_batch(beats).await
            }
        }
    }

    /// The leader renews `peer`'s lease.
    async fn heartbeat(&self, peer: PeerId, incarnation: u64, epoch: u64) -> Response {
        // Borrowed, not cloned: every member asks twice a lease.
        let member = self.inner.map.borrow().holds(&peer, incarnation);
        if !member {
            return Response::NotMember;
        }
        // Acknowledge only as a leader a quorum still follows: a deposed
        // leader must not extend anybody's lease.
        if let Err(e) = self.confirm_leading().await {
            return Response::Refused(format!("not confirmed as leader: {e}"));
        }
        locked(&self.inner.liveness).heard(peer, Instant::now());
        let (epoch, catchup) = self.inner.machine.catchup(epoch);
        Response::Renewed { epoch, catchup }
    }

    pub(super) fn not_leader(&self) -> Response {
        Response::NotLeader {
            leader: self.leader().map(|p| p.to_string()),
        }
    }

    /// Adds `peer` to the map: one Raft entry. It follows the map through
    /// its renewals from then on, starting with this answer; only the
    /// voters ([`Membership::place_voters`]) join the Raft group.
    async fn join(&self, peer: PeerId, addrs: Vec<String>, incarnation: u64, has: u64) -> Response {
        let raft = &self.inner.raft;
        // Heard before the entry can apply: the map lists the member as soon
        // as it applies, before the write returns here, and a member listed
        // but never heard counts as silent since this node began to lead
        // (loaded, the leader removed members 0.1 s after their joins).
        locked(&self.inner.liveness).heard(peer, Instant::now());
        let change = Change::Join {
            peer: peer.to_string(),
            addrs,
            incarnation,
        };
        match raft.client_write(change).await {
            Ok(written) => {
                locked(&self.inner.liveness).heard(peer, Instant::now());
                tracing::info!(%peer, epoch = written.data.epoch, "member joined");
                Response::Joined {
                    epoch: written.data.epoch,
                    catchup: self.inner.machine.catchup(has).1,
                }
            }
            Err(e) => Response::Refused(format!("cannot commit the join of {peer}: {e}")),
        }
    }
}
