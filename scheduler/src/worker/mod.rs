//! A node's worker: runs tasks of every running job whose kind this binary
//! knows, `slots` at a time, finding work as the conventions of
//! [`crate::records`] describe. It uses the object space of its own node in
//! process ([`Local`]) and talks to other nodes only through it.
//!
//! Modules, each using only those below it:
//! - [`slot`]: one slot's loop: find a task (a part made for this worker,
//!   the root, a steal, or an abandoned task), claim it, compute it slice by
//!   slice, finish it;
//! - [`jobs`]: this worker's entry in `p3.workers`, which jobs run (the
//!   `p3.jobs` registry), a job's beginning and end;
//! - [`follow`]: per job, heartbeats and the watches that keep the job's
//!   view current (other workers, results, steal requests);
//! - [`steal`]: both sides of a steal;
//! - [`task`]: a task's own objects (claim, checkpoint, parts);
//! - [`state`]: what all of them share;
//! - [`heard`]: the results of a job as a worker heard of them, and who
//!   settles it (pure bookkeeping);
//! - [`pacing`]: the random spacing of reports, checkpoints and
//!   announcements, and the weighted choice of a victim (pure, given the
//!   draw).

mod follow;
mod heard;
mod jobs;
mod pacing;
mod slot;
mod state;
mod steal;
mod task;

use std::{path::PathBuf, sync::Arc, time::Duration};

use p3_objectspace::Local;
use tokio::task::JoinHandle;

use crate::{job::Result, registry::Registry};

pub use self::jobs::STATUS_FILE;
use self::state::Jobs;
/// How a worker behaves; [`WorkerConfig::new`] gives the defaults.
#[derive(Clone)]
pub struct WorkerConfig {
    /// The data directory of the node (for its `worker.json` report).
    pub data_dir: PathBuf,
    /// Tasks run at the same time.
    pub slots: usize,
    /// The job kinds this worker can run.
    pub registry: Registry,
    /// Lease of a task's lock: how long after a worker dies its task is
    /// picked up again. The node renews it while the worker lives.
    pub lease: Duration,
    /// How often a worker reports load and counters for each job.
    pub heartbeat: Duration,
    /// How often a running task's state is checkpointed.
    pub checkpoint_every: Duration,
    /// How long a thief waits for a victim's answer.
    pub steal_wait: Duration,
}

impl WorkerConfig {
    /// One slot; 3 s leases; 2 s heartbeats and checkpoints; 2 s steal waits.
    pub fn new(data_dir: PathBuf, registry: Registry) -> Self {
        Self {
            data_dir,
            slots: 1,
            registry,
            lease: Duration::from_secs(3),
            heartbeat: Duration::from_secs(2),
            checkpoint_every: Duration::from_secs(2),
            steal_wait: Duration::from_secs(2),
        }
    }
}

/// A running worker; dropping it does not stop it, [`Worker::stop`] does.
pub struct Worker {
    jobs: Arc<Jobs>,
    tasks: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker of the node whose object space is `space`.
    pub async fn start(config: WorkerConfig, space: Local) -> Result<Self> {
        let jobs = Arc::new(Jobs {
            me: space.peer_id(),
            space,
            config,
            active: Default::default(),
            skipped: Default::default(),
            changed: Default::default(),
            helpers: Default::default(),
        });
        let mut tasks = vec![
            tokio::spawn(jobs::announce(jobs.clone())),
            tokio::spawn(jobs::discover(jobs.clone())),
        ];
        for slot in 0..jobs.config.slots {
            tasks.push(tokio::spawn(slot::run(jobs.clone(), slot)));
        }
        jobs::write_status(&jobs);
        tracing::info!(slots = jobs.config.slots, worker = %jobs.me, "worker started");
        Ok(Self { jobs, tasks })
    }

    /// Stops every slot at once and withdraws this worker from
    /// `p3.workers`, so that no job is spread to it meanwhile (a killed
    /// worker's entry stays until its TTL ends). Tasks it was running are
    /// resumed elsewhere from their last checkpoints once their leases end.
    pub async fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
        jobs::stop(&self.jobs);
        jobs::withdraw(&self.jobs).await;
    }
}
