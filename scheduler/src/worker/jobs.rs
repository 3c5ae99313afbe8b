//! Which jobs a worker works on, and what keeps its view of each current:
//! the `p3.jobs` registry (watched, and listed now and then in case an event
//! was missed), and per job a heartbeat task, a watch on the other workers'
//! heartbeats and a watch on the steal requests addressed to this worker.

use std::{
    collections::BTreeSet,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use p3_objectspace::{object::PutOptions, watch::EventKind, SpaceError};

use super::{
    state::{locked, ActiveJob, Jobs, WorkerView},
    steal,
};
use crate::{
    control,
    job::Result,
    records::{encode, last_part, JobId, JobPaths, JobRecord, JobState, JOBS_NAMESPACE, WORKERS},
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

async fn watch_registry(jobs: Arc<Jobs>, changed: Arc<tokio::sync::Notify>) {
    loop {
        // The registry namespace need not exist yet: the watch sees its
        // first entry.
        if let Ok(mut watching) = jobs.space.watch(JOBS_NAMESPACE, "").await {
            // Anything written before the watch began is found by this listing.
            changed.notify_one();
            while watching.next().await.is_ok() {
                changed.notify_one();
            }
        }
        tokio::time::sleep(REWATCH).await;
    }
}

async fn refresh(jobs: &Arc<Jobs>) -> Result<()> {
    let mut space = jobs.space.clone();
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
        if locked(&jobs.active).contains_key(&id) || locked(&jobs.skipped).contains(&id) {
            continue;
        }
        let (record, _) = control::record(&mut space, &id).await?;
        if record.state.is_final() {
            continue;
        }
        match jobs.config.registry.instantiate(&record.kind, &record.args) {
            Ok(job) => begin(jobs, record, job),
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "not working on this job");
                locked(&jobs.skipped).insert(id);
            }
        }
    }
    Ok(())
}

fn begin(jobs: &Arc<Jobs>, record: JobRecord, job: Arc<dyn DynJob>) {
    let active = Arc::new(ActiveJob {
        id: record.id.clone(),
        paths: JobPaths::new(&record.id),
        record,
        job,
        ended: Default::default(),
        stats: Default::default(),
        running: Default::default(),
        workers: Default::default(),
        requests: Default::default(),
        asked: Default::default(),
        beat: Default::default(),
        tickets_gone: Default::default(),
        scanned: Default::default(),
        helpers: Default::default(),
    });
    tracing::info!(job = %active.id, kind = %active.record.kind, "working on job");
    *locked(&active.helpers) = vec![
        tokio::spawn(heartbeats(jobs.clone(), active.clone())),
        tokio::spawn(follow_workers(jobs.clone(), active.clone())),
        tokio::spawn(steal_requests(jobs.clone(), active.clone())),
    ];
    locked(&jobs.active).insert(active.id.clone(), active);
    write_status(jobs);
    jobs.changed.notify_waiters();
}

fn end(jobs: &Jobs, job: &ActiveJob) {
    tracing::info!(job = %job.id, "job over");
    job.ended.store(true, Ordering::Relaxed);
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
        job.ended.store(true, Ordering::Relaxed);
        locked(&job.helpers).drain(..).for_each(|h| h.abort());
    }
    locked(&jobs.helpers).drain(..).for_each(|h| h.abort());
    let _ = std::fs::remove_file(status_file(jobs));
}

/// Reports this worker's load and counters for `job` every heartbeat
/// interval and whenever its running set changes, until the job ends. A
/// heartbeat is volatile: a message to each owner of its name.
async fn heartbeats(jobs: Arc<Jobs>, job: Arc<ActiveJob>) {
    let path = job.paths.worker(&jobs.me);
    loop {
        let ended = job.ended();
        let heartbeat = job.heartbeat(&jobs.me);
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
        if ended {
            return;
        }
        tokio::select! {
            _ = job.beat.notified() => {}
            _ = tokio::time::sleep(jobs.config.heartbeat) => {}
        }
    }
}

/// Keeps `job.workers` current from the heartbeats' events (their metadata
/// carries load and running tasks), after one listing for those written
/// before the watch began.
async fn follow_workers(jobs: Arc<Jobs>, job: Arc<ActiveJob>) {
    let ns = job.paths.ns().to_owned();
    while !job.ended() {
        let Ok(mut watching) = jobs.space.watch(&ns, WORKERS).await else {
            tokio::time::sleep(REWATCH).await;
            continue;
        };
        job.refresh_workers(&jobs.space).await;
        jobs.changed.notify_waiters();
        while let Ok(event) = watching.next().await {
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

/// Queues the steal requests other workers address to this one; answers
/// "declined" at once while this worker runs nothing of the job.
async fn steal_requests(jobs: Arc<Jobs>, job: Arc<ActiveJob>) {
    let prefix = crate::records::JobPaths::steals_to(&jobs.me);
    while !job.ended() {
        let Ok(mut watching) = jobs.space.watch(job.paths.ns(), &prefix).await else {
            tokio::time::sleep(REWATCH).await;
            continue;
        };
        while let Ok(event) = watching.next().await {
            if event.kind != EventKind::Put {
                continue;
            }
            let rid = last_part(event.name.as_str()).to_owned();
            let queued = job.busy() && {
                let mut queue = locked(&job.requests);
                queue.len() < MAX_QUEUED_REQUESTS && {
                    queue.push_back((rid.clone(), Instant::now()));
                    true
                }
            };
            if queued {
                job.asked.notify_waiters();
            } else {
                steal::decline(&jobs, &job, &rid).await;
            }
        }
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
