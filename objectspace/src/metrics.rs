//! What the object space records into the `metrics` facade: operations by
//! kind and outcome with their latency, and value bytes in and out. The
//! node's HTTP server renders them (`/metrics`); without a recorder they
//! cost a branch each.
//!
//! An operation is counted once, by the outermost call: a take that reads
//! the object and a removal that writes a tombstone count as one take and
//! one removal, not also as a get and a put.

use std::{future::Future, time::Instant};

use crate::error::{Result, SpaceError};

tokio::task_local! {
    /// Set while an operation runs on this task.
    static COUNTED: ();
}

/// Runs operation `op`, counting it and timing it unless an outer operation
/// on this task already does.
///
/// The operation's future goes on the heap: the returned future holds a
/// pointer to it, not a second copy of it. Futures of these operations are
/// large, and a wrapper that held them inline would multiply their size in
/// every caller that awaits one operation inside another (a removal writes a
/// tombstone), until a worker thread's stack overflows where the big
/// futures are built.
pub(crate) fn observe<T>(
    op: &'static str,
    run: impl Future<Output = Result<T>>,
) -> impl Future<Output = Result<T>> {
    let run = Box::pin(run);
    async move {
        if COUNTED.try_with(|_| ()).is_ok() {
            return run.await;
        }
        let started = Instant::now();
        let result = COUNTED.scope((), run).await;
        metrics::counter!("p3_operations_total", "op" => op, "outcome" => outcome(&result))
            .increment(1);
        metrics::histogram!("p3_operation_seconds", "op" => op)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

/// An outcome label: few values, so that series stay few.
fn outcome<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(SpaceError::NotFound(_) | SpaceError::NoSuchNamespace(_)) => "not_found",
        Err(SpaceError::VersionConflict { .. } | SpaceError::Fenced(_)) => "conflict",
        Err(SpaceError::TimedOut(_) | SpaceError::Locked { .. }) => "timed_out",
        Err(
            SpaceError::Unavailable(_)
            | SpaceError::NotEnoughOwners { .. }
            | SpaceError::OutcomeUnknown(_)
            | SpaceError::Stopped,
        ) => "unavailable",
        Err(
            SpaceError::InvalidName(_)
            | SpaceError::Invalid(_)
            | SpaceError::TooLarge { .. }
            | SpaceError::VolatileTooLarge { .. }
            | SpaceError::NamespaceExists(_)
            | SpaceError::Forbidden(_),
        ) => "refused",
        Err(SpaceError::Corrupt(_) | SpaceError::Storage(_)) => "error",
    }
}

/// [`observe`] for a write, which also counts the bytes written (once, for
/// the outermost write).
pub(crate) fn observe_put(
    run: impl Future<Output = Result<crate::api::protocol::Written>>,
) -> impl Future<Output = Result<crate::api::protocol::Written>> {
    let observed = observe("put", run);
    async move {
        let outermost = COUNTED.try_with(|_| ()).is_err();
        let result = observed.await;
        if let (true, Ok(written)) = (outermost, &result) {
            metrics::counter!("p3_bytes_in_total").increment(written.size);
        }
        result
    }
}

/// Value bytes a client read through this node.
pub(crate) fn bytes_out(n: u64) {
    metrics::counter!("p3_bytes_out_total").increment(n);
}

/// A replica copy offered to this node by a primary (or by repair) was
/// stored, or refused.
pub(crate) fn replica_stored(ok: bool) {
    let outcome = if ok { "ok" } else { "refused" };
    metrics::counter!("p3_replica_stores_total", "outcome" => outcome).increment(1);
}

/// A repair round ended, having pushed `pushed` records to owners that
/// lacked them and handed `handed_off` to new owners.
pub(crate) fn repair_round(pushed: u64, handed_off: u64) {
    metrics::counter!("p3_repair_rounds_total").increment(1);
    metrics::counter!("p3_repair_pushed_total").increment(pushed);
    metrics::counter!("p3_repair_handed_off_total").increment(handed_off);
}

/// A gauge raised while this lives (a lock held, a lock waited for).
pub(crate) struct Level(&'static str);

impl Level {
    /// Raises gauge `name` by one until the result is dropped.
    pub(crate) fn up(name: &'static str) -> Self {
        metrics::gauge!(name).increment(1.0);
        Self(name)
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}
