//! The leader's duties: removing members whose leases surely ran out,
//! giving the group the voters the map wants, and confirming with a quorum
//! that it still leads. The decisions are [`crate::lease::Liveness`],
//! [`crate::voters::plan`] and [`crate::confirm::Rounds`].

use std::{collections::BTreeSet, time::Instant};

use openraft::ChangeMembers;
use p3_dht::PeerId;

use tokio::sync::oneshot;

use super::{locked, Confirmed, Membership};
use crate::{
    error::{MembershipError, Result},
    lease::LeaseTimes,
    map::Change,
    raft::{node_id, NodeId, RaftPeer},
    voters,
};

impl Membership {
    /// The leader's duties, checked every [`LeaseTimes::lead_every`]: remove members
    /// whose leases surely ran out, then give the group the voters the map
    /// wants.
    pub(super) async fn lead(self) {
        let times = self.inner.config.times;
        loop {
            tokio::time::sleep(times.lead_every()).await;
            let now = Instant::now();
            let leading = self.leading();
            {
                let mut liveness = locked(&self.inner.liveness);
                if leading && !liveness.leading() {
                    liveness.lead(now);
                } else if !leading && liveness.leading() {
                    liveness.follow();
                }
            }
            if !leading {
                continue;
            }
            let expired = {
                // Borrowed, not cloned: this runs every tick on the leader.
                let map = self.inner.map.borrow();
                locked(&self.inner.liveness).expired(&map, &self.inner.me, now, &times)
            };
            for (peer, incarnation) in expired {
                let change = Change::Remove {
                    peer: peer.to_string(),
                    incarnation,
                };
                match self.inner.raft.client_write(change).await {
                    Ok(written) => {
                        tracing::info!(%peer, epoch = written.data.epoch, "member removed: its lease ran out")
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "cannot remove a member"),
                }
            }
            if let Err(e) = self.place_voters(now, &times).await {
                tracing::debug!(error = %e, "cannot change the voters");
            }
        }
    }

    /// Applies [`voters::plan`]: a new voter joins the group as a learner
    /// first (it gets the log or a snapshot), then the voters are replaced.
    /// A voter that loses its seat stays a learner until it holds the
    /// configuration that says so (a node that never learns it was removed
    /// campaigns as the voter it was), then leaves the group; so do learners
    /// that left the map. Only the voters and these few are in the group:
    /// every other member follows the map through its renewals.
    async fn place_voters(&self, now: Instant, times: &LeaseTimes) -> Result<()> {
        let raft = &self.inner.raft;
        let (plan, known, surplus) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            let stored = &metrics.membership_config;
            let membership = stored.membership();
            let peer_of = |id: &NodeId| -> Option<PeerId> {
                membership.get_node(id).and_then(|n| n.peer.parse().ok())
            };
            let current: BTreeSet<PeerId> = membership
                .voter_ids()
                .filter_map(|id| peer_of(&id))
                .collect();
            // The map is borrowed (not held across an await, which would
            // stall whoever applies the next one).
            let map = self.inner.map.borrow();
            let plan = {
                let liveness = locked(&self.inner.liveness);
                voters::plan(&map, &current, &self.inner.me, |p| {
                    liveness.alive(p, now, times)
                })
            };
            let configured = stored.log_id().map(|l| l.index);
            let matched = |id: &NodeId| {
                let replication = metrics.replication.as_ref()?;
                replication.get(id).copied().flatten().map(|l| l.index)
            };
            let surplus: BTreeSet<NodeId> = membership
                .learner_ids()
                .filter(|id| {
                    let listed = peer_of(id).is_some_and(|p| map.member(&p).is_some());
                    !listed || matched(id) >= configured
                })
                .collect();
            let known: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
            (plan, known, surplus)
        };
        if let Some(next) = plan {
            for peer in &next {
                let id = node_id(peer);
                if known.contains(&id) {
                    continue;
                }
                let node = RaftPeer {
                    peer: peer.to_string(),
                };
                // Blocks until the learner has the log: a voter that lags
                // would hold up every commit once it counts.
                let deadline = times.handle_deadline();
                tokio::time::timeout(deadline, raft.add_learner(id, node, true))
                    .await
                    .map_err(|_| {
                        MembershipError::Raft(format!(
                            "{peer} did not catch up within {deadline:?}"
                        ))
                    })?
                    .map_err(|e| MembershipError::Raft(e.to_string()))?;
            }
            let ids: BTreeSet<NodeId> = next.iter().map(node_id).collect();
            tracing::info!(voters = ?next, "changing the voters");
            raft.change_membership(ChangeMembers::ReplaceAllVoters(ids), true)
                .await
                .map_err(|e| MembershipError::Raft(e.to_string()))?;
            return Ok(());
        }
        if !surplus.is_empty() {
            raft.change_membership(ChangeMembers::RemoveNodes(surplus), true)
                .await
                .map_err(|e| MembershipError::Raft(e.to_string()))?;
        }
        Ok(())
    }

    /// Waits for a quorum to confirm that this node leads, in a round that
    /// starts after this call: one round answers every caller that arrived
    /// before it started ([`crate::confirm::Rounds`]).
    pub(super) async fn confirm_leading(&self) -> Confirmed {
        let (answer, confirmed) = oneshot::channel();
        if locked(&self.inner.confirmations).arrive(answer) {
            tokio::spawn(self.clone().confirm_rounds());
        }
        confirmed
            .await
            .unwrap_or_else(|_| Err("the membership layer stopped".into()))
    }

    /// Runs confirmation rounds while callers wait for one.
    async fn confirm_rounds(self) {
        loop {
            let Some(waiting) = locked(&self.inner.confirmations).next() else {
                return;
            };
            // openraft bounds each voter's answer by a heartbeat interval;
            // the deadline keeps a stuck round from holding every later one.
            let deadline = self.inner.config.times.handle_deadline();
            let outcome =
                match tokio::time::timeout(deadline, self.inner.raft.ensure_linearizable()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no quorum answered within {deadline:?}")),
                };
            for answer in waiting {
                let _ = answer.send(outcome.clone());
            }
        }
    }
}
