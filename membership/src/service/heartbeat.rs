//! A member's own side: joining the map, then renewing its lease with
//! heartbeats to the group's leader, each answer bringing the map changes
//! this node lacks ([`crate::follow`]). The lease arithmetic is
//! [`crate::lease::Lease`]; this is the loop that feeds it.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use p3_dht::PeerId;

use super::{locked, Membership, MAX_ADDRS};
use crate::{
    beats::{Answer, Ask, Beats, Pace},
    error::MembershipError,
    follow::{self, Catchup},
    relays,
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
    /// through a relay when the map names relays ([`crate::relays`]), else
    /// asking the leader (found through any peer when not known). What to
    /// ask and whom is [`Beats`]'s decision.
    pub(super) async fn keep_lease(self) {
        let times = self.inner.config.times;
        let mut beats = Beats::starting_at(rand::random());
        let mut identified = self.inner.node.identified();
        // The relays this node renews through, for the map's epoch: ranking
        // them sorts the members, once per map, not once per beat.
        let mut relays: (Option<u64>, Vec<PeerId>) = (None, Vec::new());
        loop {
            let me = self.inner.me;
            let incarnation = self.inner.incarnation;
            let (in_map, epoch) = {
                let map = self.inner.map.borrow();
                if relays.0 != Some(map.epoch()) {
                    let chosen = relays::choose(&map, &me, self.inner.config.members_per_relay);
                    relays = (Some(map.epoch()), chosen);
                }
                (map.holds(&me, incarnation), map.epoch())
            };
            let ask = beats.ask(in_map);
            let relay = match ask {
                Ask::Heartbeat => beats.relay(&relays.1, Instant::now()),
                Ask::Join => None,
            };
            let request = match (ask, relay) {
                (Ask::Heartbeat, Some(_)) => Request::Relay { incarnation, epoch },
                (Ask::Heartbeat, None) => Request::Heartbeat { incarnation, epoch },
                (Ask::Join, _) => Request::Join {
                    addrs: self.addresses().await,
                    incarnation,
                    epoch,
                },
            };
            let target = match relay {
                Some(relay) => Some(relay),
                None => {
                    let leader = self.raft_leader();
                    let peers = if beats.knows_leader(leader) {
                        Vec::new()
                    } else {
                        self.everyone().await.unwrap_or_default()
                    };
                    beats.target(leader, &peers)
                }
            };
            let mut pace = Pace::Soon;
            if let Some(target) = target {
                let sent = Instant::now();
                let answer = self.beat(target, request, sent).await;
                let next = beats.answered(
                    answer,
                    self.inner.map.borrow().epoch(),
                    sent,
                    Instant::now(),
                    times.lease,
                );
                if let Some(epoch) = next.renew {
                    self.renew(sent, epoch);
                }
                *locked(&self.inner.followed) = beats.followed();
                *locked(&self.inner.relayed_by) = beats.relayed_by();
                pace = next.pace;
            }
            self.write_status();
            let wait = match pace {
                Pace::Beat => times.heartbeat_every(),
                Pace::Soon => times.lead_every(),
                Pace::Now => continue,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // Renewing early costs the leader one more answer; a peer
                // waiting for this node's map would otherwise wait up to a
                // third of a lease.
                () = self.inner.behind.notified() => {}
                // Nobody to ask yet (a node starting, its seeds not yet
                // connected): ask the first peer as soon as it is
                // identified, not a tick later.
                Ok(()) = identified.changed(), if target.is_none() => {}
            }
        }
    }

    /// Moves this node's map forward with what a leader answered.
    fn follow(&self, catchup: Catchup) {
        let whole = matches!(catchup, Catchup::Whole(_));
        let map = self.map();
        if let Some(next) = follow::follow(&map, catchup) {
            if self.inner.machine.offer(Arc::new(next)) && whole {
                self.inner.followed_whole.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends one heartbeat or join to `target`. A loaded leader may answer
    /// after the next beat is due: the call goes on in the background (it
    /// may still renew the lease), and this returns on time. At most
    /// lease / heartbeat_every calls are ever in flight.
    async fn beat(&self, target: PeerId, request: Request, sent: Instant) -> Answer {
        let times = self.inner.config.times;
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
                    if let Ok(Ok(Response::Renewed { epoch, catchup })) = call.await {
                        membership.follow(catchup);
                        membership.renew(sent, epoch);
                    }
                });
                return Answer::Failed;
            }
        };
        match answer {
            Ok(Response::Renewed { epoch, catchup }) => {
                self.follow(catchup);
                Answer::Renewed(epoch)
            }
            Ok(Response::Joined { epoch, catchup }) => {
                self.follow(catchup);
                Answer::Joined(epoch)
            }
            Ok(Response::NotLeader { leader }) => {
                Answer::NotLeader(leader.and_then(|l| l.parse().ok()))
            }
            Ok(Response::NotMember) => Answer::NotMember,
            Ok(other) => {
                tracing::debug!(%target, answer = ?other, "membership heartbeat refused");
                Answer::Refused
            }
            Err(e) => {
                tracing::debug!(%target, error = %e, "membership heartbeat failed");
                Answer::Failed
            }
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
