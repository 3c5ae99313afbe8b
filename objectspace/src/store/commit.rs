//! Group commit: writers that need their writes durable share one sync of
//! the write-ahead log.
//!
//! A durable write is applied without a sync (under whatever lock orders it),
//! then waits in [`GroupSync::sync`]. One waiter at a time syncs the log; a
//! sync covers every write applied before it started, so everyone who arrived
//! meanwhile is served by the next single sync. With RocksDB's own `sync`
//! write option each writer would sync on its own, holding up the writers
//! behind it.

use std::sync::{Condvar, Mutex};

/// Shares log syncs among concurrent writers.
#[derive(Default)]
pub struct GroupSync {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// Tickets handed out: one per call, after its write was applied.
    issued: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// A sync is running.
    syncing: bool,
    /// Callers waiting (for tests).
    waiting: usize,
}

impl GroupSync {
    /// Returns once every write applied before the call is durable, running
    /// `sync_log` (which must make all of them durable) at most once itself.
    pub fn sync<E>(&self, sync_log: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.issued += 1;
        let ticket = state.issued;
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if !state.syncing {
                // Covers every ticket issued so far: their writes came first.
                let through = state.issued;
                state.syncing = true;
                drop(state);
                let result = sync_log();
                state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.syncing = false;
                if result.is_ok() {
                    state.synced = state.synced.max(through);
                }
                self.done.notify_all();
                // On failure the others try again themselves.
                return result;
            }
            state.waiting += 1;
            state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
            state.waiting -= 1;
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.state.lock().unwrap().waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc,
    };

    #[test]
    fn writers_that_arrive_during_a_sync_share_the_next_one() {
        let group = Arc::new(GroupSync::default());
        let syncs = Arc::new(AtomicUsize::new(0));
        let (entered_tx, entered) = mpsc::channel::<()>();
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let sync_log = {
            let syncs = syncs.clone();
            move || -> Result<(), ()> {
                syncs.fetch_add(1, Ordering::SeqCst);
                entered_tx.send(()).unwrap();
                released.lock().unwrap().recv().unwrap();
                Ok(())
            }
        };
        fn writer(
            group: Arc<GroupSync>,
            sync_log: impl Fn() -> Result<(), ()> + Send + 'static,
        ) -> std::thread::JoinHandle<Result<(), ()>> {
            std::thread::spawn(move || group.sync(sync_log))
        }
        // The first writer's sync is running...
        let first = writer(group.clone(), sync_log.clone());
        entered.recv().unwrap();
        // ...when seven more arrive: they wait for the next sync.
        let rest: Vec<_> = (0..7).map(|_| writer(group.clone(), sync_log.clone())).collect();
        while group.waiting() < 7 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        // One of the seven runs the next sync, which covers them all.
        entered.recv().unwrap();
        release.send(()).unwrap();
        for w in rest {
            w.join().unwrap().unwrap();
        }
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_sync_is_reported_and_the_next_writer_syncs_again() {
        let group = GroupSync::default();
        let calls = AtomicUsize::new(0);
        let flaky = || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                Err("disk full")
            } else {
                Ok(())
            }
        };
        assert_eq!(group.sync(flaky), Err("disk full"));
        assert_eq!(group.sync(flaky), Ok(()));
        assert_eq!(group.sync(flaky), Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 3, "each call after the failure synced");
    }
}
