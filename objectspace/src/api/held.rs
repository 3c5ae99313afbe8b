//! [`HeldLock`]: a lock a client holds through its node. The node renews the
//! lease and reports each renewal (how long the lock holds) or the loss; a
//! task of the client reads those reports, so [`HeldLock::lost`] resolves
//! when the lock is lost, not when the client next asks.

use std::time::Instant;

use tokio::{
    io::WriteHalf,
    sync::{oneshot, watch},
    task::JoinHandle,
    time::timeout,
};

use super::{
    client::{lost, unexpected, Space},
    mux::{Channel, Opener},
    protocol::{Request, Response},
    read_frame, write_frame,
};
use crate::{
    error::{Result, SpaceError},
    lock::{lost as lock_lost, Grant, Held},
};

/// A lock held through a conversation with the node (the [`Space`] it was
/// asked for in; take it in a [`Space::channel`] to keep the connection's
/// other conversations). Dropping it ends that conversation, and the node
/// releases the lock.
pub struct HeldLock {
    grant: Grant,
    held: watch::Receiver<Held>,
    writer: WriteHalf<Channel>,
    answer: Option<oneshot::Receiver<Result<Response>>>,
    reader: JoinHandle<()>,
    timeout: std::time::Duration,
    // Keeps the connection open while the lock is held.
    _opener: Opener,
}

impl HeldLock {
    /// Takes over `space`'s conversation, in which the node just granted
    /// `grant` valid for `valid_ms`.
    pub(super) fn new(space: Space, grant: Grant, valid_ms: u64) -> Self {
        let (stream, opener, timeout) = space.into_parts();
        let (mut reader, writer) = tokio::io::split(stream);
        let (sender, held) = watch::channel(Held::Until(until(valid_ms)));
        let (answered, answer) = oneshot::channel();
        let reader = tokio::spawn(async move {
            let reason = loop {
                match read_frame::<_, Response>(&mut reader).await {
                    Ok(Some(Response::Locked { valid_ms, .. })) => {
                        sender.send_replace(Held::Until(until(valid_ms)));
                    }
                    Ok(Some(Response::LockLost(e))) => {
                        sender.send_replace(Held::Lost(e));
                    }
                    // The answer to `Unlock`: the conversation ends.
                    Ok(Some(Response::Error(e))) => break Err(e),
                    Ok(Some(other)) => break Ok(other),
                    Ok(None) => {
                        break Err(SpaceError::Unavailable(
                            "the node closed the connection (is it shutting down?)".into(),
                        ))
                    }
                    Err(e) => break Err(lost(e)),
                }
            };
            if let Err(e) = &reason {
                sender.send_if_modified(|held| match held {
                    Held::Until(_) => {
                        *held = Held::Lost(e.clone());
                        true
                    }
                    Held::Lost(_) => false,
                });
            }
            answered.send(reason).ok();
        });
        HeldLock {
            grant,
            held,
            writer,
            answer: Some(answer),
            reader,
            timeout,
            _opener: opener,
        }
    }

    /// The fencing token: writes under this lock carry it.
    pub fn token(&self) -> u64 {
        self.grant.token
    }

    /// How long the lock holds, as far as the node knows (its lease end is
    /// on the safe side: renewals count from when they were sent).
    pub fn held(&self) -> Held {
        self.held.borrow().clone()
    }

    /// Resolves once the lock is lost: its lease ran out before a renewal
    /// got through, the primary fenced it, or the node went away. The node
    /// has stopped renewing it by then.
    pub async fn lost(&self) -> SpaceError {
        lock_lost(&self.held).await
    }

    /// Releases the lock; an error if it was lost meanwhile.
    pub async fn release(mut self) -> Result<()> {
        write_frame(&mut self.writer, &Request::Unlock)
            .await
            .map_err(lost)?;
        let answer = self.answer.take().ok_or(SpaceError::Stopped)?;
        match timeout(self.timeout, answer).await {
            Ok(Ok(Ok(Response::Done))) => Ok(()),
            Ok(Ok(Ok(other))) => Err(unexpected(other)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(SpaceError::Stopped),
            Err(_) => Err(SpaceError::Unavailable(format!(
                "the node did not answer within {:?}; it may be hung (check its log)",
                self.timeout
            ))),
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The instant `valid_ms` from now.
fn until(valid_ms: u64) -> Instant {
    Instant::now() + std::time::Duration::from_millis(valid_ms)
}
