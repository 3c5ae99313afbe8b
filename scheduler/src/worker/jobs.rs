//! Which jobs a worker works on, and what keeps its view of each current:
//! the `p3.jobs` registry (watched, and listed now and then in case an event
//! was missed), and per job a heartbeat task, a watch on the other workers'
//! heartbeats and a watch on the steal requests addressed to this worker.

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
    state::{locked, ActiveJob, Heard, Jobs, WorkerView},
    steal,
};
use crate::{
    control,
    io::LocalIo,
    job::Result,
    records::{
        encode, last_part, Credit, Heartbeat, JobId, JobPaths, JobRecord, JobState, JOBS_NAMESPACE,
        KINDS_META, RESULTS, SLOTS_META, WORKERS, WORKERS_NAMESPACE,
    },
    registry::DynJob,
};

/// Steal requests a worker queues before it declines the rest unread.
const MAX_QUEUED_REQUESTS: usize = 64;
/// How often the registry is listed even if its watch said nothing.
const RELIST_EVERY: Duration = Duration::from_secs(30);
/// How often the worker looks whether new peers connected: a peer that
/// connected moments ago may have ordered a registry write before it knew
/// of this worker's watch, so the registry is listed again then.
const PEERS_EVERY: Duration = Duration::from_secs(1);
/// Pause before a failed watch is started again.
const REWATCH: Duration = Duration::from_millis(200);

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
fn next_announcement(failed: bool, retry: &mut Duration) -> Duration {
    if !failed {
        *retry = ANNOUNCE_RETRY;
        return ANNOUNCE_EVERY;
    }
    let wait = retry.mul_f64(rand::random::<f64>() / 2.0 + 0.5);
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
        tokio::time::sleep(next_announcement(written.is_err(), &mut retry)).await;
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
                let mut now = jobs.space.engine().node().connected().await.unwrap_or_default();
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

/// How long after its part starts a worker of a spread job reports first,
/// at most (at random, see [`heartbeats`]).
const FIRST_REPORT_SPREAD: Duration = Duration::from_millis(100);

/// Reports this worker's load and counters for `job` every heartbeat
/// interval, whenever what thieves act on changes ([`Heartbeat::offer`]),
/// and when the job ends. A heartbeat is volatile (a message to each owner
/// of its name), and every other worker of the job hears of it (a message
/// each): any other change (counters; the end of a task that had nothing
/// left to give, as every task of a job has near its end) waits for the
/// interval, which keeps the worker alive in the others' view. At a job's
/// end that spares every worker a report while the results are written.
async fn heartbeats(jobs: Arc<Jobs>, job: Arc<ActiveJob>) {
    let path = job.paths.worker(&jobs.me);
    // A worker with a part of its own reports once that part runs, a moment
    // from now, not first as idle; and then within 100 ms, at random: every
    // worker of a spread job starts its part at once, and their first
    // reports (each a message to every other worker) would hold up the
    // workers still starting theirs. Not later: a worker that finishes its
    // part early steals only from workers it heard of.
    if !locked(&job.assigned).is_empty() {
        let _ = tokio::time::timeout(jobs.config.heartbeat, job.beat.notified()).await;
        let spread = FIRST_REPORT_SPREAD.mul_f64(rand::random::<f64>());
        let _ = tokio::time::timeout(spread, job.ended.wait()).await;
    }
    let (mut last, mut due) = (None, true);
    loop {
        let ended = job.ended();
        let heartbeat = job.heartbeat(&jobs.me);
        let news = last.as_ref().map(Heartbeat::offer) != Some(heartbeat.offer());
        // The last report has the final counters (`job status` shows them).
        let last_word = ended && last.as_ref() != Some(&heartbeat);
        if due || news || last_word {
            let options = PutOptions {
                meta: heartbeat.meta(),
                volatile: true,
                ..PutOptions::default()
            };
            if let Err(e) = jobs
                .space
                .put_bytes(&path, &options, &encode(&heartbeat))
                .await
            {
                tracing::debug!(job = %job.id, error = %e, "heartbeat not written");
            }
            last = Some(heartbeat);
        }
        if ended {
            return;
        }
        // Each interval a quarter longer or shorter at random: the workers of
        // a job that started together drift apart instead of reporting in
        // one burst (a message to every other worker each). Liveness allows
        // a lease past the interval (`Jobs::fresh_ms`).
        let interval = jobs
            .config
            .heartbeat
            .mul_f64(0.75 + rand::random::<f64>() / 2.0);
        due = tokio::select! {
            _ = job.beat.notified() => false,
            _ = tokio::time::sleep(interval) => true,
        };
    }
}

/// Keeps `job.workers` current from the heartbeats' events (their metadata
/// carries load and running tasks), after one listing for those written
/// before the watch began. For a job that has just started that listing
/// waits: every worker of it would list at once, each asking every node
/// (256 requests with 16 workers) while the root is being claimed, and what
/// it would find comes again within a heartbeat anyway (the root's gathering
/// lists for itself).
async fn follow_workers(jobs: Arc<Jobs>, job: Arc<ActiveJob>) {
    let ns = job.paths.ns().to_owned();
    let mut pause = first_listing_pause(&jobs, &job);
    while !job.ended() {
        let Ok(mut watching) = jobs.space.watch(&ns, WORKERS).await else {
            tokio::time::sleep(REWATCH).await;
            continue;
        };
        let list = async {
            tokio::time::sleep(std::mem::take(&mut pause)).await;
            job.refresh_workers(&jobs.space).await;
            jobs.changed.notify_waiters();
        };
        tokio::pin!(list);
        let mut listed = false;
        loop {
            let event = tokio::select! {
                () = &mut list, if !listed => {
                    listed = true;
                    continue;
                }
                event = watching.next() => event,
            };
            let Ok(event) = event else { break };
            if event.kind != EventKind::Put {
                continue;
            }
            let view = WorkerView::of(&event.meta, event.at_ms);
            let busy = view.running > 0.0;
            locked(&job.workers).insert(last_part(event.name.as_str()).to_owned(), view);
            if busy {
                // Idle slots may have a victim now.
                jobs.changed.notify_waiters();
            }
        }
    }
}

/// How long a watch of a job's objects waits before it lists those written
/// before it began: a while for a job that has just started (every worker
/// would list at once, each asking every node, while the job starts; what
/// there is to find comes within a heartbeat anyway), else not at all. Only
/// the first listing waits; later ones (after a watch broke) list at once.
fn first_listing_pause(jobs: &Jobs, job: &ActiveJob) -> Duration {
    let young = control::now_ms().saturating_sub(job.record.started_ms)
        < jobs.config.heartbeat.as_millis() as u64;
    if young {
        jobs.config.heartbeat / 2
    } else {
        Duration::ZERO
    }
}

/// How long a worker that hears the last result of a job leaves the worker
/// chosen to settle it ([`ActiveJob::settles`]) before it does so itself.
const SETTLE_GRACE: Duration = Duration::from_secs(1);

/// The credit, writer and (when small) output a result's metadata carries.
fn result_meta(meta: &Metadata) -> Option<Heard> {
    let output = match meta.get("output") {
        Some(MetaValue::Str(text)) => hex::decode(text).ok(),
        _ => None,
    };
    Some(Heard {
        credit: Credit::from_meta(meta.get("credit"))?,
        worker: control::meta_text(meta, "worker"),
        output,
    })
}

/// Keeps `job.results` current from the results' events (their metadata
/// carries credit and writer), and one listing for those written before the
/// watch began ([`first_listing_pause`]). The worker that writes the last result settles the job
/// if it knows the credit is whole then; else, once the credit is whole, the
/// worker [`ActiveJob::settles`] chooses does at once, and any other after
/// [`SETTLE_GRACE`] if the job is still not over. (Idle workers settle a job
/// without tasks anyway; this is the fast way.)
async fn follow_results(jobs: Arc<Jobs>, job: Arc<ActiveJob>) {
    let ns = job.paths.ns().to_owned();
    let mut pause = first_listing_pause(&jobs, &job);
    while !job.ended() {
        let Ok(mut watching) = jobs.space.watch(&ns, RESULTS).await else {
            tokio::time::sleep(REWATCH).await;
            continue;
        };
        let list = async {
            tokio::time::sleep(std::mem::take(&mut pause)).await;
            jobs.space.list(&ns, RESULTS).await
        };
        tokio::pin!(list);
        let (mut listed, mut whole) = (false, false);
        loop {
            if whole {
                if !job.settles(&jobs.me) {
                    tokio::time::sleep(SETTLE_GRACE).await;
                }
                if job.ended() {
                    return;
                }
                if let Err(e) = job.settle_known(&jobs).await {
                    tracing::debug!(job = %job.id, error = %e, "cannot settle the job");
                }
                whole = false;
            }
            let event = tokio::select! {
                listing = &mut list, if !listed => {
                    listed = true;
                    for stat in listing.into_iter().flatten() {
                        if let Some(heard) = result_meta(&stat.meta) {
                            whole |= job.note_result(last_part(&stat.path), heard);
                        }
                    }
                    continue;
                }
                event = watching.next() => event,
            };
            let Ok(event) = event else { break };
            if event.kind != EventKind::Put {
                continue;
            }
            if let Some(heard) = result_meta(&event.meta) {
                whole |= job.note_result(last_part(event.name.as_str()), heard);
            }
        }
    }
}

/// Queues the steal requests other workers address to this one; answers
/// "declined" at once while this worker runs nothing of the job. Workers
/// that lose the race for the root ask its winner at once, maybe before the
/// winner's watch is in place: a worker that is claiming or running a task
/// by the time its watch is lists what came before (a listing asks every
/// node, so only then).
async fn steal_requests(jobs: Arc<Jobs>, job: Arc<ActiveJob>) {
    let prefix = crate::records::JobPaths::steals_to(&jobs.me);
    while !job.ended() {
        let Ok(mut watching) = jobs.space.watch(job.paths.ns(), &prefix).await else {
            tokio::time::sleep(REWATCH).await;
            continue;
        };
        if job.keeps_requests() {
            if let Ok(listed) = jobs.space.list(job.paths.ns(), &prefix).await {
                for stat in listed {
                    hear_request(&jobs, &job, last_part(&stat.path)).await;
                }
            }
        }
        while let Ok(event) = watching.next().await {
            if event.kind == EventKind::Put {
                hear_request(&jobs, &job, last_part(event.name.as_str())).await;
            }
        }
    }
}

/// Queues steal request `rid` (once), or declines it.
async fn hear_request(jobs: &Jobs, job: &ActiveJob, rid: &str) {
    let queued = job.keeps_requests() && {
        let mut queue = locked(&job.requests);
        if queue.iter().any(|(queued, _)| queued == rid) {
            return;
        }
        queue.len() < MAX_QUEUED_REQUESTS && {
            queue.push_back((rid.to_owned(), Instant::now()));
            true
        }
    };
    if queued {
        job.asked.notify_waiters();
    } else {
        steal::decline(jobs, job, rid).await;
    }
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
        for _ in 0..8 {
            waits.push(next_announcement(true, &mut retry));
        }
        assert!(waits[0] >= ANNOUNCE_RETRY / 2 && waits[0] <= ANNOUNCE_RETRY);
        assert!(waits.iter().all(|w| *w <= ANNOUNCE_EVERY));
        assert_eq!(retry, ANNOUNCE_EVERY, "backed off to the renewal period");
        assert!(waits[7] >= ANNOUNCE_EVERY / 2);
        assert_eq!(next_announcement(false, &mut retry), ANNOUNCE_EVERY);
        assert_eq!(retry, ANNOUNCE_RETRY, "a success starts the back-off over");
    }
}
