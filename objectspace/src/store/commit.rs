//! Group commit: writers that need their writes durable share one sync of
//! the write-ahead log.
//!
//! A durable write is applied without a sync (under whatever lock orders it),
//! then waits for a sync. One waiter at a time syncs the log; a sync covers
//! every write applied before it started, so everyone who arrived meanwhile is
//! served by the next single sync. With RocksDB's own `sync` write option each
//! writer would sync on its own, holding up the writers behind it.
//!
//! An async caller about to sync while other writers wait for theirs first
//! lets the runtime run a few other tasks ([`COMPANY_YIELDS`]): writers
//! already under way on the node apply their writes and take tickets
//! meanwhile, and the one sync covers them too (PostgreSQL's `commit_delay`
//! with `commit_siblings`, bounded by polls instead of time). Without it a
//! sync (25-100 µs here) is short against the gap between writes, and
//! sixteen concurrent writers still cost one sync each; a writer alone syncs
//! at once.
//!
//! The decisions are [`State`]'s (pure); a blocking caller waits on a condition
//! variable, an async one on a watch channel, without holding a thread.

use std::sync::{Condvar, Mutex};

use tokio::sync::watch;

/// Times an async caller that is to sync yields to the runtime first. Under
/// `p3ctl bench put --concurrency 16` on three nodes: 4,136 syncs on one
/// node for 4,000 puts with none, 1,567 with 3, 1,157 with 8; the puts/s
/// rose 3-7 % with 3 and a single client's latency did not move
/// (docs/benchmarks.md, thirty-fifth session).
const COMPANY_YIELDS: usize = 3;

/// Who syncs, and what is durable: the pure part.
#[derive(Debug, Default)]
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

/// What a caller holding `ticket` does next.
#[derive(Debug, PartialEq)]
enum Step {
    /// Its write is durable.
    Done,
    /// Run a sync that covers every ticket up to `through`, then
    /// [`State::synced`].
    Sync { through: u64 },
    /// Wait for the running sync to end, then ask again.
    Wait,
}

impl State {
    fn issue(&mut self) -> u64 {
        self.issued += 1;
        self.issued
    }

    fn step(&mut self, ticket: u64) -> Step {
        if self.synced >= ticket {
            Step::Done
        } else if self.syncing {
            Step::Wait
        } else {
            // Covers every ticket issued so far: their writes came first.
            self.syncing = true;
            Step::Sync {
                through: self.issued,
            }
        }
    }

    /// Whether tickets other than one are waiting for a sync: writers are
    /// arriving together, and a sync that waits a little serves more.
    fn crowded(&self) -> bool {
        self.issued - self.synced > 1
    }

    /// What a sync about to start covers: every ticket issued by now, whose
    /// writes were applied before they were issued.
    fn widen(&self) -> u64 {
        self.issued
    }

    /// A sync ended; on failure the waiters try again themselves.
    fn synced(&mut self, through: u64, ok: bool) {
        self.syncing = false;
        if ok {
            self.synced = self.synced.max(through);
        }
    }
}

/// Shares log syncs among concurrent writers.
pub struct GroupSync {
    state: Mutex<State>,
    done: Condvar,
    /// Bumped after every sync, for async waiters.
    ended: watch::Sender<u64>,
}

impl Default for GroupSync {
    fn default() -> Self {
        GroupSync {
            state: Mutex::default(),
            done: Condvar::new(),
            ended: watch::Sender::new(0),
        }
    }
}

impl GroupSync {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the sync this caller was told to run; it ends when the guard
    /// is dropped, as failed unless [`Syncing::finish`] says otherwise.
    fn begin(&self, through: u64) -> Syncing<'_> {
        Syncing {
            group: self,
            through,
            ok: false,
        }
    }

    fn end(&self, through: u64, ok: bool) {
        self.lock().synced(through, ok);
        self.done.notify_all();
        self.ended.send_modify(|n| *n += 1);
    }

    /// Returns once every write applied before the call is durable, running
    /// `sync_log` (which must make all of them durable) at most once itself.
    /// Blocks the thread.
    pub fn sync<E>(&self, sync_log: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut state = self.lock();
        let ticket = state.issue();
        loop {
            match state.step(ticket) {
                Step::Done => return Ok(()),
                Step::Sync { through } => {
                    drop(state);
                    return self.begin(through).finish(sync_log());
                }
                Step::Wait => {
                    state.waiting += 1;
                    state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                    state.waiting -= 1;
                }
            }
        }
    }

    /// [`GroupSync::sync`] for async callers: waiting holds no thread; the
    /// sync itself runs through `run` (e.g. on the blocking pool). A caller
    /// dropped while it syncs (a timeout, an aborted task) counts as a failed
    /// sync: the writers waiting on it run the next one. Otherwise no sync
    /// would ever end again, and every durable write of the node would wait
    /// for ever.
    pub async fn sync_async<E, F>(&self, run: impl Fn() -> F) -> Result<(), E>
    where
        F: std::future::Future<Output = Result<(), E>>,
    {
        let mut ended = self.ended.subscribe();
        let ticket = self.lock().issue();
        loop {
            // Marked seen before asking, so a sync that ends in between wakes us.
            ended.borrow_and_update();
            let (step, crowded) = {
                let mut state = self.lock();
                (state.step(ticket), state.crowded())
            };
            match step {
                Step::Done => return Ok(()),
                Step::Sync { through } => {
                    // From here a drop ends the sync as failed and wakes the
                    // waiters, yields included.
                    let mut syncing = self.begin(through);
                    if crowded {
                        for _ in 0..COMPANY_YIELDS {
                            tokio::task::yield_now().await;
                        }
                        syncing.through = self.lock().widen();
                    }
                    return syncing.finish(run().await);
                }
                Step::Wait => {
                    // The sender lives as long as `self`.
                    let _ = ended.changed().await;
                }
            }
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting
    }
}

/// A sync being run: ended when this is dropped, whether its caller
/// finished it, was dropped (async) or panicked.
struct Syncing<'a> {
    group: &'a GroupSync,
    through: u64,
    ok: bool,
}

impl Syncing<'_> {
    /// Ends the sync with the log sync's outcome, and hands that on.
    fn finish<E>(mut self, result: Result<(), E>) -> Result<(), E> {
        self.ok = result.is_ok();
        result
    }
}

impl Drop for Syncing<'_> {
    fn drop(&mut self) {
        self.group.end(self.through, self.ok);
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
    fn a_sync_covers_the_tickets_issued_before_it_started() {
        let mut state = State::default();
        let (a, b) = (state.issue(), state.issue());
        assert_eq!(state.step(a), Step::Sync { through: 2 });
        let c = state.issue();
        assert_eq!(state.step(b), Step::Wait);
        assert_eq!(state.step(c), Step::Wait);
        state.synced(2, true);
        assert_eq!(state.step(b), Step::Done, "b was covered by a's sync");
        assert_eq!(
            state.step(c),
            Step::Sync { through: 3 },
            "c came after it started"
        );
        state.synced(3, false);
        assert_eq!(
            state.step(c),
            Step::Sync { through: 3 },
            "a failed sync is tried again"
        );
    }

    #[test]
    fn a_writer_alone_does_not_wait_for_company() {
        let mut state = State::default();
        let a = state.issue();
        assert_eq!(state.step(a), Step::Sync { through: 1 });
        assert!(!state.crowded());
        state.synced(1, true);
        let b = state.issue();
        assert_eq!(state.step(b), Step::Sync { through: 2 });
        assert!(!state.crowded(), "a's ticket is synced");
        let c = state.issue();
        assert!(state.crowded(), "c waits while b syncs");
        state.synced(2, true);
        assert_eq!(state.step(c), Step::Sync { through: 3 });
        assert!(!state.crowded());
    }

    #[test]
    fn a_sync_that_waited_for_company_covers_the_writers_that_came() {
        let mut state = State::default();
        let (a, b) = (state.issue(), state.issue());
        assert_eq!(state.step(a), Step::Sync { through: 2 }, "a syncs");
        assert!(state.crowded(), "b waits too");
        // Two more apply theirs while the first one yields.
        let (c, d) = (state.issue(), state.issue());
        assert_eq!(state.step(b), Step::Wait);
        let widened = state.widen();
        assert_eq!(widened, 4);
        let e = state.issue();
        state.synced(widened, true);
        for covered in [b, c, d] {
            assert_eq!(state.step(covered), Step::Done);
        }
        assert_eq!(
            state.step(e),
            Step::Sync { through: 5 },
            "e came after the sync started"
        );
    }

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
        let rest: Vec<_> = (0..7)
            .map(|_| writer(group.clone(), sync_log.clone()))
            .collect();
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

    #[tokio::test]
    async fn async_writers_share_syncs_and_see_failures() {
        let group = GroupSync::default();
        let syncs = AtomicUsize::new(0);
        let (go, gate) = watch::channel(false);
        let run = || {
            let mut gate = gate.clone();
            let n = syncs.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = gate.wait_for(|open| *open).await;
                if n == 0 {
                    Err("disk full")
                } else {
                    Ok(())
                }
            }
        };
        // Eight writers at once: the first one's sync fails (only it hears
        // so), the others share one more.
        let writers = futures::future::join_all((0..8).map(|_| group.sync_async(run)));
        let opener = async {
            tokio::task::yield_now().await;
            go.send_replace(true);
        };
        let (results, ()) = tokio::join!(writers, opener);
        assert_eq!(
            results.iter().filter(|r| r.is_err()).count(),
            1,
            "{results:?}"
        );
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_writer_dropped_while_it_syncs_hands_the_sync_on() {
        let group = GroupSync::default();
        let syncs = AtomicUsize::new(0);
        // The first sync never ends; every later one does at once.
        let run = || {
            let first = syncs.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                Ok::<(), ()>(())
            }
        };
        let mut first = Box::pin(group.sync_async(run));
        let mut second = Box::pin(group.sync_async(run));
        // The first writer starts its sync (alone, it does not wait for
        // company); the second waits for it...
        assert!(futures::poll!(&mut first).is_pending());
        assert!(futures::poll!(&mut second).is_pending());
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        // ...and the first is dropped (its request timed out, its task was
        // aborted) before that sync ends.
        drop(first);
        let served = tokio::time::timeout(std::time::Duration::from_secs(10), second).await;
        assert_eq!(
            served,
            Ok(Ok(())),
            "the waiting writer runs a sync of its own"
        );
        let later =
            tokio::time::timeout(std::time::Duration::from_secs(10), group.sync_async(run)).await;
        assert_eq!(later, Ok(Ok(())));
        assert_eq!(syncs.load(Ordering::SeqCst), 3);
    }
}
