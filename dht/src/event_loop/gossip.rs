//! Gossip topics: publishing, subscribing and delivering messages to local
//! subscribers, when the node runs gossipsub ([`crate::NetworkConfig::gossip`]).

use libp2p::gossipsub::{self, IdentTopic};
use tokio::sync::broadcast;

use super::EventLoop;
use crate::{node::GossipMessage, DhtError};

/// Messages a slow gossip subscriber may fall behind by before it loses some.
const GOSSIP_BUFFER: usize = 1024;

/// The answer to a publish or subscribe on a node that runs no gossipsub.
fn gossip_off() -> DhtError {
    DhtError::Gossip("gossip is off on this node (NetworkConfig::gossip is false)".into())
}

impl EventLoop {
    pub(super) fn publish(&mut self, topic: String, data: Vec<u8>) -> Result<(), DhtError> {
        let gossip = self.swarm.behaviour_mut().gossipsub.as_mut();
        gossip
            .ok_or_else(gossip_off)?
            .publish(IdentTopic::new(topic), data)
            .map(drop)
            .map_err(|e| DhtError::Gossip(e.to_string()))
    }

    pub(super) fn subscribe(
        &mut self,
        topic: String,
    ) -> Result<broadcast::Receiver<GossipMessage>, DhtError> {
        let topic = IdentTopic::new(topic);
        let gossip = self.swarm.behaviour_mut().gossipsub.as_mut();
        gossip
            .ok_or_else(gossip_off)?
            .subscribe(&topic)
            .map_err(|e| DhtError::Gossip(e.to_string()))?;
        Ok(self
            .topics
            .entry(topic.hash())
            .or_insert_with(|| broadcast::channel(GOSSIP_BUFFER).0)
            .subscribe())
    }

    /// Hands a message to this node's subscribers of its topic.
    pub(super) fn deliver(&mut self, message: gossipsub::Message) {
        if let Some(sender) = self.topics.get(&message.topic) {
            // No receiver left is fine: nobody listens any more.
            let _ = sender.send(GossipMessage {
                source: message.source,
                topic: message.topic.to_string(),
                data: message.data,
            });
        }
    }
}
