//! A member's own side: joining the map, then renewing its lease with
//! heartbeats to the group's leader. The lease arithmetic is
//! [`crate::lease::Lease`]; this is the loop that feeds it.

use std::time::Instant;

use p3_dht::PeerId;

use super::{locked, Membership, LEAD_EVERY, MAX_ADDRS};
use crate::{
    error::MembershipError,
    wire::{Request, Response},
};

impl Membership {
    /// Records an acknowledged heartbeat sent at `sent`, and wakes whoever
    /// waits for the lease.
    fn renew(&self, sent: Instant, epoch: u64) {
        locked(&self.inner.lease).renewed(sent, epoch, &self.inner.config.times);
        self.inner.renewed.notify_waiters();
    }

    /// Joins the map, then renews this node's lease every third of a lease,
    /// asking the leader (found through any peer when not known).
    pub(super) async fn keep_lease(self) {
        let times = self.inner.config.times;
        let mut redirect: Option<PeerId> = None;
        let mut next_peer = 0usize;
        // A node removed while away holds a map that still lists it (nodes
        // out of the group receive no more entries): the leader's "not a
        // member" makes it join again.
        let mut refused = false;
        // Since when the leader has acknowledged epochs this node's map has
        // not reached: a member that no longer receives the group's entries
        // (dropped from the group by mistake) joins again to get them back.
        let mut lagging: Option<Instant> = None;
        loop {
            let me = self.inner.me;
            let member = !refused
                && self
                    .map()
                    .member(&me)
                    .is_some_and(|m| m.incarnation == self.inner.incarnation);
            refused = false;
            let request = if member {
                Request::Heartbeat {
                    incarnation: self.inner.incarnation,
                }
            } else {
                Request::Join {
                    addrs: self.addresses().await,
                    incarnation: self.inner.incarnation,
                }
            };
            let target = match redirect.take().or_else(|| self.leader()) {
                Some(t) => Some(t),
                None => {
                    let peers = self.inner.node.connected().await.unwrap_or_default();
                    next_peer = next_peer.wrapping_add(1);
                    (!peers.is_empty()).then(|| peers[next_peer % peers.len()])
                }
            };
            let sent = Instant::now();
            let mut again = times.heartbeat_every();
            if let Some(target) = target {
                // A loaded leader may answer after the next beat is due: the
                // call goes on in the background (it may still renew the
                // lease), and the next beat is sent on time. At most
                // lease / heartbeat_every calls are ever in flight.
                let mut call = tokio::spawn({
                    let membership = self.clone();
                    let deadline = times.lease.saturating_sub(times.heartbeat_every());
                    async move { membership.ask(target, request, deadline).await }
                });
                let answer = match tokio::time::timeout(times.heartbeat_every(), &mut call).await {
                    Ok(joined) => joined.unwrap_or(Err(MembershipError::Stopped)),
                    Err(_) => {
                        let membership = self.clone();
                        tokio::spawn(async move {
                            if let Ok(Ok(Response::Renewed { epoch })) = call.await {
                                membership.renew(sent, epoch);
                            }
                        });
                        Err(MembershipError::Unreachable(format!(
                            "no answer within {:?}",
                            times.heartbeat_every()
                        )))
                    }
                };
                match answer {
                    Ok(Response::Renewed { epoch } | Response::Joined { epoch }) => {
                        self.renew(sent, epoch);
                        if self.map().epoch() >= epoch {
                            lagging = None;
                        } else if lagging.get_or_insert(sent).elapsed() > times.lease {
                            tracing::warn!(
                                epoch,
                                have = self.map().epoch(),
                                "the map lags the group's; joining again"
                            );
                            refused = true;
                            lagging = None;
                        }
                        if !member {
                            // The map arrives through Raft shortly; beat soon.
                            again = LEAD_EVERY;
                        }
                    }
                    Ok(Response::NotLeader { leader }) => {
                        redirect = leader.and_then(|l| l.parse().ok());
                        again = LEAD_EVERY;
                    }
                    Ok(Response::NotMember) => {
                        refused = true;
                        again = LEAD_EVERY;
                    }
                    Ok(other) => {
                        tracing::debug!(%target, answer = ?other, "membership heartbeat refused");
                        again = LEAD_EVERY;
                    }
                    Err(e) => {
                        tracing::debug!(%target, error = %e, "membership heartbeat failed");
                        again = LEAD_EVERY;
                    }
                }
            } else {
                again = LEAD_EVERY;
            }
            self.write_status();
            tokio::time::sleep(again).await;
        }
    }

    /// This node's dialable addresses, for the map.
    async fn addresses(&self) -> Vec<String> {
        match self.inner.node.status().await {
            Ok(status) => status.listen_addrs.into_iter().take(MAX_ADDRS).collect(),
            Err(_) => Vec::new(),
        }
    }
}
