//! What keeps a worker's view of one job current while it works on it: its
//! heartbeats (and the other workers' heard through a watch), the results
//! of the job's tasks as they are written, and the steal requests
//! addressed to this worker. [`super::jobs`] starts these helpers when the
//! worker begins a job and stops them when it ends.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use p3_objectspace::{
    object::{MetaValue, Metadata, PutOptions},
    watch::EventKind,
};

use super::{
    pacing,
    state::{locked, ActiveJob, Heard, Jobs, WorkerView},
    steal,
};
use crate::{
    control,
    records::{encode, last_part, Credit, Heartbeat, RESULTS, WORKERS},
};

/// Steal requests a worker queues before it declines the rest unread.
const MAX_QUEUED_REQUESTS: usize = 64;
/// Pause before a failed watch is started again.
pub(super) const REWATCH: Duration = Duration::from_millis(200);
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
pub(super) async fn heartbeats(jobs: Arc<Jobs>, job: Arc<ActiveJob>) {
    let path = job.paths.worker(&jobs.me);
    // A worker with a part of its own reports once that part runs, a moment
    // from now, not first as idle; and then within 100 ms, at random: every
    // worker of a spread job starts its part at once, and their first
    // reports (each a message to every other worker) would hold up the
    // workers still starting theirs. Not later: a worker that finishes its
    // part early steals only from workers it heard of.
    if !locked(&job.assigned).is_empty() {
        let _ = tokio::time::timeout(jobs.config.heartbeat, job.beat.notified()).await;
        let spread = pacing::first_report(FIRST_REPORT_SPREAD, rand::random());
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
        let interval = pacing::heartbeat(jobs.config.heartbeat, rand::random());
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
pub(super) async fn follow_workers(jobs: Arc<Jobs>, job: Arc<ActiveJob>) {
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
pub(super) async fn follow_results(jobs: Arc<Jobs>, job: Arc<ActiveJob>) {
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
pub(super) async fn steal_requests(jobs: Arc<Jobs>, job: Arc<ActiveJob>) {
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
