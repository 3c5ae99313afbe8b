//! The jobs a worker is working on: found in the `p3.jobs` registry (watched,
//! and listed every second in case an event was missed), each with a heartbeat
//! task and a listener for steal requests addressed to this worker.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use p3_objectspace::{object::PutOptions, watch::EventKind, Space, SpaceError};
use tokio::{sync::Notify, task::JoinHandle};

use super::{steal, WorkerConfig};
use crate::{
    control,
    job::Result,
    records::{encode, Heartbeat, JobId, JobRecord, JobState, WorkerStats, JOBS_NAMESPACE},
    registry::DynJob,
};

/// Steal requests a worker queues before it declines the rest unread.
const MAX_QUEUED_REQUESTS: usize = 64;

/// Locks a mutex even if a panicking thread held it: every value behind these
/// locks stays consistent between statements.
pub(super) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything a worker's tasks share.
pub(super) struct Jobs {
    pub config: WorkerConfig,
    /// This worker's id: its node's peer id.
    pub me: String,
    active: Mutex<BTreeMap<JobId, Arc<ActiveJob>>>,
    /// Job kinds this binary does not know, or arguments it refused: skipped.
    skipped: Mutex<BTreeSet<JobId>>,
    /// Woken when a job starts, so idle slots look for work at once.
    pub changed: Notify,
    registry_changed: Notify,
    helpers: Mutex<Vec<JoinHandle<()>>>,
}

/// One running job as this worker sees it.
pub(super) struct ActiveJob {
    pub id: JobId,
    pub record: JobRecord,
    /// The job's namespace.
    pub ns: String,
    /// This node's instance of the job.
    pub job: Arc<dyn DynJob>,
    ended: AtomicBool,
    /// This worker's counters for the job.
    pub stats: Mutex<WorkerStats>,
    /// Tasks of the job running here, with their load.
    pub running: Mutex<BTreeMap<String, f64>>,
    /// Steal requests addressed to this worker, not yet answered: their ids
    /// and when they arrived.
    pub requests: Mutex<VecDeque<(String, Instant)>>,
    /// Woken to send a heartbeat now (the running set changed).
    pub beat: Notify,
    /// No ticket was left to take: the root task was claimed, and no other
    /// task ever gets one, so idle slots stop searching for tickets.
    pub tickets_gone: AtomicBool,
    /// The task reporting heartbeats; it ends by itself after the last one.
    heartbeat_task: Mutex<Option<JoinHandle<()>>>,
    /// The task queueing steal requests.
    listener_task: Mutex<Option<JoinHandle<()>>>,
}

impl ActiveJob {
    /// Whether the job reached a final state (or vanished): stop working on it.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Adds to this worker's counters.
    pub fn count(&self, f: impl FnOnce(&mut WorkerStats)) {
        f(&mut locked(&self.stats));
    }

    fn heartbeat(&self, me: &str) -> Heartbeat {
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
    pub fn new(config: WorkerConfig, me: String) -> Self {
        Self {
            config,
            me,
            active: Mutex::default(),
            skipped: Mutex::default(),
            changed: Notify::new(),
            registry_changed: Notify::new(),
            helpers: Mutex::default(),
        }
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

    /// Stops every helper task.
    pub fn stop(&self) {
        for job in locked(&self.active).values() {
            job.ended.store(true, Ordering::Relaxed);
            for task in [&job.heartbeat_task, &job.listener_task] {
                if let Some(task) = locked(task).take() {
                    task.abort();
                }
            }
        }
        locked(&self.helpers).drain(..).for_each(|h| h.abort());
        let _ = std::fs::remove_file(self.status_file());
    }

    /// Follows the job registry for as long as the worker runs.
    pub async fn discover(self: Arc<Self>) {
        let watcher = tokio::spawn(self.clone().watch_registry());
        locked(&self.helpers).push(watcher);
        let mut space: Option<Space> = None;
        loop {
            if let Err(e) = self.refresh(&mut space).await {
                tracing::debug!(error = %e, "cannot read the job registry");
                space = None;
            }
            tokio::select! {
                _ = self.registry_changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn watch_registry(self: Arc<Self>) {
        loop {
            if let Ok(space) = Space::connect(&self.config.data_dir).await {
                if let Ok(mut watching) = space.watch(JOBS_NAMESPACE, "", false).await {
                    while watching.next().await.is_ok() {
                        self.registry_changed.notify_one();
                    }
                }
            }
            // The registry namespace appears with the first job.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn refresh(self: &Arc<Self>, space: &mut Option<Space>) -> Result<()> {
        if space.is_none() {
            *space = Some(Space::connect(&self.config.data_dir).await?);
        }
        let Some(space) = space.as_mut() else {
            return Ok(());
        };
        // The listing's metadata says which jobs run; only new ones are read.
        let listed = match space.list(JOBS_NAMESPACE, "").await {
            Ok(listed) => listed,
            Err(SpaceError::NoSuchNamespace(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let running: BTreeSet<JobId> = listed
            .iter()
            .filter(|stat| control::meta_text(&stat.meta, "state") == JobState::Running.word())
            .filter_map(|stat| JobId::parse(stat.path.rsplit('/').next()?).ok())
            .collect();
        let ended: Vec<Arc<ActiveJob>> = locked(&self.active)
            .values()
            .filter(|j| !running.contains(&j.id))
            .cloned()
            .collect();
        for job in ended {
            self.end(&job);
        }
        for id in running {
            if locked(&self.active).contains_key(&id) || locked(&self.skipped).contains(&id) {
                continue;
            }
            let (record, _) = control::record(space, &id).await?;
            if record.state.is_final() {
                continue;
            }
            match self.config.registry.instantiate(&record.kind, &record.args) {
                Ok(job) => self.begin(record, job),
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "not working on this job");
                    locked(&self.skipped).insert(id);
                }
            }
        }
        Ok(())
    }

    fn begin(self: &Arc<Self>, record: JobRecord, job: Arc<dyn DynJob>) {
        let active = Arc::new(ActiveJob {
            id: record.id.clone(),
            ns: record.id.namespace(),
            record,
            job,
            ended: AtomicBool::new(false),
            stats: Mutex::default(),
            running: Mutex::default(),
            requests: Mutex::default(),
            beat: Notify::new(),
            tickets_gone: AtomicBool::new(false),
            heartbeat_task: Mutex::default(),
            listener_task: Mutex::default(),
        });
        tracing::info!(job = %active.id, kind = %active.record.kind, "working on job");
        *locked(&active.heartbeat_task) =
            Some(tokio::spawn(self.clone().heartbeats(active.clone())));
        *locked(&active.listener_task) =
            Some(tokio::spawn(self.clone().steal_requests(active.clone())));
        locked(&self.active).insert(active.id.clone(), active);
        self.write_status();
        self.changed.notify_waiters();
    }

    fn end(&self, job: &ActiveJob) {
        tracing::info!(job = %job.id, "job over");
        job.ended.store(true, Ordering::Relaxed);
        job.beat.notify_one();
        // The heartbeat task writes its last report and ends by itself.
        if let Some(listener) = locked(&job.listener_task).take() {
            listener.abort();
        }
        locked(&self.active).remove(&job.id);
        self.write_status();
    }

    /// Reports this worker's load and counters for `job` every heartbeat
    /// interval and whenever its running set changes, until the job ends.
    async fn heartbeats(self: Arc<Self>, job: Arc<ActiveJob>) {
        let path = format!("{}/worker/{}", job.ns, self.me);
        let mut space: Option<Space> = None;
        loop {
            let ended = job.ended();
            let heartbeat = job.heartbeat(&self.me);
            let options = PutOptions {
                meta: heartbeat.meta(),
                ..PutOptions::default()
            };
            if space.is_none() {
                space = Space::connect(&self.config.data_dir).await.ok();
            }
            if let Some(s) = space.as_mut() {
                if let Err(e) = s.put_bytes(&path, &options, &encode(&heartbeat)).await {
                    tracing::debug!(job = %job.id, error = %e, "heartbeat not written");
                    space = None;
                }
            }
            if ended {
                return;
            }
            tokio::select! {
                _ = job.beat.notified() => {}
                _ = tokio::time::sleep(self.config.heartbeat) => {}
            }
        }
    }

    /// Queues the steal requests other workers address to this one; answers
    /// "declined" at once while this worker runs nothing of the job.
    async fn steal_requests(self: Arc<Self>, job: Arc<ActiveJob>) {
        let prefix = format!("steal/{}/", self.me);
        while !job.ended() {
            let watching = match Space::connect(&self.config.data_dir).await {
                Ok(space) => space.watch(&job.ns, &prefix, false).await,
                Err(e) => Err(e),
            };
            let Ok(mut watching) = watching else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let mut control: Option<Space> = None;
            while let Ok(event) = watching.next().await {
                if event.kind != EventKind::Put {
                    continue;
                }
                let Some(rid) = event.name.as_str().strip_prefix(&prefix) else {
                    continue;
                };
                let busy = !locked(&job.running).is_empty();
                let queued = busy && {
                    let mut queue = locked(&job.requests);
                    queue.len() < MAX_QUEUED_REQUESTS && {
                        queue.push_back((rid.to_owned(), Instant::now()));
                        true
                    }
                };
                if queued {
                    continue;
                }
                if control.is_none() {
                    control = Space::connect(&self.config.data_dir).await.ok();
                }
                if let Some(space) = control.as_mut() {
                    steal::decline(space, &job, &self.me, rid).await;
                }
            }
        }
    }

    fn status_file(&self) -> std::path::PathBuf {
        self.config.data_dir.join(STATUS_FILE)
    }

    /// Rewrites `worker.json` in the data directory: what this worker runs now,
    /// for `p3ctl node status` and for operators.
    pub fn write_status(&self) {
        let jobs: Vec<serde_json::Value> = locked(&self.active)
            .values()
            .map(|j| {
                serde_json::json!({
                    "id": j.id,
                    "kind": j.record.kind,
                    "running": locked(&j.running).keys().collect::<Vec<_>>(),
                })
            })
            .collect();
        let status = serde_json::json!({
            "worker": self.me,
            "slots": self.config.slots,
            "jobs": jobs,
        });
        let file = self.status_file();
        let temporary = file.with_extension("json.tmp");
        let written = std::fs::write(&temporary, status.to_string())
            .and_then(|()| std::fs::rename(&temporary, &file));
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), error = %e, "cannot write worker status");
        }
    }
}

/// The file in a node's data directory that says what its worker runs.
pub const STATUS_FILE: &str = "worker.json";
