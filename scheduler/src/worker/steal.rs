//! Both sides of a steal. The thief writes `steal/VICTIM/RID` and waits for
//! `grant/RID`; the victim, at its next safe point, takes the request (so a
//! thief that gave up and a victim never both act on it), divides its task,
//! checkpoints both halves, and writes the new task `task/RID` for the thief
//! before the grant.

use std::collections::HashMap;

use p3_objectspace::{
    api::protocol::Wait,
    object::{MetaValue, Metadata, PutOptions},
    Space, SpaceError,
};
use rand::Rng;

use super::{
    jobs::{locked, ActiveJob, Jobs},
    slot::{claim, exists, write_task, Claimed, Source},
};
use crate::{
    control::now_ms,
    job::{JobError, Result},
    records::{decode, encode, random_id, Grant, Part, StealRequest, TaskRecord},
    registry::AnyState,
};

/// A worker of a job as its heartbeat shows it.
pub(super) struct WorkerView {
    pub worker: String,
    /// Reported within a lease and a heartbeat interval.
    pub alive: bool,
    pub running: f64,
    pub load: f64,
}

fn number(meta: &Metadata, key: &str) -> f64 {
    match meta.get(key) {
        Some(MetaValue::Num(n)) => *n,
        _ => 0.0,
    }
}

/// The workers of `job`, from their heartbeats.
pub(super) async fn workers(
    jobs: &Jobs,
    job: &ActiveJob,
    space: &mut Space,
) -> Result<Vec<WorkerView>> {
    let now = now_ms();
    let fresh = (jobs.config.lease + jobs.config.heartbeat).as_millis() as u64;
    Ok(space
        .list(&job.ns, "worker/")
        .await?
        .into_iter()
        .filter_map(|stat| {
            let worker = stat.path.rsplit('/').next()?.to_owned();
            Some(WorkerView {
                worker,
                alive: now.saturating_sub(stat.modified_ms) <= fresh,
                running: number(&stat.meta, "running"),
                load: number(&stat.meta, "load"),
            })
        })
        .collect())
}

/// Asks a busy worker, chosen at random weighted by its load and closeness
/// (ping round-trip time), for part of its work; claims what it grants.
pub(super) async fn steal(
    jobs: &Jobs,
    job: &ActiveJob,
    space: &mut Space,
    workers: &[WorkerView],
) -> Result<Option<Claimed>> {
    let rtts: HashMap<String, u64> = space
        .peers()
        .await?
        .into_iter()
        .filter_map(|p| Some((p.peer_id, p.rtt_us?)))
        .collect();
    // Weighted by load, and by closeness: a peer 10 ms away counts half.
    let victims: Vec<(&WorkerView, f64)> = workers
        .iter()
        .filter(|w| w.alive && w.worker != jobs.me && w.running > 0.0 && w.load > 0.0)
        .map(|w| {
            let rtt_ms = rtts.get(&w.worker).map_or(0.0, |&us| us as f64 / 1000.0);
            (w, w.load / (1.0 + rtt_ms / 10.0))
        })
        .collect();
    let total: f64 = victims.iter().map(|(_, weight)| weight).sum();
    if victims.is_empty() || !total.is_finite() || total <= 0.0 {
        return Ok(None);
    }
    let mut pick = rand::thread_rng().gen_range(0.0..total);
    let (victim, _) = victims
        .iter()
        .find(|(_, weight)| {
            pick -= weight;
            pick < 0.0
        })
        .unwrap_or(&victims[0]);
    let rid = random_id();
    let request = format!("{}/steal/{}/{rid}", job.ns, victim.worker);
    let asking = StealRequest {
        thief: jobs.me.clone(),
    };
    space
        .put_bytes(&request, &PutOptions::default(), &encode(&asking))
        .await?;
    let grant_path = format!("{}/grant/{rid}", job.ns);
    let mut grant = await_grant(space, &grant_path, jobs.config.steal_wait).await?;
    if grant.is_none() {
        // Withdraw; if the victim took the request first, its answer is coming.
        match space
            .take(&request, None, tokio::io::sink(), |_, _| {})
            .await
        {
            Ok(_) => return Ok(None),
            Err(SpaceError::NotFound(_)) => {
                grant = await_grant(space, &grant_path, jobs.config.steal_wait * 2).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    match grant {
        Some(Grant::Task(tid)) => claim(jobs, job, space, &tid, Source::Stolen).await,
        // Declined, or the victim died before answering: a task it made for us
        // later is ours anyway (we are its holder) and the scan finds it.
        Some(Grant::Declined) | None => Ok(None),
    }
}

async fn await_grant(
    space: &mut Space,
    path: &str,
    wait: std::time::Duration,
) -> Result<Option<Grant>> {
    let wait = Wait {
        ms: wait.as_millis() as u64,
        after_version: None,
    };
    let mut bytes = Vec::new();
    match space
        .get_waiting(path, Some(wait), &mut bytes, |_, _| {})
        .await
    {
        Ok(_) => {}
        Err(SpaceError::NotFound(_) | SpaceError::TimedOut(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let _ = space.remove(path, None).await;
    Ok(Some(decode(&bytes, "grant")?))
}

/// Takes the steal request `rid` addressed to this worker; `None` if the thief
/// withdrew it.
async fn take_request(
    space: &mut Space,
    job: &ActiveJob,
    me: &str,
    rid: &str,
) -> Result<Option<StealRequest>> {
    let path = format!("{}/steal/{me}/{rid}", job.ns);
    let mut bytes = Vec::new();
    match space.take(&path, None, &mut bytes, |_, _| {}).await {
        Ok(_) => Ok(Some(decode(&bytes, "steal request")?)),
        Err(SpaceError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn answer(space: &mut Space, job: &ActiveJob, rid: &str, grant: &Grant) -> Result<()> {
    let path = format!("{}/grant/{rid}", job.ns);
    space
        .put_bytes(&path, &PutOptions::default(), &encode(grant))
        .await?;
    Ok(())
}

/// Declines request `rid` (this worker has nothing of the job running).
pub(super) async fn decline(space: &mut Space, job: &ActiveJob, me: &str, rid: &str) {
    let declined = async {
        if take_request(space, job, me, rid).await?.is_some() {
            answer(space, job, rid, &Grant::Declined).await?;
        }
        Ok::<_, JobError>(())
    };
    if let Err(e) = declined.await {
        tracing::debug!(job = %job.id, %rid, error = %e, "cannot decline a steal request");
    }
}

/// Steal requests answered at one safe point: the task gets back to work
/// after a few, however many thieves keep asking.
const SERVED_PER_SAFE_POINT: usize = 2;

/// The requests worth answering now, newest first, at most `limit`. Requests
/// older than a thief's patience are dropped unread: their thieves have
/// withdrawn them (answering would cost a write each and could keep a busy
/// victim from ever computing again).
fn fresh_requests(jobs: &Jobs, job: &ActiveJob, limit: usize) -> Vec<String> {
    let mut queue = locked(&job.requests);
    queue.retain(|(_, at)| at.elapsed() < jobs.config.steal_wait);
    let keep = queue.len().saturating_sub(limit);
    queue.drain(keep..).rev().map(|(rid, _)| rid).collect()
}

/// Declines what is queued for this worker once it runs nothing of `job`, so
/// thieves need not wait out their patience.
pub(super) async fn decline_queued(jobs: &Jobs, job: &ActiveJob, space: &mut Space) {
    if !locked(&job.running).is_empty() {
        return;
    }
    for rid in fresh_requests(jobs, job, usize::MAX) {
        decline(space, job, &jobs.me, &rid).await;
    }
}

/// At a safe point of `task`: answers a few of the steal requests queued for
/// this worker, dividing the task for each while it can.
pub(super) async fn serve(
    jobs: &Jobs,
    job: &ActiveJob,
    space: &mut Space,
    task: &mut Claimed,
    state: &mut AnyState,
) -> Result<()> {
    for rid in fresh_requests(jobs, job, SERVED_PER_SAFE_POINT) {
        let Some(request) = take_request(space, job, &jobs.me, &rid).await? else {
            continue; // withdrawn meanwhile
        };
        let engine = &job.job;
        let grant = match engine.divide(state) {
            None => Grant::Declined,
            Some(part) => {
                let credit = task.record.credit.split();
                let part = Part {
                    tid: rid.clone(),
                    state: engine.checkpoint(&part)?,
                    credit,
                    holder: request.thief,
                };
                // Both halves are saved before the new one is published: the
                // part rides in this task's checkpoint until it exists.
                task.record.state = engine.checkpoint(state)?;
                task.record.parts.push(part.clone());
                write_task(space, job, &task.record, task.token()).await?;
                ensure_part(space, job, part).await?;
                task.record.parts.clear();
                job.count(|s| s.divides += 1);
                Grant::Task(rid.clone())
            }
        };
        answer(space, job, &rid, &grant).await?;
    }
    Ok(())
}

/// Makes sure a divided-off part exists as `task/TID`, unless it already ran
/// to completion.
pub(super) async fn ensure_part(space: &mut Space, job: &ActiveJob, part: Part) -> Result<()> {
    let path = format!("{}/task/{}", job.ns, part.tid);
    // A part's task is removed only after its result is written, so checking
    // the task first and the result second never misses a finished part.
    if exists(space, &path).await?
        || exists(space, &format!("{}/result/{}", job.ns, part.tid)).await?
    {
        return Ok(());
    }
    let record = TaskRecord {
        tid: part.tid,
        state: part.state,
        credit: part.credit,
        holder: Some(part.holder),
        claims: 0,
        parts: Vec::new(),
    };
    let options = PutOptions {
        meta: holder_meta(&record),
        if_version: Some(0),
        ..PutOptions::default()
    };
    match space.put_bytes(&path, &options, &encode(&record)).await {
        Ok(_) | Err(SpaceError::VersionConflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A task's holder as metadata, so a scan for abandoned tasks needs only a
/// listing.
pub(super) fn holder_meta(record: &TaskRecord) -> Metadata {
    record
        .holder
        .iter()
        .map(|h| ("holder".to_owned(), MetaValue::Str(h.clone())))
        .collect()
}
