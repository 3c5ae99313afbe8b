//! Reads that many callers share: a cached value that must be read again
//! whenever someone asks (it may have changed), without one read per caller
//! when many ask at once.

use std::{sync::Mutex, time::Instant};

use crate::error::Result;

/// Reads that are shared: one runs at a time, and whoever asks while one
/// runs takes the result of the next, which began after they asked. So
/// callers that ask together cost at most two reads, and each gets a read
/// that began after it asked (what it must see, e.g. a namespace created
/// just before, is in it).
pub(crate) struct SharedRead<T> {
    turn: tokio::sync::Mutex<()>,
    last: Mutex<Option<(Instant, T)>>,
}

impl<T> Default for SharedRead<T> {
    fn default() -> Self {
        Self {
            turn: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
        }
    }
}

impl<T: Clone> SharedRead<T> {
    /// The result of a read begun after this call: `read`'s own, or
    /// another caller's.
    pub(crate) async fn read<F: std::future::Future<Output = Result<T>>>(
        &self,
        read: impl FnOnce() -> F,
    ) -> Result<T> {
        let asked = Instant::now();
        let _turn = self.turn.lock().await;
        let shared = (self.last.lock().unwrap_or_else(|p| p.into_inner()))
            .as_ref()
            .filter(|(began, _)| *began >= asked)
            .map(|(_, value)| value.clone());
        if let Some(value) = shared {
            return Ok(value);
        }
        let began = Instant::now();
        let value = read().await?;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((began, value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };

    use super::*;

    #[tokio::test]
    async fn reads_asked_together_share_one_begun_after_each_ask() {
        let shared = Arc::new(SharedRead::<u32>::default());
        let reads = Arc::new(AtomicU32::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let read = |shared: Arc<SharedRead<u32>>| {
            let (reads, gate) = (reads.clone(), gate.clone());
            tokio::spawn(async move {
                shared
                    .read(|| async move {
                        let _pass = gate.acquire().await;
                        Ok(reads.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                    .await
                    .unwrap()
            })
        };
        let first = read(shared.clone());
        // The first read has begun (it waits at the gate) before the others ask.
        while shared.turn.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        let others: Vec<_> = (0..9).map(|_| read(shared.clone())).collect();
        tokio::task::yield_now().await;
        gate.add_permits(10);
        assert_eq!(first.await.unwrap(), 1);
        for other in others {
            // Not the first read's result: it began before they asked.
            assert_eq!(other.await.unwrap(), 2);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2, "nine askers, one read");
        // A later ask reads anew.
        assert_eq!(read(shared.clone()).await.unwrap(), 3);
    }
}
