//! One slot of a worker: find a task, claim it, run it slice by slice, finish
//! it; again. A task is claimed by taking the write lock on `task/TID` without
//! waiting: whoever holds it runs the task, and every write about the task
//! carries the lock's fencing token.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use p3_objectspace::{
    api::client::HeldLock,
    lock::LockMode,
    object::{MetaValue, PutOptions},
    Space, SpaceError,
};

use super::{
    jobs::{locked, ActiveJob, Jobs},
    steal,
};
use crate::{
    control::{self, now_ms},
    io::SpaceIo,
    job::{JobError, Result, Step},
    records::{decode, encode, ResultRecord, TaskRecord, TICKET_QUERY},
    registry::AnyState,
};

/// A task whose record was last written this long ago, and whose lock is free,
/// is abandoned whoever its holder is.
const ABANDONED_AFTER: Duration = Duration::from_secs(10);

/// How a task came to this worker (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// A new job's root task, through its ticket.
    Ticket,
    /// Divided off for this worker by a victim.
    Stolen,
    /// Found without a live holder.
    Abandoned,
}

/// A task this worker holds the lock of.
pub(super) struct Claimed {
    pub record: TaskRecord,
    pub lock: HeldLock,
    pub restarted: bool,
    pub source: Source,
}

impl Claimed {
    pub fn token(&self) -> u64 {
        self.lock.token()
    }
}

/// Runs slot `index` for as long as the worker runs.
pub(super) async fn run(jobs: Arc<Jobs>, index: usize) {
    let mut control: Option<Space> = None;
    let mut rounds = index;
    let mut idle = Duration::from_millis(20);
    loop {
        let changed = jobs.changed.notified();
        rounds += 1;
        let mut worked = false;
        for job in jobs.active(rounds) {
            if control.is_none() {
                control = Space::connect(&jobs.config.data_dir).await.ok();
            }
            let Some(space) = control.as_mut() else { break };
            match find_work(&jobs, &job, space).await {
                Ok(Some(claimed)) => {
                    if let Err(e) = run_task(&jobs, &job, space, claimed).await {
                        note_failure(&jobs, &job, space, e).await;
                        control = None;
                    }
                    worked = true;
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(job = %job.id, error = %e, "looking for work failed");
                    control = None;
                }
            }
        }
        if worked {
            idle = Duration::from_millis(20);
            continue;
        }
        // Nothing anywhere: look again soon, sooner when a job starts.
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(idle) => {}
        }
        // Every look costs listings on every node: idle slots slow down.
        idle = (idle * 2).min(Duration::from_secs(1));
    }
}

/// A task failed or its lock was lost: a job error fails the job; anything
/// else (the node, the network, a cancelled job's vanished namespace) only
/// ends this attempt, and the task is picked up again from its checkpoint.
async fn note_failure(jobs: &Jobs, job: &ActiveJob, space: &mut Space, error: JobError) {
    match error {
        JobError::Failed(reason) | JobError::Codec(reason) => {
            tracing::warn!(job = %job.id, %reason, "task failed; failing the job");
            if let Err(e) = control::fail(space, &job.id, &reason).await {
                tracing::warn!(job = %job.id, error = %e, "cannot mark the job failed");
            }
        }
        JobError::Cancelled => {}
        other => {
            tracing::info!(job = %job.id, worker = %jobs.me, error = %other, "task interrupted")
        }
    }
}

/// Finds a task of `job` to run: a ticket, an abandoned task, or a steal.
async fn find_work(jobs: &Jobs, job: &ActiveJob, space: &mut Space) -> Result<Option<Claimed>> {
    if job.ended() {
        return Ok(None);
    }
    // A ticket that the index has not shown yet is no loss: the scan below
    // finds its task too (it has no holder).
    if !job.tickets_gone.load(Ordering::Relaxed) {
        match space
            .take_match(&job.ns, TICKET_QUERY, None, tokio::io::sink(), |_, _| {})
            .await
        {
            Ok(stat) => {
                if let Some(tid) = stat.path.rsplit('/').next() {
                    if let Some(claimed) = claim(jobs, job, space, tid, Source::Ticket).await? {
                        return Ok(Some(claimed));
                    }
                }
            }
            Err(SpaceError::NotFound(_) | SpaceError::TimedOut(_)) => {
                job.tickets_gone.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let now = now_ms();
    let workers = steal::workers(jobs, job, space).await?;
    let tasks = space.list(&job.ns, "task/").await?;
    if tasks.is_empty() {
        control::settle(space, &jobs.config.registry, &job.id).await?;
        return Ok(None);
    }
    for stat in &tasks {
        let Some(tid) = stat.path.rsplit('/').next() else {
            continue;
        };
        if locked(&job.running).contains_key(tid) {
            continue;
        }
        let holder = match stat.meta.get("holder") {
            Some(MetaValue::Str(h)) => Some(h.as_str()),
            _ => None,
        };
        let abandoned = match &holder {
            None => true,
            Some(h) if *h == jobs.me => true,
            Some(h) => !workers.iter().any(|w| w.worker == *h && w.alive),
        } || now.saturating_sub(stat.modified_ms)
            > ABANDONED_AFTER.as_millis() as u64;
        if abandoned {
            if let Some(claimed) = claim(jobs, job, space, tid, Source::Abandoned).await? {
                return Ok(Some(claimed));
            }
        }
    }
    steal::steal(jobs, job, space, &workers).await
}

/// Claims `task/TID`: takes its lock without waiting, checks the task still
/// needs running, records this worker as its holder, and makes sure the parts
/// its last holder divided off exist.
pub(super) async fn claim(
    jobs: &Jobs,
    job: &ActiveJob,
    space: &mut Space,
    tid: &str,
    source: Source,
) -> Result<Option<Claimed>> {
    let path = format!("{}/task/{tid}", job.ns);
    let lock = match Space::connect(&jobs.config.data_dir)
        .await?
        .lock(
            &path,
            LockMode::Write,
            jobs.config.lease,
            Some(Duration::ZERO),
        )
        .await
    {
        Ok(lock) => lock,
        Err(SpaceError::TimedOut(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let token = lock.token();
    let mut record: TaskRecord = match space.get_bytes(&path).await {
        Ok((_, bytes)) => decode(&bytes, "task")?,
        Err(SpaceError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if exists(space, &format!("{}/result/{tid}", job.ns)).await? {
        // Finished, but its holder stopped before removing it.
        space.remove_fenced(&path, None, Some(token)).await?;
        return Ok(None);
    }
    let restarted = record.claims > 0;
    record.holder = Some(jobs.me.clone());
    record.claims += 1;
    for part in std::mem::take(&mut record.parts) {
        steal::ensure_part(space, job, part).await?;
    }
    write_task(space, job, &record, token).await?;
    Ok(Some(Claimed {
        record,
        lock,
        restarted,
        source,
    }))
}

/// Whether object `path` exists now.
pub(super) async fn exists(space: &mut Space, path: &str) -> Result<bool> {
    match space.stat(path).await {
        Ok(_) => Ok(true),
        Err(SpaceError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Writes a task's record under its lock.
pub(super) async fn write_task(
    space: &mut Space,
    job: &ActiveJob,
    record: &TaskRecord,
    token: u64,
) -> Result<()> {
    let options = PutOptions {
        meta: steal::holder_meta(record),
        token: Some(token),
        ..PutOptions::default()
    };
    let path = format!("{}/task/{}", job.ns, record.tid);
    space.put_bytes(&path, &options, &encode(record)).await?;
    Ok(())
}

/// Runs a claimed task until it finishes, the job ends, or something fails.
async fn run_task(
    jobs: &Jobs,
    job: &ActiveJob,
    space: &mut Space,
    mut task: Claimed,
) -> Result<()> {
    let tid = task.record.tid.clone();
    tracing::debug!(job = %job.id, %tid, source = ?task.source, restarted = task.restarted, "running task");
    job.count(|s| {
        s.restarts += u64::from(task.restarted);
        s.steals += u64::from(task.source == Source::Stolen);
    });
    let engine = job.job.clone();
    let state = engine.resume(&task.record.state)?;
    locked(&job.running).insert(tid.clone(), engine.load(&state));
    running_changed(jobs, job);
    let outcome = compute(jobs, job, space, &mut task, state).await;
    locked(&job.running).remove(&tid);
    running_changed(jobs, job);
    steal::decline_queued(jobs, job, space).await;
    let output = outcome?;
    let result = ResultRecord {
        output,
        credit: task.record.credit,
        worker: jobs.me.clone(),
    };
    control::write_result(space, &job.ns, &tid, &result).await?;
    let path = format!("{}/task/{tid}", job.ns);
    space.remove_fenced(&path, None, Some(task.token())).await?;
    task.lock.release().await?;
    job.count(|s| s.finished += 1);
    job.beat.notify_one();
    control::settle(space, &jobs.config.registry, &job.id).await?;
    Ok(())
}

fn running_changed(jobs: &Jobs, job: &ActiveJob) {
    job.beat.notify_one();
    jobs.write_status();
}

/// The compute loop: a slice on a blocking thread, then the safe point
/// (cancellation, steal requests, checkpoint). Returns the task's output.
async fn compute(
    jobs: &Jobs,
    job: &ActiveJob,
    space: &mut Space,
    task: &mut Claimed,
    state: AnyState,
) -> Result<Vec<u8>> {
    let engine = job.job.clone();
    let mut io = SpaceIo::connect(jobs.config.data_dir.clone(), job.ns.clone()).await?;
    let mut state = state;
    let mut restart = true;
    let mut checkpointed = Instant::now();
    loop {
        if job.ended() {
            return Err(JobError::Cancelled);
        }
        // The slice runs on a blocking thread, which owns the state and the
        // connection until it hands them back.
        let engine_now = engine.clone();
        let started = Instant::now();
        let step;
        (io, state, step) = tokio::task::spawn_blocking(move || {
            let step = if restart {
                engine_now.restart(&mut io, &mut state).map(|()| Step::More)
            } else {
                engine_now.compute(&mut io, &mut state)
            };
            (io, state, step)
        })
        .await
        .map_err(|e| JobError::Failed(format!("compute panicked: {e}")))?;
        let busy = started.elapsed().as_millis() as u64;
        job.count(|s| {
            s.busy_ms += busy;
            s.slices += u64::from(!restart);
        });
        restart = false;
        if let Step::Done(output) = step? {
            return Ok(output);
        }
        locked(&job.running).insert(task.record.tid.clone(), engine.load(&state));
        steal::serve(jobs, job, space, task, &mut state).await?;
        if checkpointed.elapsed() >= jobs.config.checkpoint_every {
            task.record.state = engine.checkpoint(&state)?;
            write_task(space, job, &task.record, task.token()).await?;
            checkpointed = Instant::now();
        }
    }
}
