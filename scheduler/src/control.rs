//! Starting, watching and stopping jobs: what `p3ctl job ...` does, and what a
//! worker does when it may have handed back the last credit ([`settle`]).

use std::{path::Path, time::Duration};

use p3_objectspace::{
    object::{MetaValue, Metadata, PutOptions},
    Space, SpaceError,
};
use serde::Serialize;

use crate::{
    io::SpaceIo,
    job::{Args, JobError, Result},
    objects::Objects,
    records::{
        decode, encode, last_part, random_id, Credit, Heartbeat, JobId, JobPaths, JobRecord,
        JobState, Ledger, ResultRecord, TaskRecord, JOBS_NAMESPACE, JOB_TYPE, RESULTS, TASKS,
        WORKERS,
    },
    registry::Registry,
    spread::{self, Spread},
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `Ok(())` for a namespace that is already there.
fn tolerate_exists(result: Result<(), SpaceError>) -> Result<()> {
    match result {
        Ok(()) | Err(SpaceError::NamespaceExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Submits a job: runs its `main` here (through the node on `data_dir`), then
/// publishes its root task — divided among the workers there are when it
/// divides ([`spread`]) — and its registry entry, after which workers pick it
/// up. Returns the job's id.
pub async fn submit(
    data_dir: &Path,
    registry: &Registry,
    kind: &str,
    args: Args,
    spread: Spread,
) -> Result<JobId> {
    let job = registry.instantiate(kind, &args)?;
    let mut space = Space::connect(data_dir).await?;
    let id = JobId::random();
    let ns = id.namespace();
    space.create_namespace(&ns).await?;
    let submitted_ms = now_ms();
    let io = SpaceIo::open(&space, &id).await?;
    let made = job.clone();
    let main = tokio::task::spawn_blocking(move || {
        let mut io = io;
        // The job starts when `main` ends: spreading it (the listing
        // included, where it takes longer than `main`) is part of its run.
        made.main(&mut io).map(|root| (root, now_ms()))
    });
    // The workers are listed while `main` runs: a job that does not divide
    // wastes a listing, one that does starts sooner.
    let listing = async {
        match spread {
            Spread::OverWorkers => spread::live_slots(&mut space, kind).await,
            Spread::Whole => Vec::new(),
        }
    };
    let begun = std::time::Instant::now();
    let (slots, root) = tokio::join!(listing, main);
    tracing::debug!(job = %id, slots = slots.len(), took = ?begun.elapsed(), "main run, workers listed");
    let (root, started_ms) =
        root.map_err(|e| JobError::Failed(format!("main panicked: {e}")))??;
    let paths = JobPaths::new(&id);
    let (tasks, whole) = tokio::task::spawn_blocking(move || {
        let mut root = root;
        let tasks = spread::divide(job.as_ref(), &mut root, &slots)?;
        if !tasks.is_empty() {
            return Ok::<_, JobError>((tasks, None));
        }
        // Published whole: whether the root divides tells idle workers
        // whether to ask its holder for a part. With two or more slots,
        // `divide` has just tried.
        let divides = slots.len() < 2 && job.divisible(&root)?;
        Ok((tasks, Some((job.checkpoint(&root)?, divides))))
    })
    .await
    .map_err(|e| JobError::Failed(format!("dividing the root panicked: {e}")))??;
    tracing::debug!(job = %id, parts = tasks.len(), took = ?begun.elapsed(), "root divided");
    let (root, parts, root_divides) = if let Some((state, divides)) = whole {
        let tid = random_id();
        let task = TaskRecord {
            tid: tid.clone(),
            state,
            credit: Credit::ALL,
            holder: None,
            claims: 0,
            parts: Vec::new(),
        };
        space
            .put_bytes(&paths.task(&tid), &PutOptions::default(), &encode(&task))
            .await?;
        (Some(tid), Vec::new(), divides)
    } else {
        let parts = spread::assigned(&tasks);
        // Parts whose states ride in the record need no write before it
        // (their workers write them); larger ones are written first, so the
        // record never names a part that cannot be read.
        if parts.iter().any(|part| part.state.is_none()) {
            let writes: Vec<_> = tasks
                .iter()
                .map(|t| (paths.task(&t.tid), spread::options(t), encode(t)))
                .collect();
            space.put_all(&writes).await?;
        }
        (None, parts, true)
    };
    tracing::debug!(job = %id, took = ?begun.elapsed(), "tasks written");
    let record = JobRecord {
        id: id.clone(),
        kind: kind.to_owned(),
        args,
        state: JobState::Running,
        submitted_ms,
        started_ms,
        finished_ms: None,
        result: None,
        root,
        root_divides,
        parts,
    };
    // On a new network the registry namespace does not exist yet.
    match write_record(&mut space, &record, Some(0)).await {
        Ok(_) => {}
        Err(JobError::Space(SpaceError::NoSuchNamespace(_))) => {
            tolerate_exists(space.create_namespace(JOBS_NAMESPACE).await)?;
            write_record(&mut space, &record, Some(0)).await?;
        }
        Err(e) => return Err(e),
    }
    tracing::debug!(job = %id, took = ?begun.elapsed(), "job record written");
    Ok(id)
}

async fn write_record(
    space: &mut impl Objects,
    record: &JobRecord,
    if_version: Option<u64>,
) -> Result<u64> {
    let options = PutOptions {
        type_tag: JOB_TYPE.into(),
        meta: record.meta(),
        if_version,
        ..PutOptions::default()
    };
    let written = space
        .put_bytes(&record.id.record_path(), &options, &encode(record))
        .await?;
    Ok(written.version)
}

/// A job's registry entry and its version.
pub async fn record(space: &mut impl Objects, id: &JobId) -> Result<(JobRecord, u64)> {
    match space.get_bytes(&id.record_path()).await {
        Ok((stat, bytes)) => Ok((decode(&bytes, "job record")?, stat.version)),
        Err(SpaceError::NotFound(_) | SpaceError::NoSuchNamespace(_)) => {
            Err(JobError::NoSuchJob(id.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Changes a job's registry entry with `change` (compare-and-set, retried on
/// a concurrent change) unless it is already final. Returns the entry as it
/// ends up.
pub async fn update_record(
    space: &mut impl Objects,
    id: &JobId,
    change: impl Fn(&mut JobRecord),
) -> Result<JobRecord> {
    loop {
        let (mut record, version) = record(space, id).await?;
        if record.state.is_final() {
            return Ok(record);
        }
        change(&mut record);
        match write_record(space, &record, Some(version)).await {
            Ok(_) => return Ok(record),
            Err(JobError::Space(SpaceError::VersionConflict { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Every job in the registry, oldest first.
pub async fn list(space: &mut impl Objects) -> Result<Vec<JobRecord>> {
    let stats = match space.list(JOBS_NAMESPACE, "").await {
        Ok(stats) => stats,
        Err(SpaceError::NoSuchNamespace(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut jobs = Vec::new();
    for stat in stats {
        let Ok(id) = JobId::parse(stat.path.rsplit('/').next().unwrap_or_default()) else {
            continue;
        };
        match record(space, &id).await {
            Ok((record, _)) => jobs.push(record),
            Err(JobError::NoSuchJob(_)) => {}
            Err(e) => return Err(e),
        }
    }
    jobs.sort_by_key(|j| j.submitted_ms);
    Ok(jobs)
}

/// The credit handed back so far, from the `result/` listing, and the results.
async fn returned_credit(space: &mut impl Objects, ns: &str) -> Result<(Ledger, Vec<String>)> {
    let mut ledger = Ledger::default();
    let mut paths = Vec::new();
    for stat in space.list(ns, RESULTS).await? {
        if let Some(credit) = Credit::from_meta(stat.meta.get("credit")) {
            ledger.add(credit);
            paths.push(stat.path);
        }
    }
    Ok((ledger, paths))
}

/// Outputs up to this size are copied into their result's metadata.
pub const META_OUTPUT_MAX: usize = 256;

/// Records a finished task's output and hands its credit back.
pub async fn write_result(
    space: &mut impl Objects,
    paths: &JobPaths,
    tid: &str,
    result: &ResultRecord,
) -> Result<()> {
    let mut meta = Metadata::from([
        ("credit".into(), result.credit.to_meta()),
        ("worker".into(), MetaValue::Str(result.worker.clone())),
    ]);
    // A small output rides in the metadata too, so the workers that follow
    // the results through their events can reduce without reading any.
    if result.output.len() <= META_OUTPUT_MAX {
        meta.insert("output".into(), MetaValue::Str(hex::encode(&result.output)));
    }
    let options = PutOptions {
        meta,
        ..PutOptions::default()
    };
    space
        .put_bytes(&paths.result(tid), &options, &encode(result))
        .await?;
    Ok(())
}

/// Finishes the job if all credit is back: reduces the outputs and records the
/// result. Whoever sees the last credit first does it; anyone may call it any
/// time. Returns the fraction of credit back.
pub async fn settle(space: &mut impl Objects, registry: &Registry, id: &JobId) -> Result<f64> {
    let (record, version) = record(space, id).await?;
    if record.state.is_final() {
        return Ok(1.0);
    }
    let (ledger, paths) = returned_credit(space, &id.namespace()).await?;
    if ledger.exceeds_whole() {
        // Cannot happen while the conventions hold; refuse to report nonsense.
        let reason = "more credit came back than was handed out".to_string();
        fail(space, id, &reason).await?;
        return Err(JobError::Failed(reason));
    }
    if !ledger.is_whole() {
        return Ok(ledger.fraction().min(0.999));
    }
    let unread = paths.into_iter().map(|path| (path, None)).collect();
    settle_known(space, registry, (&record, version), unread).await
}

/// [`settle`] for a caller that knows every result already (their credit
/// is whole): no listing, no reading of the outputs it holds (`None` entries
/// are read), and the registry entry written against `version` (re-read only
/// if that changed).
pub async fn settle_known(
    space: &mut impl Objects,
    registry: &Registry,
    (record, version): (&JobRecord, u64),
    results: Vec<(String, Option<Vec<u8>>)>,
) -> Result<f64> {
    let missing: Vec<String> = results
        .iter()
        .filter(|(_, output)| output.is_none())
        .map(|(path, _)| path.clone())
        .collect();
    let mut read = space.get_all(&missing).await?.into_iter();
    let mut outputs = Vec::with_capacity(results.len());
    for (_, output) in results {
        match output {
            Some(output) => outputs.push(output),
            None => {
                let bytes = read
                    .next()
                    .ok_or_else(|| JobError::Failed("fewer results read than asked for".into()))?;
                outputs.push(decode::<ResultRecord>(&bytes, "task result")?.output);
            }
        }
    }
    reduce(space, registry, (record, version), outputs).await
}

/// Reduces `outputs` (those of all of the job's results) and records the job
/// as done: one compare-and-set against `version`, else re-read and retried
/// unless the job is final meanwhile.
async fn reduce(
    space: &mut impl Objects,
    registry: &Registry,
    (record, version): (&JobRecord, u64),
    outputs: Vec<Vec<u8>>,
) -> Result<f64> {
    let id = &record.id;
    let job = match registry.instantiate(&record.kind, &record.args) {
        Ok(job) => job,
        // All credit is back, but this binary cannot reduce the outputs; a
        // worker that knows the kind will.
        Err(JobError::UnknownKind(_)) => return Ok(1.0),
        Err(e) => return Err(e),
    };
    let result = job.reduce(&outputs)?.to_string();
    let done = |r: &mut JobRecord| {
        r.state = JobState::Done;
        r.result = Some(result.clone());
        r.finished_ms = Some(now_ms());
    };
    let mut finished = record.clone();
    done(&mut finished);
    match write_record(space, &finished, Some(version)).await {
        Ok(_) => {}
        Err(JobError::Space(SpaceError::VersionConflict { .. })) => {
            update_record(space, id, done).await?;
        }
        Err(e) => return Err(e),
    }
    Ok(1.0)
}

/// Marks a job failed (unless it is already final).
pub async fn fail(space: &mut impl Objects, id: &JobId, reason: &str) -> Result<()> {
    update_record(space, id, |r| {
        r.state = JobState::Failed(reason.to_owned());
        r.finished_ms = Some(now_ms());
    })
    .await
    .map(drop)
}

/// Cancels a job: marks it cancelled, so its workers stop at their next safe
/// point, and removes its namespace with everything in it.
pub async fn cancel(space: &mut impl Objects, id: &JobId) -> Result<JobRecord> {
    let record = update_record(space, id, |r| {
        r.state = JobState::Cancelled;
        r.finished_ms = Some(now_ms());
    })
    .await?;
    match space.remove_namespace(&id.namespace()).await {
        Ok(()) | Err(SpaceError::NoSuchNamespace(_)) => Ok(record),
        Err(e) => Err(e.into()),
    }
}

/// One worker's part in a job, for `job status`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerShare {
    /// Its heartbeat (counters included).
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
    /// Its fraction of all time spent computing.
    pub share: f64,
    /// When it last reported, ms since the epoch.
    pub seen_ms: u64,
}

/// What `p3ctl job status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// The registry entry.
    pub job: JobRecord,
    /// Fraction of the credit back (1 when done).
    pub progress: f64,
    /// Time since start, or start to finish.
    pub elapsed_ms: u64,
    /// Tasks not finished.
    pub tasks: usize,
    /// Sums over workers.
    pub steals: u64,
    /// Sum over workers.
    pub divides: u64,
    /// Sum over workers.
    pub restarts: u64,
    /// Each worker that reported.
    pub workers: Vec<WorkerShare>,
}

/// How many of a job's tasks are not finished: those written as `task/TID`,
/// and the parts riding in its record that are neither written nor finished.
async fn open_tasks(space: &mut impl Objects, job: &JobRecord) -> Result<usize> {
    let ns = job.id.namespace();
    let written = space.list(&ns, TASKS).await?;
    let mut tasks = written.len();
    let mut unwritten = spread::unwritten(&job.parts, &written).peekable();
    if unwritten.peek().is_some() {
        let finished = space.list(&ns, RESULTS).await?;
        tasks += unwritten
            .filter(|part| !finished.iter().any(|s| last_part(&s.path) == part.tid))
            .count();
    }
    Ok(tasks)
}

/// A job's progress as its status shows it: `settled` was measured before
/// `job` was read, and the job may have finished in between (its last result
/// came in); a final job has made all the progress it will.
fn progress_of(settled: f64, job: &JobRecord) -> f64 {
    if job.state.is_final() {
        1.0
    } else {
        settled
    }
}

/// Gathers a job's status from its registry entry and namespace.
pub async fn status(
    space: &mut impl Objects,
    registry: &Registry,
    id: &JobId,
) -> Result<JobStatus> {
    let settled = settle(space, registry, id).await?;
    let (job, _) = record(space, id).await?;
    let progress = progress_of(settled, &job);
    let ns = id.namespace();
    let (mut workers, mut tasks) = (Vec::new(), 0);
    // A cancelled job's namespace is gone; its record is all there is.
    if job.state != JobState::Cancelled {
        tasks = open_tasks(space, &job).await?;
        for stat in space.list(&ns, WORKERS).await? {
            let (_, bytes) = space.get_bytes(&stat.path).await?;
            workers.push(WorkerShare {
                heartbeat: decode(&bytes, "heartbeat")?,
                share: 0.0,
                seen_ms: stat.modified_ms,
            });
        }
    }
    let busy: u64 = workers.iter().map(|w| w.heartbeat.stats.busy_ms).sum();
    for w in &mut workers {
        w.share = w.heartbeat.stats.busy_ms as f64 / busy.max(1) as f64;
    }
    let sum = |f: fn(&WorkerShare) -> u64| workers.iter().map(f).sum();
    Ok(JobStatus {
        elapsed_ms: job
            .finished_ms
            .unwrap_or_else(now_ms)
            .saturating_sub(job.started_ms),
        progress,
        tasks,
        steals: sum(|w| w.heartbeat.stats.steals),
        divides: sum(|w| w.heartbeat.stats.divides),
        restarts: sum(|w| w.heartbeat.stats.restarts),
        workers,
        job,
    })
}

/// Waits until the job reaches a final state, calling `progress` with the
/// fraction of credit back as it changes, and returns its final record.
pub async fn wait(
    space: &mut impl Objects,
    registry: &Registry,
    id: &JobId,
    mut progress: impl FnMut(f64),
) -> Result<JobRecord> {
    loop {
        let (record, version) = record(space, id).await?;
        if record.state.is_final() {
            progress(1.0);
            return Ok(record);
        }
        // Wakes as soon as the record changes; while it does not, re-counts
        // the credit (and settles a job whose last worker died before it
        // could).
        match space
            .await_newer(&id.record_path(), version, Duration::from_millis(500))
            .await
        {
            Ok(()) => {}
            Err(SpaceError::NotFound(_) | SpaceError::TimedOut(_)) => {
                progress(settle(space, registry, id).await?);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Metadata value as text, for tables.
pub fn meta_text(meta: &Metadata, key: &str) -> String {
    match meta.get(key) {
        Some(MetaValue::Str(s)) => s.clone(),
        Some(MetaValue::Num(n)) => n.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::running_job;

    #[test]
    fn a_job_that_finished_after_its_credit_was_counted_shows_all_progress() {
        let nothing_back = Ledger::default().fraction();
        assert!(
            nothing_back == 0.0 && nothing_back.is_sign_positive(),
            "{nothing_back}"
        );
        let mut job = running_job();
        assert_eq!(progress_of(nothing_back, &job), 0.0);
        job.state = JobState::Done;
        assert_eq!(progress_of(nothing_back, &job), 1.0);
    }
}
