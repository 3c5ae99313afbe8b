//! One slot of a worker: find a task, claim it, run it slice by slice, finish
//! it; again. A task is claimed by taking the write lock on `task/TID` without
//! waiting: whoever holds it runs the task, and every write about the task
//! carries the lock's fencing token.
//!
//! The slice loop waits on no I/O of its own: between slices it only looks at
//! what is queued for it (steal requests, a due checkpoint); a checkpoint is
//! handed to a writer, at most one in flight.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use p3_objectspace::{object::MetaValue, SpaceError};
use tokio::task::JoinHandle;

use super::{
    pacing,
    state::{locked, ActiveJob, Heard, Jobs},
    steal,
    task::{self, claim, Claim, Claimed, Source},
};
use crate::{
    control::{self, now_ms},
    io::LocalIo,
    job::{JobError, Result, Step},
    records::{last_part, ResultRecord, TASKS},
    registry::AnyState,
    spread,
};

/// A task whose record was last written this long ago, and whose lock is free,
/// is abandoned whoever its holder is.
const ABANDONED_AFTER: Duration = Duration::from_secs(10);
/// A task whose holder runs nothing of its job (busy with another, say) is
/// abandoned once its record is this old: a part spread to a busy worker at
/// submission goes to an idle one instead of waiting for it.
const UNSTARTED_AFTER: Duration = Duration::from_secs(1);
/// How often a slot with nothing to steal lists a job's tasks for abandoned
/// ones (the only listing the worker makes), counted from when it joined the
/// job or last finished a task of it. A holder's lock outlives it by a lease
/// (3 s) anyway, so the scan's lateness adds little to a restart.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Runs slot `index` for as long as the worker runs.
pub(super) async fn run(jobs: Arc<Jobs>, index: usize) {
    let mut rounds = index;
    let mut idle = Duration::from_millis(5);
    loop {
        let changed = jobs.changed.notified();
        rounds += 1;
        let mut worked = false;
        for job in jobs.active(rounds) {
            match find_work(&jobs, &job).await {
                Ok(Some(claimed)) => {
                    if let Err(e) = run_task(&jobs, &job, claimed).await {
                        note_failure(&jobs, &job, e).await;
                    }
                    // A slot that just finished a task is no reason to look
                    // for abandoned ones: at a job's end every slot does at
                    // once, a listing from every node each, while the last
                    // results are written (see `SCAN_EVERY`).
                    *locked(&job.scanned) = Some(Instant::now());
                    worked = true;
                    break;
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(job = %job.id, error = %e, "looking for work failed"),
            }
        }
        if worked {
            idle = Duration::from_millis(5);
            continue;
        }
        // Nothing anywhere: look again when a job starts or a worker reports
        // load, else soon, less often the longer nothing turns up.
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(idle) => {}
        }
        idle = (idle * 2).min(Duration::from_millis(500));
    }
}

/// A task failed or its lock was lost: a job error fails the job; anything
/// else (the node, the network, a cancelled job's vanished namespace) only
/// ends this attempt, and the task is picked up again from its checkpoint.
async fn note_failure(jobs: &Jobs, job: &ActiveJob, error: JobError) {
    match error {
        JobError::Failed(reason) | JobError::Codec(reason) => {
            tracing::warn!(job = %job.id, %reason, "task failed; failing the job");
            if let Err(e) = control::fail(&mut jobs.space.clone(), &job.id, &reason).await {
                tracing::warn!(job = %job.id, error = %e, "cannot mark the job failed");
            }
        }
        JobError::Cancelled => {}
        other => {
            tracing::info!(job = %job.id, worker = %jobs.me, error = %other, "task interrupted")
        }
    }
}

/// Finds a task of `job` to run: its root task, a steal, or an abandoned task.
async fn find_work(jobs: &Arc<Jobs>, job: &Arc<ActiveJob>) -> Result<Option<Claimed>> {
    if job.ended() {
        return Ok(None);
    }
    let assigned = locked(&job.assigned).pop();
    if let Some(part) = assigned {
        if part.state.is_some() {
            return Ok(Some(task::claim_assigned(jobs, job, part)));
        }
        if let Some(claimed) = claim(jobs, job, &part.tid, Source::Assigned)
            .await?
            .claimed()
        {
            return Ok(Some(claimed));
        }
    }
    if !job.root_taken.load(Ordering::Relaxed) {
        if let Some(claimed) = claim_root(jobs, job).await? {
            return Ok(Some(claimed));
        }
    }
    if let Some(claimed) = steal::steal(jobs, job).await? {
        return Ok(Some(claimed));
    }
    let due = {
        let mut scanned = locked(&job.scanned);
        let due = scanned.is_none_or(|at| at.elapsed() >= SCAN_EVERY);
        if due {
            *scanned = Some(Instant::now());
        }
        due
    };
    if due {
        return scan(jobs, job).await;
    }
    Ok(None)
}

/// Claims the job's root task (the lock decides which worker gets it);
/// marks it taken once that fails, as no other task is claimed this way. A
/// worker that lost the race asks the winner for work at once: it learns who
/// won from the refusal, long before the winner's heartbeat says so.
async fn claim_root(jobs: &Arc<Jobs>, job: &Arc<ActiveJob>) -> Result<Option<Claimed>> {
    // A job without a root (submitted by an older version): its root task
    // has no holder, and the scan of `task/` finds it.
    let Some(root) = &job.record.root else {
        job.root_taken.store(true, Ordering::Relaxed);
        return Ok(None);
    };
    // Requests of the losers that come in while this claim is decided wait
    // for it instead of being declined (until `run_task` has it running).
    job.claiming_root.store(true, Ordering::Relaxed);
    let claim = match claim(jobs, job, root, Source::Root).await {
        Ok(Claim::Claimed(claimed)) => return Ok(Some(claimed)),
        other => other,
    };
    job.claiming_root.store(false, Ordering::Relaxed);
    steal::decline_queued(jobs, job);
    let claim = claim?;
    job.root_taken.store(true, Ordering::Relaxed);
    match claim {
        Claim::Held(by) => match by.into_iter().find(|w| *w != jobs.me) {
            Some(winner) if job.record.root_divides => steal::ask(jobs, job, winner).await,
            _ => Ok(None),
        },
        Claim::Claimed(_) | Claim::Gone => Ok(None),
    }
}

/// Lists the job's tasks (with the parts of its record not written as
/// tasks yet) and claims one without a live holder (or made for this
/// worker); settles the job when none is left.
async fn scan(jobs: &Jobs, job: &ActiveJob) -> Result<Option<Claimed>> {
    let now = now_ms();
    let fresh = jobs.fresh_ms();
    let tasks = jobs.space.list(job.paths.ns(), TASKS).await?;
    let listed = tasks.iter().map(|stat| {
        let holder = match stat.meta.get("holder") {
            Some(MetaValue::Str(h)) => Some(h.as_str()),
            _ => None,
        };
        (last_part(&stat.path), holder, stat.modified_ms)
    });
    let unwritten = spread::unwritten(&job.record.parts, &tasks).map(|part| {
        let holder = Some(part.worker.as_str());
        (part.tid.as_str(), holder, job.record.started_ms)
    });
    // Running here, or finished (a task goes moments after its result):
    // nothing to claim.
    let open: Vec<_> = listed
        .chain(unwritten)
        .filter(|(tid, ..)| {
            !locked(&job.running).contains_key(*tid) && !locked(&job.results).has(tid)
        })
        .collect();
    if tasks.is_empty() && open.is_empty() {
        control::settle(&mut jobs.space.clone(), &jobs.config.registry, &job.id).await?;
        return Ok(None);
    }
    for (tid, holder, modified_ms) in open {
        // Whether the holder is alive, and runs something of this job.
        let seen = |h: &str| {
            locked(&job.workers)
                .get(h)
                .filter(|w| w.alive(now, fresh))
                .map(|w| w.running > 0.0)
        };
        let age = now.saturating_sub(modified_ms);
        let abandoned = match holder {
            None => true,
            Some(h) if h == jobs.me => true,
            Some(h) => match seen(h) {
                None => true,
                Some(running) => !running && age > UNSTARTED_AFTER.as_millis() as u64,
            },
        } || age > ABANDONED_AFTER.as_millis() as u64;
        if abandoned {
            if let Some(claimed) = claim(jobs, job, tid, Source::Abandoned).await?.claimed() {
                return Ok(Some(claimed));
            }
        }
    }
    Ok(None)
}

/// Runs a claimed task until it finishes, the job ends, or something fails.
async fn run_task(jobs: &Arc<Jobs>, job: &Arc<ActiveJob>, mut task: Claimed) -> Result<()> {
    let tid = task.record.tid.clone();
    tracing::debug!(job = %job.id, %tid, source = ?task.source, restarted = task.restarted, "running task");
    job.count(|s| {
        s.restarts += u64::from(task.restarted);
        s.steals += u64::from(task.source == Source::Stolen);
    });
    let resumed = job.job.resume(&task.record.state);
    job.claiming_root.store(false, Ordering::Relaxed);
    let state = resumed?;
    let began = Instant::now();
    let outcome = compute(jobs, job, &mut task, state).await;
    let (computed_in, computed) = (began.elapsed(), Instant::now());
    locked(&job.running).remove(&tid);
    steal::decline_queued(jobs, job);
    let written = async {
        let output = outcome?;
        // The task's record goes once its result is written: parts it still
        // lists must exist by then, and the result is written under its lock.
        let token = task.token().await?;
        let pending = std::mem::take(&mut task.record.parts);
        task::ensure_parts(&jobs.space, &job.paths, pending).await?;
        let result = ResultRecord {
            output,
            credit: task.record.credit,
            worker: jobs.me.clone(),
        };
        // Noted before it is written: a result that makes the credit whole
        // settles the job while it is written, the job's record and the
        // result at once instead of one after the other (no other worker can
        // settle before it hears of this result). Otherwise the worker that
        // hears the credit whole settles (see `follow::follow_results`).
        let whole = job.note_result(
            &tid,
            Heard {
                credit: result.credit,
                worker: jobs.me.clone(),
                output: Some(result.output.clone()),
            },
        );
        let mut space = jobs.space.clone();
        let settle = async {
            if !whole {
                return Ok(0.0);
            }
            job.settle_known(jobs).await
        };
        let (written, settled) = tokio::join!(
            control::write_result(&mut space, &job.paths, &tid, &result),
            settle
        );
        if let Err(e) = written {
            locked(&job.results).forget(&tid);
            return Err(e);
        }
        if job.is_root(&tid) {
            // Done with it: this worker's slots need not try to claim it
            // again (and find it gone) while the job settles.
            job.root_taken.store(true, Ordering::Relaxed);
        }
        tracing::debug!(job = %job.id, %tid, whole, ?computed_in, written_in = ?computed.elapsed(), "task finished");
        job.count(|s| s.finished += 1);
        Ok((token, settled))
    }
    .await;
    // The task's end, whatever became of it: reported at once if thieves
    // could still ask it for work (see `follow::heartbeats`).
    running_changed(jobs, job);
    let (token, settled) = written?;
    // With the result written the task is finished: its record and lock
    // are let go (whether or not settling failed). A part that rode in the
    // job's record and finished before its first checkpoint was never
    // written.
    match jobs
        .space
        .remove(&job.paths.task(&tid), None, Some(token))
        .await
    {
        Ok(_) | Err(SpaceError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    task.release().await?;
    settled.map(drop)
}

fn running_changed(jobs: &Jobs, job: &ActiveJob) {
    job.beat.notify_one();
    super::jobs::write_status(jobs);
}

/// The checkpoint being written, if any: at most one in flight.
type Writer = Option<JoinHandle<Result<()>>>;

/// Whether a checkpoint is being written.
fn writing(writer: &Writer) -> bool {
    writer.as_ref().is_some_and(|w| !w.is_finished())
}

/// Hands a checkpoint of `task` to the writer (which must be free). Parts
/// granted inline leave the record here: the writer makes sure they exist
/// before it writes the record without them.
fn checkpoint(
    jobs: &Jobs,
    job: &ActiveJob,
    task: &mut Claimed,
    token: u64,
    state: &AnyState,
    writer: &mut Writer,
) -> Result<()> {
    let parts = std::mem::take(&mut task.record.parts);
    let mut record = task.record.clone();
    record.state = job.job.checkpoint(state)?;
    let (space, paths) = (jobs.space.clone(), job.paths.clone());
    *writer = Some(tokio::spawn(async move {
        task::ensure_parts(&space, &paths, parts).await?;
        task::write(&space, &paths, &record, token).await
    }));
    Ok(())
}

/// Waits for the checkpoint in flight, failing the task if it failed (its
/// lock may be lost: the next write would be refused anyway).
async fn settle_writer(writer: &mut Writer) -> Result<()> {
    match writer.take() {
        Some(w) => w
            .await
            .map_err(|e| JobError::Failed(format!("checkpoint writer panicked: {e}")))?,
        None => Ok(()),
    }
}

/// Longest run of slices on the blocking thread while the root task waits
/// for its first safe point (thieves gather there), or while a checkpoint is
/// due but the previous one is still being written.
const BATCH: Duration = Duration::from_millis(20);

/// How often a running task updates what its heartbeat advertises: its
/// load, or none once it cannot be divided (a check encodes and decodes its
/// state once).
const ADVERTISE_EVERY: Duration = Duration::from_millis(100);

/// What a running task tells thieves through its node's heartbeats, kept
/// current by the blocking thread as slices run.
struct Advert {
    tid: String,
    divisible: bool,
    updated: Option<Instant>,
}

impl Advert {
    fn new(tid: &str) -> Self {
        Self {
            tid: tid.to_owned(),
            divisible: true,
            updated: None,
        }
    }

    /// Updates the task's load every [`ADVERTISE_EVERY`]. A task that cannot
    /// be divided is advertised as no load, and the heartbeat goes at once:
    /// near a job's end every idle worker would otherwise ask the ones still
    /// finishing, and each would decline at its next safe point.
    fn update(&mut self, job: &ActiveJob, state: &AnyState) -> Result<()> {
        if self
            .updated
            .is_some_and(|at| at.elapsed() < ADVERTISE_EVERY)
        {
            return Ok(());
        }
        self.updated = Some(Instant::now());
        let was = std::mem::replace(&mut self.divisible, job.job.divisible(state)?);
        let load = if self.divisible {
            job.job.load(state)
        } else {
            0.0
        };
        locked(&job.running).insert(self.tid.clone(), load);
        if was != self.divisible {
            job.beat.notify_one();
        }
        Ok(())
    }
}

/// The compute loop: slices on a blocking thread, then the safe point
/// (cancellation, steal requests, checkpoint). The blocking thread stays
/// with the slices until a checkpoint is due, a steal request is queued, the
/// job ends or the task is done: a hop between threads per slice costs
/// more than a short slice, and on a busy machine a thread woken for the
/// safe point may wait a while for a core. Returns the task's output.
async fn compute(
    jobs: &Arc<Jobs>,
    job: &Arc<ActiveJob>,
    task: &mut Claimed,
    mut state: AnyState,
) -> Result<Vec<u8>> {
    let engine = job.job.clone();
    let mut io = LocalIo::new(jobs.space.clone(), job.paths.clone());
    let mut restart = true;
    // The first checkpoint comes after a half to a whole interval: the tasks
    // of a job spread at submission start together, and their checkpoints
    // (a durable write each) would otherwise come in one burst every
    // interval, holding up every worker's next slice on a busy machine.
    let phase = pacing::checkpoint_phase(jobs.config.checkpoint_every, rand::random());
    let mut checkpointed = Instant::now()
        .checked_sub(phase)
        .unwrap_or_else(Instant::now);
    // A claim's record (holder, claims) is written while the task runs.
    let mut writer: Writer = None;
    if task.unwritten {
        let token = task.token().await?;
        let (space, paths, record) = (jobs.space.clone(), job.paths.clone(), task.record.clone());
        writer = Some(tokio::spawn(async move {
            task::write(&space, &paths, &record, token).await
        }));
    }
    // Only a root task that never ran before waits for thieves.
    let root = job.is_root(&task.record.tid);
    let mut gathered = !root || task.restarted;
    // The first report of this task says what it is worth stealing.
    let mut advert = Advert::new(&task.record.tid);
    advert.update(job, &state)?;
    running_changed(jobs, job);
    loop {
        if job.ended() {
            return Err(JobError::Cancelled);
        }
        let started = Instant::now();
        let until = if gathered && !writing(&writer) {
            checkpointed + jobs.config.checkpoint_every
        } else {
            started + BATCH
        };
        // The slices run on a blocking thread, which owns the state and the
        // io until it hands them back.
        let job_now = job.clone();
        let (slices, step);
        (io, state, advert, slices, step) = tokio::task::spawn_blocking(move || {
            let engine = &job_now.job;
            if restart {
                let step = engine.restart(&mut io, &mut state).map(|()| Step::More);
                return (io, state, advert, 0, step);
            }
            let mut slices = 0u64;
            loop {
                let mut step = engine.compute(&mut io, &mut state);
                slices += 1;
                if matches!(step, Ok(Step::More)) {
                    if let Err(e) = advert.update(&job_now, &state) {
                        step = Err(e);
                    }
                }
                let go_on = matches!(step, Ok(Step::More))
                    && Instant::now() < until
                    && !job_now.ended()
                    && !steal::asked(&job_now);
                if !go_on {
                    return (io, state, advert, slices, step);
                }
            }
        })
        .await
        .map_err(|e| JobError::Failed(format!("compute panicked: {e}")))?;
        let busy = started.elapsed().as_millis() as u64;
        job.count(|s| {
            s.busy_ms += busy;
            s.slices += slices;
        });
        if restart {
            if let Some(asked) = task.asked {
                tracing::debug!(job = %job.id, latency = ?asked.elapsed(), "stolen task computing");
                job.count(|s| s.note_steal(asked.elapsed()));
            }
        }
        restart = false;
        if let Step::Done(output) = step? {
            io.flush().await?;
            settle_writer(&mut writer).await?;
            return Ok(output);
        }
        if !gathered {
            // The root task's first safe point: every other worker of the
            // job is idle. (A state that cannot be divided yet declines
            // them; they ask again and are served at the next safe point.)
            gathered = true;
            // A state that cannot be divided (a job of one slice) has
            // nothing to hand out, so no thief is waited for.
            if engine.divisible(&state)? {
                steal::gather(jobs, job).await;
            }
        }
        if steal::asked(job) {
            // The state handed out and checkpointed must not be ahead of the
            // job's writes; dividing rewrites the checkpoint, so none may be
            // in flight either.
            io.flush().await?;
            settle_writer(&mut writer).await?;
            steal::serve(jobs, job, task, &mut state).await?;
            checkpointed = Instant::now();
        } else if checkpointed.elapsed() >= jobs.config.checkpoint_every && !writing(&writer) {
            io.flush().await?;
            settle_writer(&mut writer).await?;
            let token = task.token().await?;
            checkpoint(jobs, job, task, token, &state, &mut writer)?;
            checkpointed = Instant::now();
        }
        if writer.as_ref().is_some_and(|w| w.is_finished()) {
            settle_writer(&mut writer).await?;
        }
    }
}
