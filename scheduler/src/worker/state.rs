//! What a worker's tasks share: the jobs it works on and what it knows of
//! each (its own counters and running tasks, the other workers' heartbeats,
//! steal requests waiting for an answer).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Instant,
};

use p3_objectspace::{
    object::{MetaValue, Metadata},
    Local,
};
use tokio::{sync::Notify, task::JoinHandle};

pub(super) use super::heard::Heard;
use super::{heard::Results, WorkerConfig};
use crate::{
    records::{last_part, Assigned, Heartbeat, JobId, JobPaths, JobRecord, WorkerStats, WORKERS},
    registry::DynJob,
};

/// Locks a mutex even if a panicking thread held it: every value behind these
/// locks stays consistent between statements.
pub(super) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything a worker's tasks share.
pub(super) struct Jobs {
    pub config: WorkerConfig,
    /// The node's object space, in this process.
    pub space: Local,
    /// This worker's id: its node's peer id.
    pub me: String,
    pub active: Mutex<BTreeMap<JobId, Arc<ActiveJob>>>,
    /// Job kinds this binary does not know, or arguments it refused: skipped.
    pub skipped: Mutex<BTreeSet<JobId>>,
    /// Woken when a job starts or a worker reports load, so idle slots look
    /// for work at once.
    pub changed: Notify,
    pub helpers: Mutex<Vec<JoinHandle<()>>>,
}

/// Another worker of a job, as its last heartbeat showed it.
#[derive(Debug, Clone)]
pub(super) struct WorkerView {
    /// Tasks it runs.
    pub running: f64,
    /// Its work left, by the job's estimate.
    pub load: f64,
    /// When its heartbeat was written (ms since the epoch).
    pub seen_ms: u64,
}

/// One running job as this worker sees it.
pub(super) struct ActiveJob {
    pub id: JobId,
    pub record: JobRecord,
    /// The registry entry's version when this worker began the job.
    pub record_version: u64,
    pub paths: JobPaths,
    /// This node's instance of the job.
    pub job: Arc<dyn DynJob>,
    pub ended: Ending,
    /// This worker's counters for the job.
    pub stats: Mutex<WorkerStats>,
    /// Tasks of the job running here, with their load.
    pub running: Mutex<BTreeMap<String, f64>>,
    /// The other workers, kept current by a watch on their heartbeats.
    pub workers: Mutex<BTreeMap<String, WorkerView>>,
    /// Steal requests addressed to this worker, not yet answered: their ids,
    /// thieves and when they arrived.
    pub requests: Mutex<VecDeque<(String, Instant)>>,
    /// Woken when a steal request is queued.
    pub asked: Notify,
    /// Woken to send a heartbeat now (the running set changed, or whether
    /// a running task can be divided).
    pub beat: Notify,
    /// The root task was claimed (by this worker or another): idle slots
    /// stop trying to claim it.
    pub root_taken: AtomicBool,
    /// Parts of the root made for this worker at submission, not yet
    /// claimed by one of its slots.
    pub assigned: Mutex<Vec<Assigned>>,
    /// A slot of this worker is claiming the root task: steal requests that
    /// come in meanwhile (from workers that lost the race to it) are kept
    /// for it rather than declined.
    pub claiming_root: AtomicBool,
    /// When a slot last listed the job's tasks for abandoned ones.
    pub scanned: Mutex<Option<Instant>>,
    /// The results written so far, as far as this worker heard (task id →
    /// credit): kept current by a watch, so that only a worker that sees the
    /// credit whole lists the results to settle the job.
    pub results: Mutex<Results>,
    /// The job's helper tasks (heartbeats, watches); the heartbeat task ends
    /// by itself after a last report.
    pub helpers: Mutex<Vec<JoinHandle<()>>>,
}

/// That a job ended, for those who poll and those who wait.
#[derive(Default)]
pub(super) struct Ending {
    set: AtomicBool,
    woken: Notify,
}

impl Ending {
    /// Marks the job ended and wakes every waiter of [`Ending::wait`].
    pub fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.woken.notify_waiters();
    }

    /// Whether the job ended.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Returns once the job has ended (at once if it has): a slot waiting
    /// for something of the job gives up then instead of at its deadline,
    /// and is free for the next job.
    pub async fn wait(&self) {
        let woken = self.woken.notified();
        tokio::pin!(woken);
        // Registered before the flag is read: an end between the two still
        // wakes this waiter.
        woken.as_mut().enable();
        if self.is_set() {
            return;
        }
        woken.await;
    }
}

impl WorkerView {
    /// Whether its heartbeat is at most `fresh_ms` old at `now_ms`.
    pub fn alive(&self, now_ms: u64, fresh_ms: u64) -> bool {
        now_ms.saturating_sub(self.seen_ms) <= fresh_ms
    }

    /// The view a heartbeat's metadata gives, written at `seen_ms`.
    pub fn of(meta: &Metadata, seen_ms: u64) -> Self {
        let number = |key: &str| match meta.get(key) {
            Some(MetaValue::Num(n)) => *n,
            _ => 0.0,
        };
        WorkerView {
            running: number("running"),
            load: number("load"),
            seen_ms,
        }
    }
}

impl ActiveJob {
    /// Reads every heartbeat of the job into the view (the watch keeps it
    /// current after that; this catches what was written before it began).
    pub async fn refresh_workers(&self, space: &Local) {
        match space.list(self.paths.ns(), WORKERS).await {
            Ok(listed) => {
                let mut workers = locked(&self.workers);
                for stat in listed {
                    let view = WorkerView::of(&stat.meta, stat.modified_ms);
                    let seen = workers.get(last_part(&stat.path)).map_or(0, |v| v.seen_ms);
                    if view.seen_ms >= seen {
                        workers.insert(last_part(&stat.path).to_owned(), view);
                    }
                }
            }
            Err(e) => tracing::debug!(job = %self.id, error = %e, "cannot list heartbeats"),
        }
    }

    /// Notes the result of task `tid`; whether it made the credit heard of
    /// whole ([`Results::note`]).
    pub fn note_result(&self, tid: &str, heard: Heard) -> bool {
        locked(&self.results).note(tid, heard)
    }

    /// Whether this worker settles the job once the credit is whole
    /// ([`Results::settler_is`]).
    pub fn settles(&self, me: &str) -> bool {
        locked(&self.results).settler_is(me)
    }

    /// Settles the job from the results heard of, which must add up to the
    /// whole credit.
    pub async fn settle_known(&self, jobs: &Jobs) -> crate::job::Result<f64> {
        let results: Vec<(String, Option<Vec<u8>>)> = locked(&self.results)
            .outputs()
            .map(|(tid, output)| (self.paths.result(tid), output.cloned()))
            .collect();
        let started = Instant::now();
        let settled = crate::control::settle_known(
            &mut jobs.space.clone(),
            &jobs.config.registry,
            (&self.record, self.record_version),
            results,
        )
        .await;
        tracing::debug!(job = %self.id, took = ?started.elapsed(), "settled");
        settled
    }

    /// Whether the job reached a final state (or vanished): stop working on it.
    pub fn ended(&self) -> bool {
        self.ended.is_set()
    }

    /// Adds to this worker's counters, and to the node's metrics (by job).
    pub fn count(&self, f: impl FnOnce(&mut WorkerStats)) {
        let mut stats = locked(&self.stats);
        let before = stats.clone();
        f(&mut stats);
        for (name, was, now) in [
            ("p3_job_slices_total", before.slices, stats.slices),
            ("p3_job_steals_total", before.steals, stats.steals),
            ("p3_job_divides_total", before.divides, stats.divides),
            ("p3_job_restarts_total", before.restarts, stats.restarts),
        ] {
            if now > was {
                metrics::counter!(name, "job" => self.id.to_string()).increment(now - was);
            }
        }
    }

    /// Whether a task of the job runs here.
    pub fn busy(&self) -> bool {
        !locked(&self.running).is_empty()
    }

    /// Whether steal requests addressed here are kept for an answer: a task
    /// runs here, or the root is being claimed here.
    pub fn keeps_requests(&self) -> bool {
        self.busy() || self.claiming_root.load(Ordering::Relaxed)
    }

    /// Whether `tid` is the job's root task.
    pub fn is_root(&self, tid: &str) -> bool {
        self.record.root.as_deref() == Some(tid)
    }

    /// Other workers of the job that report running nothing, recently.
    pub fn idle_workers(&self, me: &str, fresh_ms: u64) -> usize {
        let now = crate::control::now_ms();
        locked(&self.workers)
            .iter()
            .filter(|(w, v)| *w != me && v.running == 0.0 && v.alive(now, fresh_ms))
            .count()
    }

    /// Other workers of the job that reported recently, busy or not.
    pub fn other_workers(&self, me: &str, fresh_ms: u64) -> usize {
        let now = crate::control::now_ms();
        locked(&self.workers)
            .iter()
            .filter(|(w, v)| *w != me && v.alive(now, fresh_ms))
            .count()
    }

    /// This worker's report.
    pub fn heartbeat(&self, me: &str) -> Heartbeat {
        let running = locked(&self.running);
        Heartbeat {
            worker: me.to_owned(),
            running: running.len() as u32,
            load: running.values().sum(),
            stats: locked(&self.stats).clone(),
        }
    }
}

impl Jobs {
    /// How recent a heartbeat must be for its worker to count as alive: a
    /// lease (a dead worker's task lock runs out) and a heartbeat interval.
    pub fn fresh_ms(&self) -> u64 {
        (self.config.lease + self.config.heartbeat).as_millis() as u64
    }

    /// The jobs being worked on, starting at a different one each call so
    /// slots spread over jobs.
    pub fn active(&self, rotate: usize) -> Vec<Arc<ActiveJob>> {
        let mut jobs: Vec<_> = locked(&self.active).values().cloned().collect();
        if !jobs.is_empty() {
            let n = rotate % jobs.len();
            jobs.rotate_left(n);
        }
        jobs
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::Ending;

    #[tokio::test]
    async fn an_ending_wakes_every_waiter_and_later_ones_return_at_once() {
        let ending = Arc::new(Ending::default());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let ending = ending.clone();
                tokio::spawn(async move { ending.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!ending.is_set());
        for waiter in &waiters {
            assert!(!waiter.is_finished(), "a waiter returned before the end");
        }
        ending.set();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("a waiter was not woken by the end")
                .unwrap();
        }
        assert!(ending.is_set());
        tokio::time::timeout(Duration::from_secs(5), ending.wait())
            .await
            .expect("a wait after the end did not return at once");
    }
}
