//! Read/write locks held by an object's primary owner, with leases and fencing
//! tokens (P³'s p3readLock / p3writeLock).
//!
//! - The primary keeps each key's [`LockState`]: the grants (holder, mode, token,
//!   lease end) and the next token. Every change is stored (fsync) and sent to the
//!   other owners before it is answered, so a lock outlives its primary.
//! - Acquirers wait in one FIFO queue per key at the primary; a request is granted
//!   only when it is compatible with the grants *and* first in line, so readers
//!   arriving after a waiting writer queue behind it (no writer starvation).
//! - Every grant gets a fencing token above the last one of that key and above
//!   `epoch << 32` (the membership epoch), so tokens grow across changes of
//!   primary. The holder's node renews the lease while the holder lives; a
//!   holder that dies (or whose node dies) loses the lock when its lease ends.
//! - A primary changes a key's state only from the newest copy: one it wrote
//!   in the current membership epoch, or else the newest any member holds
//!   (peering; see `peered_state`), so a new or returning primary never
//!   grants what another granted.
//! - Writes check the state: while any lock is held, a write must carry the
//!   token of the write lock; a token that no longer matches a live grant is
//!   refused (see [`LockState::admits`]).
//!
//! Waiting queues live only in the primary's memory: when it dies, waiters'
//! requests fail and their nodes ask the new primary, which has the grants.
//!
//! Files: `state.rs` the model (modes, grants, a key's state), `line.rs` the
//! primary's waiting lines and its answers, `stored.rs` the state as the
//! owners hold it (peering, commits), `client.rs` what the holder's node
//! asks, `keep.rs` renewing a held lock; this file the wire type.

use serde::{Deserialize, Serialize};

mod client;
mod keep;
mod line;
mod state;
mod stored;

pub(crate) use keep::{keep, Keeper};
pub use keep::{lost, Held};
pub(crate) use line::Queues;

use crate::name::{Namespace, ObjectName};

pub use state::{Grant, LockMode, LockState};

/// What a node asks a key's primary about locks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LockRequest {
    /// Acquire, waiting up to `wait_ms` in line.
    Acquire {
        /// Namespace.
        ns: Namespace,
        /// Name.
        name: ObjectName,
        /// Holder id.
        holder: u64,
        /// Mode.
        mode: LockMode,
        /// Lease length.
        lease_ms: u64,
        /// How long to wait in line.
        wait_ms: u64,
        /// In a writer-only namespace: the asking node's signature of
        /// ([`crate::writers::lock_statement`]).
        #[serde(default)]
        signature: Option<crate::writers::Signature>,
    },
    /// Extend a held lease.
    Renew {
        /// Namespace.
        ns: Namespace,
        /// Name.
        name: ObjectName,
        /// Holder id.
        holder: u64,
        /// New lease length from now.
        lease_ms: u64,
    },
    /// Give a lock back.
    Release {
        /// Namespace.
        ns: Namespace,
        /// Name.
        name: ObjectName,
        /// Holder id.
        holder: u64,
    },
}
