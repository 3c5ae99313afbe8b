//! Relayed lease renewals, both ends. A relay ([`crate::relays`]) collects
//! the heartbeats its members send while a batch is with the leader and
//! forwards them in the next one (the batching of [`crate::confirm::Rounds`]:
//! one batch in flight per relay, whatever its fan-in); the leader answers a
//! batch after one confirmation of its leadership, as it answers a single
//! heartbeat. `docs/relayed-leases.md` has why a lease stays safe: a member
//! counts its lease from when it sent, before the relay forwarded it, and
//! only the leader, confirmed by a quorum, acknowledges.

use std::time::Instant;

use p3_dht::PeerId;
use tokio::sync::oneshot;

use super::{locked, Membership};
use crate::wire::{self, Beat, Request, Response, MAX_BATCH};

/// A member's heartbeat waiting in this relay, and where its answer goes.
pub(super) type Waiting = (Beat, oneshot::Sender<Response>);

impl Membership {
    /// Renews `peer`'s lease through this node, a relay: the heartbeat
    /// waits for the next batch, and the member gets the leader's answer.
    pub(super) async fn relay(&self, peer: PeerId, incarnation: u64, epoch: u64) -> Response {
        let beat = Beat {
            peer: peer.to_string(),
            incarnation,
            epoch,
        };
        let (answer, answered) = oneshot::channel();
        if locked(&self.inner.relaying).arrive((beat, answer)) {
            tokio::spawn(self.clone().relay_batches());
        }
        answered
            .await
            .unwrap_or_else(|_| Response::Refused("the relay stopped".into()))
    }

    /// Forwards batches while members' heartbeats wait for one.
    async fn relay_batches(self) {
        loop {
            let Some(mut waiting) = locked(&self.inner.relaying).next() else {
                return;
            };
            while !waiting.is_empty() {
                let rest = waiting.split_off(waiting.len().min(MAX_BATCH));
                self.forward(std::mem::replace(&mut waiting, rest)).await;
            }
        }
    }

    /// Sends one batch to the leader and hands each member its answer.
    async fn forward(&self, batch: Vec<Waiting>) {
        let (beats, answers): (Vec<Beat>, Vec<_>) = batch.into_iter().unzip();
        let epochs: Vec<u64> = beats.iter().map(|b| b.epoch).collect();
        let times = self.inner.config.times;
        // As long as a member waits for its own heartbeat's answer.
        let deadline = times.lease.saturating_sub(times.heartbeat_every());
        let outcome = match self.leader() {
            None => Err("the relay knows no leader".to_string()),
            Some(leader) => match self.send_batch(leader, beats, deadline).await {
                Ok(Response::Batch {
                    epoch,
                    held,
                    shared,
                }) if held.len() == answers.len() => Ok((epoch, held, shared)),
                Ok(Response::Batch { held, .. }) => Err(format!(
                    "the leader answered {} of {} heartbeats",
                    held.len(),
                    answers.len()
                )),
                Ok(Response::Refused(why)) => Err(why),
                Ok(other) => Err(format!("the leader answered {other:?}")),
                Err(e) => Err(e.to_string()),
            },
        };
        if let Err(why) = &outcome {
            tracing::debug!(error = %why, members = answers.len(), "cannot relay heartbeats");
        }
        for (i, answer) in answers.into_iter().enumerate() {
            let response = match &outcome {
                Ok((epoch, held, shared)) if held[i] => Response::Renewed {
                    epoch: *epoch,
                    catchup: shared.for_member(epochs[i]),
                },
                Ok(_) => Response::NotMember,
                Err(why) => Response::Refused(format!("relayed: {why}")),
            };
            // A member that stopped waiting dropped its side.
            let _ = answer.send(response);
        }
    }

    /// Sends a batch to `leader`, or answers it here when that is this node
    /// (not through [`Membership::ask`], whose answers may relay: a future
    /// that can contain itself has no size).
    async fn send_batch(
        &self,
        leader: PeerId,
        beats: Vec<Beat>,
        deadline: std::time::Duration,
    ) -> crate::Result<Response> {
        if leader != self.inner.me {
            return wire::call(
                &self.inner.channel,
                leader,
                &Request::Batch(beats),
                deadline,
            )
            .await;
        }
        if !self.leading() {
            return Ok(self.not_leader());
        }
        Ok(self.answer_batch(beats).await)
    }

    /// The leader's answer to a relay's batch: which members it holds,
    /// renewed only after a quorum confirmed, in a round that started after
    /// the batch arrived, that this node still leads.
    pub(super) async fn answer_batch(&self, beats: Vec<Beat>) -> Response {
        if beats.len() > MAX_BATCH {
            return Response::Refused(format!("at most {MAX_BATCH} heartbeats in a batch"));
        }
        if let Err(e) = self.confirm_leading().await {
            return Response::Refused(format!("not confirmed as leader: {e}"));
        }
        let peers: Vec<Option<PeerId>> = beats.iter().map(|b| b.peer.parse().ok()).collect();
        let held: Vec<bool> = {
            let map = self.inner.map.borrow();
            beats
                .iter()
                .zip(&peers)
                .map(|(beat, peer)| peer.is_some_and(|p| map.holds(&p, beat.incarnation)))
                .collect()
        };
        let now = Instant::now();
        {
            let mut liveness = locked(&self.inner.liveness);
            for (peer, held) in peers.iter().zip(&held) {
                if let (Some(peer), true) = (peer, held) {
                    liveness.heard(*peer, now);
                }
            }
        }
        let (epoch, shared) = self.inner.machine.shared(beats.iter().map(|b| b.epoch));
        Response::Batch {
            epoch,
            held,
            shared,
        }
    }
}
