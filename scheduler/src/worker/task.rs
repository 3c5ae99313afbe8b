//! A task's own objects: claiming `task/TID` under its lock, writing its
//! checkpoint with the lock's fencing token, creating divided-off parts.

use std::time::Duration;

use p3_objectspace::{lock::LockMode, object::PutOptions, Local, LocalLock, SpaceError};

use tokio::task::JoinHandle;

use super::state::{ActiveJob, Jobs};
use crate::{
    job::{JobError, Result},
    records::{decode, encode, Assigned, Credit, JobPaths, Part, TaskRecord},
    spread,
};

/// How a task came to this worker (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// A new job's root task.
    Root,
    /// A part of a new job's root made for this worker at submission.
    Assigned,
    /// Divided off for this worker by a victim.
    Stolen,
    /// Found without a live holder.
    Abandoned,
}

/// The lock of a claimed task: held, or being taken while the task already
/// runs (a part handed over inline with its grant).
pub(super) enum Hold {
    Held(LocalLock),
    Pending(JoinHandle<Result<Option<LocalLock>>>),
}

/// A task this worker holds (or is taking) the lock of.
pub(super) struct Claimed {
    pub record: TaskRecord,
    pub hold: Hold,
    pub restarted: bool,
    pub source: Source,
    /// When the steal request that brought it was written.
    pub asked: Option<std::time::Instant>,
    /// `record` names this worker as holder but is not written yet: the
    /// first write happens while the task runs (nothing waits on it; a
    /// crash before it leaves a record that looks abandoned anyway).
    pub unwritten: bool,
}

impl Claimed {
    /// The task's fencing token, once its lock is held: nothing about the
    /// task is written before. A lock someone else got first means the task
    /// is not this worker's after all.
    pub async fn token(&mut self) -> Result<u64> {
        if let Hold::Pending(taking) = &mut self.hold {
            let taken = taking
                .await
                .map_err(|e| JobError::Failed(format!("claim panicked: {e}")))??;
            let lock = taken.ok_or_else(|| {
                JobError::Space(SpaceError::TimedOut(format!(
                    "task {} is locked by another worker",
                    self.record.tid
                )))
            })?;
            self.hold = Hold::Held(lock);
        }
        match &self.hold {
            Hold::Held(lock) => Ok(lock.token()),
            Hold::Pending(_) => Err(not_taken()),
        }
    }

    /// Lets the task's lock go.
    pub async fn release(mut self) -> Result<()> {
        self.token().await?;
        match self.hold {
            Hold::Held(lock) => Ok(lock.release().await?),
            Hold::Pending(_) => Err(not_taken()),
        }
    }
}

/// A pending lock is replaced by the held one before anything asks for it;
/// should that ever not hold, the task stops rather than the worker.
fn not_taken() -> JobError {
    JobError::Failed("the task's lock was never taken".into())
}

/// Claims a part handed over inline with its grant: it runs at once, while
/// `task/TID` is created (unless its victim created it already) and locked.
pub(super) fn claim_part(jobs: &Jobs, job: &ActiveJob, part: Part) -> Claimed {
    let (space, paths, lease) = (jobs.space.clone(), job.paths.clone(), jobs.config.lease);
    let (tid, state, credit) = (part.tid.clone(), part.state.clone(), part.credit);
    let taking = tokio::spawn(async move {
        let path = paths.task(&part.tid);
        create_part(&space, &paths, part).await?;
        try_lock(&space, &path, lease).await
    });
    at_once(jobs, tid, state, credit, Source::Stolen, taking)
}

/// Claims a part made for this worker at submission whose state came with
/// the job's record: it runs at once, while its lock is taken and the task
/// checked to be as submitted ([`runs_as_submitted`]; another worker may have
/// run it while this one was busy). Nothing is written before both are
/// known: until then the task has no fencing token.
pub(super) fn claim_assigned(jobs: &Jobs, job: &ActiveJob, part: Assigned) -> Claimed {
    let (space, paths, lease) = (jobs.space.clone(), job.paths.clone(), jobs.config.lease);
    let tid = part.tid.clone();
    let taking = tokio::spawn(async move {
        let path = paths.task(&part.tid);
        let Some(lock) = try_lock(&space, &path, lease).await? else {
            return Ok(None);
        };
        let result = paths.result(&part.tid);
        let (task, finished) = tokio::join!(stored(&space, &path), exists(&space, &result));
        if runs_as_submitted(task?.as_ref(), finished?) {
            Ok(Some(lock))
        } else {
            lock.release().await?;
            Ok(None)
        }
    });
    let state = part.state.unwrap_or_default();
    at_once(jobs, tid, state, part.credit, Source::Assigned, taking)
}

/// Whether a part made at submission may run from the state the job's
/// record carries: not finished, and its task not written yet (its state
/// rode in the record) or as the submitter wrote it. A worker that claimed
/// it meanwhile (its worker was busy) and stopped may have checkpointed it or
/// divided parts off it, writing the task with `claims` ≥ 1 before either:
/// running the submitted state then would compute those parts twice. Such a
/// task is left to a scan, which resumes it from its record.
fn runs_as_submitted(stored: Option<&TaskRecord>, finished: bool) -> bool {
    !finished && stored.is_none_or(|record| record.claims == 0)
}

/// The record of task `path`, if it exists.
async fn stored(space: &Local, path: &str) -> Result<Option<TaskRecord>> {
    match space.get_bytes(path).await {
        Ok((_, bytes)) => Ok(Some(decode(&bytes, "task")?)),
        Err(SpaceError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A task that runs from `state` at once, while `taking` gets its lock.
fn at_once(
    jobs: &Jobs,
    tid: String,
    state: Vec<u8>,
    credit: Credit,
    source: Source,
    taking: JoinHandle<Result<Option<LocalLock>>>,
) -> Claimed {
    Claimed {
        record: TaskRecord {
            tid,
            state,
            credit,
            holder: Some(jobs.me.clone()),
            claims: 1,
            parts: Vec::new(),
        },
        hold: Hold::Pending(taking),
        restarted: false,
        source,
        asked: None,
        unwritten: false,
    }
}

/// The write lock of `path` if it is free now; `None` if someone holds it.
async fn try_lock(space: &Local, path: &str, lease: Duration) -> Result<Option<LocalLock>> {
    match space
        .lock(path, LockMode::Write, lease, Duration::ZERO)
        .await
    {
        Ok(lock) => Ok(Some(lock)),
        Err(SpaceError::Locked { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What claiming a task came to.
pub(super) enum Claim {
    /// This worker holds it now.
    Claimed(Claimed),
    /// Another worker holds its lock: the workers its key's primary names
    /// (none if it names none).
    Held(Vec<String>),
    /// It needs no running: finished, or gone.
    Gone,
}

impl Claim {
    /// The claimed task, if this worker got it.
    pub fn claimed(self) -> Option<Claimed> {
        match self {
            Claim::Claimed(claimed) => Some(claimed),
            Claim::Held(_) | Claim::Gone => None,
        }
    }
}

/// Claims `task/TID`: takes its lock without waiting, checks the task still
/// needs running, records this worker as its holder, and makes sure the parts
/// its last holder divided off exist.
pub(super) async fn claim(
    jobs: &Jobs,
    job: &ActiveJob,
    tid: &str,
    source: Source,
) -> Result<Claim> {
    let space = &jobs.space;
    let path = job.paths.task(tid);
    let began = std::time::Instant::now();
    let lock = match space
        .lock(&path, LockMode::Write, jobs.config.lease, Duration::ZERO)
        .await
    {
        Ok(lock) => lock,
        Err(SpaceError::Locked { by, .. }) => {
            tracing::debug!(job = %job.id, %tid, refused_in = ?began.elapsed(), "task held elsewhere");
            return Ok(Claim::Held(by));
        }
        Err(e) => return Err(e.into()),
    };
    let locked_in = began.elapsed();
    let token = lock.token();
    let result = job.paths.result(tid);
    let (task, finished) = tokio::join!(stored(space, &path), exists(space, &result));
    tracing::debug!(job = %job.id, %tid, ?locked_in, read_in = ?(began.elapsed() - locked_in), "task locked");
    let (stored, finished) = (task?, finished?);
    if finished {
        if stored.is_some() {
            // Finished, but its holder stopped before removing it.
            space.remove(&path, None, Some(token)).await?;
        }
        return Ok(Claim::Gone);
    }
    // A part whose state rides in the job's record exists as a task only
    // once a worker wrote it.
    let submitted = || spread::submitted(job.record.parts.iter().find(|p| p.tid == tid)?);
    let Some(mut record) = stored.or_else(submitted) else {
        return Ok(Claim::Gone);
    };
    let restarted = record.claims > 0;
    let was_mine = record.holder.as_deref() == Some(jobs.me.as_str());
    record.holder = Some(jobs.me.clone());
    record.claims += 1;
    let parts = std::mem::take(&mut record.parts);
    let had_parts = !parts.is_empty();
    for part in parts {
        ensure_part(space, &job.paths, part).await?;
    }
    // A part made for this worker already names it as holder: claiming it
    // needs no write (its `claims` count restarts only). Parts are in the
    // record until it is written without them, so that write comes first.
    let unwritten = !was_mine || restarted;
    if had_parts {
        write(space, &job.paths, &record, token).await?;
    }
    Ok(Claim::Claimed(Claimed {
        record,
        hold: Hold::Held(lock),
        restarted,
        source,
        asked: None,
        unwritten: unwritten && !had_parts,
    }))
}

/// Whether object `path` exists now.
pub(super) async fn exists(space: &Local, path: &str) -> Result<bool> {
    match space.stat(path).await {
        Ok(_) => Ok(true),
        Err(SpaceError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Writes a task's record under its lock.
pub(super) async fn write(
    space: &Local,
    paths: &JobPaths,
    record: &TaskRecord,
    token: u64,
) -> Result<()> {
    let options = PutOptions {
        meta: record.meta(),
        token: Some(token),
        ..PutOptions::default()
    };
    space
        .put_bytes(&paths.task(&record.tid), &options, &encode(record))
        .await?;
    Ok(())
}

/// Makes sure a divided-off part exists as `task/TID`, unless it already ran
/// to completion.
pub(super) async fn ensure_part(space: &Local, paths: &JobPaths, part: Part) -> Result<()> {
    let path = paths.task(&part.tid);
    // A part's task is removed only after its result is written, so checking
    // the task first and the result second never misses a finished part.
    if exists(space, &path).await? || exists(space, &paths.result(&part.tid)).await? {
        return Ok(());
    }
    create_part(space, paths, part).await
}

/// Makes sure every part granted inline exists as `task/TID` (its thief
/// normally created it long ago), so the checkpoint written next may leave
/// the parts out.
pub(super) async fn ensure_parts(space: &Local, paths: &JobPaths, parts: Vec<Part>) -> Result<()> {
    futures::future::try_join_all(
        parts
            .into_iter()
            .map(|part| ensure_part(space, paths, part)),
    )
    .await?;
    Ok(())
}

/// Writes a new part as `task/TID` unless that exists (a part is created
/// once; `if_version` 0 makes a second attempt a no-op). A part whose thief
/// holds its lock exists already: the thief creates it before locking it.
pub(super) async fn create_part(space: &Local, paths: &JobPaths, part: Part) -> Result<()> {
    let record = TaskRecord {
        tid: part.tid,
        state: part.state,
        credit: part.credit,
        holder: Some(part.holder),
        claims: 0,
        parts: Vec::new(),
    };
    let options = PutOptions {
        meta: record.meta(),
        if_version: Some(0),
        ..PutOptions::default()
    };
    match space
        .put_bytes(&paths.task(&record.tid), &options, &encode(&record))
        .await
    {
        Ok(_) | Err(SpaceError::VersionConflict { .. } | SpaceError::Fenced(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(claims: u32) -> TaskRecord {
        TaskRecord {
            tid: "t".into(),
            state: vec![1],
            credit: Credit::ALL,
            holder: Some("w".into()),
            claims,
            parts: Vec::new(),
        }
    }

    #[test]
    fn only_an_untouched_unfinished_part_runs_from_the_submitted_state() {
        assert!(runs_as_submitted(Some(&record(0)), false));
        // Claimed by another worker, which may have checkpointed or divided it.
        assert!(!runs_as_submitted(Some(&record(1)), false));
        assert!(!runs_as_submitted(Some(&record(3)), false));
        // Finished, before or after its task was removed.
        assert!(!runs_as_submitted(Some(&record(0)), true));
        assert!(!runs_as_submitted(None, true));
        // Not written yet: its state rides in the job's record.
        assert!(runs_as_submitted(None, false));
    }
}
