//! Which jobs a worker works on: its entry in `p3.workers`, the `p3.jobs`
//! registry (watched, and listed now and then in case an event was missed),
//! and a job's beginning and end (starting and stopping the helpers of
//! [`super::follow`]), with the `worker.json` report of what runs.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use p3_objectspace::{
    object::{MetaValue, Metadata, PutOptions},
    watch::EventKind,
    SpaceError,
};

use super::{
    follow::{follow_results, follow_workers, heartbeats, steal_requests, REWATCH},
    pacing,
    state::{locked, ActiveJob, Jobs},
};
use crate::{
    control,
    io::LocalIo,
    job::Result,
    records::{
        last_part, JobId, JobPaths, JobRecord, JobState, JOBS_NAMESPACE, KINDS_META, SLOTS_META,
        WORKERS_NAMESPACE,
    },
    registry::DynJob,
};

/// How often the registry is listed even if its watch said nothing.
const RELIST_EVERY: Duration = Duration::from_secs(30);
/// How often the worker looks whether new peers connected (or, with
/// on-demand connections, joined): a peer that arrived moments ago may have
/// ordered a registry write before it knew of this worker's watch, so the
/// registry is listed again then.
const PEERS_EVERY: Duration = Duration::from_secs(1);

/// How long a worker's entry in `p3.workers` lives unless renewed.
const ANNOUNCE_TTL: Duration = Duration::from_secs(10);
/// How often it is renewed.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(3);
/// The first pause after a failed announcement, doubled after each failure
/// up to [`ANNOUNCE_EVERY`]: when a cluster starts, every worker creates
/// `p3.workers` at once and most of those compare-and-sets on the namespace
/// list fail; a worker absent from the registry for a whole period misses
/// the jobs spread meanwhile.
const ANNOUNCE_RETRY: Duration = Duration::from_millis(100);

/// The pause before the next announcement, after one that `failed`, with
/// `retry` the pause a failure waits now (updated). Failures wait from half
/// to all of `retry`, at random, so the workers that collided do not again.
fn next_announcement(failed: bool, retry: &mut Duration, u: f64) -> Duration {
    if !failed {
        *retry = ANNOUNCE_RETRY;
        return ANNOUNCE_EVERY;
    }
    let wait = pacing::retry(*retry, u);
    *retry = (*retry * 2).min(ANNOUNCE_EVERY);
    wait
}

/// Keeps this worker's entry in the `p3.workers` registry (a volatile object
/// with a TTL, so a worker that died drops out by itself) for as long as the
/// worker runs: submitters spread new jobs over the workers listed there.
pub(super) async fn announce(jobs: Arc<Jobs>) {
    let path = format!("{WORKERS_NAMESPACE}/{}", jobs.me);
    let kinds: Vec<&str> = jobs.config.registry.kinds().map(|(kind, _)| kind).collect();
    let kinds = kinds.join(",");
    let options = PutOptions {
        volatile: true,
        ttl_ms: Some(ANNOUNCE_TTL.as_millis() as u64),
        meta: Metadata::from([
            (
                SLOTS_META.to_owned(),
                MetaValue::Num(jobs.config.slots as f64),
            ),
            (KINDS_META.to_owned(), MetaValue::Str(kinds)),
        ]),
        ..PutOptions::default()
    };
    let mut retry = ANNOUNCE_RETRY;
    loop {
        let written = match jobs.space.put_bytes(&path, &options, b"").await {
            Err(SpaceError::NoSuchNamespace(_)) => {
                match jobs.space.create_namespace(WORKERS_NAMESPACE).await {
                    Ok(()) | Err(SpaceError::NamespaceExists(_)) => {
                        jobs.space.put_bytes(&path, &options, b"").await
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        if let Err(e) = &written {
            tracing::debug!(error = %e, "cannot renew this worker's entry in {WORKERS_NAMESPACE}");
        }
        tokio::time::sleep(next_announcement(
            written.is_err(),
            &mut retry,
            rand::random(),
        ))
        .await;
    }
}

/// How long a stopping worker tries to remove its entry from `p3.workers`.
const WITHDRAW_WAIT: Duration = Duration::from_secs(2);

/// Removes this worker's entry from `p3.workers` (best effort: the entry's
/// TTL ends it anyway).
pub(super) async fn withdraw(jobs: &Jobs) {
    let path = format!("{WORKERS_NAMESPACE}/{}", jobs.me);
    match tokio::time::timeout(WITHDRAW_WAIT, jobs.space.remove(&path, None, None)).await {
        Ok(Ok(_)) | Ok(Err(SpaceError::NotFound(_))) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot remove this worker's entry"),
        Err(_) => tracing::debug!("removing this worker's entry timed out"),
    }
}

/// Follows the job registry for as long as the worker runs.
pub(super) async fn discover(jobs: Arc<Jobs>) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let watcher = tokio::spawn(watch_registry(jobs.clone(), changed.clone()));
    locked(&jobs.helpers).push(watcher);
    let mut peers = Vec::new();
    let mut listed = Instant::now();
    let mut due = true;
    loop {
        if due {
            if let Err(e) = refresh(&jobs).await {
                tracing::debug!(error = %e, "cannot read the job registry");
            }
            listed = Instant::now();
        }
        due = tokio::select! {
            _ = changed.notified() => true,
            _ = tokio::time::sleep(PEERS_EVERY) => {
                let mut now = jobs.space.engine().everyone().await.unwrap_or_default();
                now.sort();
                let joined = now.iter().any(|p| peers.binary_search(p).is_err());
                peers = now;
                joined || listed.elapsed() >= RELIST_EVERY
            }
        };
    }
}

/// Follows the registry's events: a job that starts is read and begun, one
/// that ends is ended, without a listing (which asks every node).
async fn watch_registry(jobs: Arc<Jobs>, changed: Arc<tokio::sync::Notify>) {
    loop {
        // The registry namespace need not exist yet: the watch sees its
        // first entry.
        if let Ok(mut watching) = jobs.space.watch(JOBS_NAMESPACE, "").await {
            // Anything written before the watch began is found by this listing.
            changed.notify_one();
            while let Ok(event) = watching.next().await {
                let Ok(id) = JobId::parse(last_part(event.name.as_str())) else {
                    continue;
                };
                let running = event.kind == EventKind::Put
                    && control::meta_text(&event.meta, "state") == JobState::Running.word();
                let result = if running {
                    consider(&jobs, &id).await
                } else {
                    let active = locked(&jobs.active).get(&id).cloned();
                    if let Some(job) = active {
                        end(&jobs, &job);
                    }
                    Ok(())
                };
                if let Err(e) = result {
                    tracing::debug!(job = %id, error = %e, "cannot read a job's entry");
                    changed.notify_one(); // the listing tries again
                }
            }
        }
        tokio::time::sleep(REWATCH).await;
    }
}

/// Begins work on job `id` (running, says the registry) unless this worker
/// already works on it or cannot.
async fn consider(jobs: &Arc<Jobs>, id: &JobId) -> Result<()> {
    if locked(&jobs.active).contains_key(id) || locked(&jobs.skipped).contains(id) {
        return Ok(());
    }
    let (record, version) = control::record(&mut jobs.space.clone(), id).await?;
    if record.state.is_final() {
        return Ok(());
    }
    match jobs.config.registry.instantiate(&record.kind, &record.args) {
        Ok(job) => begin(jobs, record, version, job),
        Err(e) => {
            tracing::warn!(job = %id, error = %e, "not working on this job");
            locked(&jobs.skipped).insert(id.clone());
        }
    }
    Ok(())
}

async fn refresh(jobs: &Arc<Jobs>) -> Result<()> {
    let space = jobs.space.clone();
    // The listing's metadata says which jobs run; only new ones are read.
    let listed = match space.list(JOBS_NAMESPACE, "").await {
        Ok(listed) => listed,
        Err(SpaceError::NoSuchNamespace(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let running: BTreeSet<JobId> = listed
        .iter()
        .filter(|stat| control::meta_text(&stat.meta, "state") == JobState::Running.word())
        .filter_map(|stat| JobId::parse(last_part(&stat.path)).ok())
        .collect();
    let ended: Vec<Arc<ActiveJob>> = locked(&jobs.active)
        .values()
        .filter(|j| !running.contains(&j.id))
        .cloned()
        .collect();
    for job in ended {
        end(jobs, &job);
    }
    for id in running {
        consider(jobs, &id).await?;
    }
    Ok(())
}

fn begin(jobs: &Arc<Jobs>, record: JobRecord, record_version: u64, job: Arc<dyn DynJob>) {
    let assigned = record
        .parts
        .iter()
        .filter(|part| part.worker == jobs.me)
        .cloned()
        .collect();
    let active = Arc::new(ActiveJob {
        id: record.id.clone(),
        paths: JobPaths::new(&record.id),
        record,
        record_version,
        job,
        ended: Default::default(),
        stats: Default::default(),
        running: Default::default(),
        workers: Default::default(),
        requests: Default::default(),
        asked: Default::default(),
        beat: Default::default(),
        root_taken: Default::default(),
        claiming_root: Default::default(),
        assigned: std::sync::Mutex::new(assigned),
        // The first scan comes a while after the root is claimed: a scan
        // would race the workers claiming it.
        scanned: std::sync::Mutex::new(Some(Instant::now())),
        results: Default::default(),
        helpers: Default::default(),
    });
    {
        // Checked and inserted under one lock: the registry's watch and its
        // listing may both find the job.
        let mut running = locked(&jobs.active);
        if running.contains_key(&active.id) {
            return;
        }
        tracing::info!(job = %active.id, kind = %active.record.kind, "working on job");
        *locked(&active.helpers) = vec![
            tokio::spawn(heartbeats(jobs.clone(), active.clone())),
            tokio::spawn(follow_workers(jobs.clone(), active.clone())),
            tokio::spawn(steal_requests(jobs.clone(), active.clone())),
            tokio::spawn(follow_results(jobs.clone(), active.clone())),
        ];
        running.insert(active.id.clone(), active.clone());
    }
    prepare(jobs, &active);
    write_status(jobs);
    jobs.changed.notify_waiters();
}

/// Runs the job's [`crate::job::Job::prepare`] on a blocking thread while
/// the slots look for work. A failure is only logged: whatever it could not
/// load, the task that needs it loads again and reports.
fn prepare(jobs: &Jobs, job: &Arc<ActiveJob>) {
    let mut io = LocalIo::new(jobs.space.clone(), job.paths.clone());
    let job = job.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = job.job.prepare(&mut io) {
            tracing::debug!(job = %job.id, error = %e, "preparing for the job failed");
        }
    });
}

fn end(jobs: &Jobs, job: &ActiveJob) {
    tracing::info!(job = %job.id, "job over");
    job.ended.set();
    job.beat.notify_one();
    // The heartbeat task (the first) writes its last report and ends by itself.
    for helper in locked(&job.helpers).drain(..).skip(1) {
        helper.abort();
    }
    locked(&jobs.active).remove(&job.id);
    write_status(jobs);
}

/// Stops every helper task.
pub(super) fn stop(jobs: &Jobs) {
    for job in locked(&jobs.active).values() {
        job.ended.set();
        locked(&job.helpers).drain(..).for_each(|h| h.abort());
    }
    locked(&jobs.helpers).drain(..).for_each(|h| h.abort());
    let _ = std::fs::remove_file(status_file(jobs));
}

fn status_file(jobs: &Jobs) -> std::path::PathBuf {
    jobs.config.data_dir.join(STATUS_FILE)
}

/// Rewrites `worker.json` in the data directory: what this worker runs now,
/// for `p3ctl node status` and for operators.
pub(super) fn write_status(jobs: &Jobs) {
    let active: Vec<serde_json::Value> = locked(&jobs.active)
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
        "worker": jobs.me,
        "slots": jobs.config.slots,
        "jobs": active,
    });
    let file = status_file(jobs);
    let temporary = file.with_extension("json.tmp");
    let written = std::fs::write(&temporary, status.to_string())
        .and_then(|()| std::fs::rename(&temporary, &file));
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), error = %e, "cannot write worker status");
    }
}

/// The file in a node's data directory that says what its worker runs.
pub const STATUS_FILE: &str = "worker.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_announcement_is_retried_soon_then_less_often() {
        let mut retry = ANNOUNCE_RETRY;
        let mut waits = Vec::new();
        // The longest wait each time; the draw's range is pacing's test.
        for _ in 0..8 {
            waits.push(next_announcement(true, &mut retry, 1.0));
        }
        assert_eq!(waits[0], ANNOUNCE_RETRY);
        assert!(waits.iter().all(|w| *w <= ANNOUNCE_EVERY));
        assert_eq!(retry, ANNOUNCE_EVERY, "backed off to the renewal period");
        assert!(waits[7] >= ANNOUNCE_EVERY / 2);
        assert_eq!(next_announcement(false, &mut retry, 0.0), ANNOUNCE_EVERY);
        assert_eq!(retry, ANNOUNCE_RETRY, "a success starts the back-off over");
    }
}
