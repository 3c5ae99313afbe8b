//! The lock model: modes, grants and a key's lock state, with the rules a
//! write must pass while a key is locked. Pure data; the primary's handling
//! is in the parent module.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SpaceError};

/// Shared (read) or exclusive (write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Many holders at once, no writer.
    Read,
    /// One holder, no readers.
    Write,
}

/// One holder's grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Random id of the holder (one per acquisition).
    pub holder: u64,
    /// Its mode.
    pub mode: LockMode,
    /// Its fencing token.
    pub token: u64,
    /// When its lease ends unless renewed (ms since the Unix epoch).
    pub lease_until_ms: u64,
    /// The node the request came from, as the primary saw it: a refused
    /// acquirer learns from it whom the lock's work is with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// In a writer-only namespace: the holder's node's signature of its
    /// request ([`crate::writers::lock_statement`]), checked by every owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::writers::Signature>,
}

/// The lock state of one object key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    /// The membership epoch in which a primary last changed it. A primary
    /// serving a later epoch reads every member's state before it changes
    /// anything (peering): it may be a primary that returned with a stale
    /// copy, or a new one with none.
    #[serde(default)]
    pub epoch: u64,
    /// Grows with every change within an epoch; replicas keep the newest
    /// `(epoch, revision)`.
    pub revision: u64,
    /// The last token handed out.
    pub last_token: u64,
    /// Current grants (some may have expired; see [`LockState::prune`]).
    pub grants: Vec<Grant>,
}

impl LockState {
    /// The order of states: a later epoch's primary wins over any copy an
    /// earlier one left behind.
    pub fn order(&self) -> (u64, u64) {
        (self.epoch, self.revision)
    }

    /// The next fencing token at `epoch`: above every token handed out, and
    /// above every token of earlier epochs (`epoch << 32`), so tokens grow
    /// across every change of primary even if one served a stale copy.
    pub(super) fn next_token(&mut self, epoch: u64) -> u64 {
        self.last_token = self.last_token.saturating_add(1).max(epoch << 32);
        self.last_token
    }

    /// What an owner holding this state does with `sent`, a state its key's
    /// primary committed: keep it if newer; acknowledge it again if it is
    /// this one (a retried commit); refuse it if older, since acknowledging
    /// a state the owner does not hold would let the primary hand out grants
    /// no owner keeps (it missed a newer state and must peer again).
    pub fn accepts(&self, sent: &LockState) -> std::cmp::Ordering {
        sent.order().cmp(&self.order())
    }

    /// Whether this state only takes grants away from `before`: no grant
    /// added or changed, no token handed out. Such a change (a release, an
    /// expired lease) may be answered before every owner holds it: if it
    /// is lost, the grants it removed stay in the owners' copies until
    /// their leases end, which delays the next holder but never lets two
    /// hold at once or reuses a token.
    pub fn only_removes_from(&self, before: &LockState) -> bool {
        self.last_token == before.last_token
            && self.grants.iter().all(|g| before.grants.contains(g))
    }

    /// Drops grants whose lease has ended; whether any was dropped.
    pub fn prune(&mut self, now: u64) -> bool {
        let before = self.grants.len();
        self.grants.retain(|g| g.lease_until_ms > now);
        self.grants.len() != before
    }

    pub(super) fn compatible(&self, mode: LockMode) -> bool {
        match mode {
            LockMode::Read => self.grants.iter().all(|g| g.mode == LockMode::Read),
            LockMode::Write => self.grants.is_empty(),
        }
    }

    /// Whether a write carrying `token` may proceed at `now`; the error says why not.
    pub fn admits(&self, path: &str, token: Option<u64>, now: u64) -> Result<()> {
        let live: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|g| g.lease_until_ms > now)
            .collect();
        let writer = live.iter().find(|g| g.mode == LockMode::Write);
        match (writer, token) {
            (Some(g), Some(t)) if g.token == t => Ok(()),
            (_, Some(t)) => Err(SpaceError::Fenced(format!(
                "fencing token {t} is no longer valid for {path} (its lock was released, expired, or granted again)"
            ))),
            (Some(g), None) => Err(SpaceError::Fenced(format!(
                "{path} is write-locked (fencing token {}); write under the lock with --token",
                g.token
            ))),
            (None, None) if !live.is_empty() => Err(SpaceError::Fenced(format!(
                "{path} is read-locked; it cannot be written until the readers release it"
            ))),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::*;

    fn state(epoch: u64, revision: u64) -> LockState {
        LockState {
            epoch,
            revision,
            ..LockState::default()
        }
    }

    #[test]
    fn an_owner_keeps_newer_states_and_refuses_older_ones() {
        let held = state(6, 4);
        assert_eq!(held.accepts(&state(6, 5)), Ordering::Greater);
        assert_eq!(
            held.accepts(&state(7, 1)),
            Ordering::Greater,
            "a later epoch wins"
        );
        assert_eq!(
            held.accepts(&state(6, 4)),
            Ordering::Equal,
            "a retried commit"
        );
        // A primary back from a pause that committed its copy of epoch 5
        // (revision 9) would erase the interim primary's grants of epoch 6.
        assert_eq!(held.accepts(&state(5, 9)), Ordering::Less);
    }

    fn grant(holder: u64, token: u64, lease_until_ms: u64) -> Grant {
        Grant {
            holder,
            mode: LockMode::Read,
            token,
            lease_until_ms,
            node: None,
            signature: None,
        }
    }

    #[test]
    fn only_releases_and_expiries_count_as_removals() {
        let mut before = state(3, 2);
        before.grants = vec![grant(1, 10, 5_000), grant(2, 11, 9_000)];
        before.last_token = 11;

        let mut released = before.clone();
        released.grants.retain(|g| g.holder != 1);
        assert!(released.only_removes_from(&before), "a release");
        let mut expired = before.clone();
        assert!(expired.prune(6_000));
        assert!(expired.only_removes_from(&before), "an expiry");
        assert!(before.only_removes_from(&before), "no change");

        let mut renewed = before.clone();
        renewed.grants[1].lease_until_ms = 12_000;
        assert!(
            !renewed.only_removes_from(&before),
            "a renewal extends a grant"
        );
        let mut granted = released.clone();
        let token = granted.next_token(3);
        granted.grants.push(grant(3, token, 9_000));
        assert!(!granted.only_removes_from(&before), "a new grant");
        let mut reissued = released.clone();
        reissued.grants.push(grant(1, 10, 5_000));
        reissued.last_token = 12;
        assert!(
            !reissued.only_removes_from(&before),
            "a token handed out, even with the old grants"
        );
    }
}
