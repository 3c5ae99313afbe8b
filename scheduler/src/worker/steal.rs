//! Both sides of a steal: two volatile objects. The thief writes
//! `steal/VICTIM/RID` and waits for `grant/RID`; the victim hears of the
//! request through its watch, and at its next safe point takes it (so a thief
//! that gave up and a victim never both act on it), divides its task,
//! checkpoints both halves, and writes the new task `task/RID` for the thief
//! before the grant.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use p3_objectspace::{object::PutOptions, Local, SpaceError};

use super::{
    pacing,
    state::{locked, ActiveJob, Jobs},
    task::{self, claim, claim_part, Claimed, Source},
};
use crate::{
    control::now_ms,
    job::{JobError, Result},
    records::{decode, encode, random_id, Grant, Part, StealRequest},
    registry::AnyState,
};

fn volatile() -> PutOptions {
    PutOptions {
        volatile: true,
        ..PutOptions::default()
    }
}

/// Busy workers of `job` worth asking, with their weights: by load, and by
/// closeness (a peer 10 ms away counts half).
async fn victims(jobs: &Jobs, job: &ActiveJob) -> Result<Vec<(String, f64)>> {
    let now = now_ms();
    let fresh = jobs.fresh_ms();
    let candidates: Vec<(String, f64)> = locked(&job.workers)
        .iter()
        .filter(|(w, v)| **w != jobs.me && v.running > 0.0 && v.load > 0.0 && v.alive(now, fresh))
        .map(|(w, v)| (w.clone(), v.load))
        .collect();
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let rtts: HashMap<String, u64> = jobs
        .space
        .engine()
        .node()
        .peers()
        .await
        .map_err(SpaceError::from)?
        .into_iter()
        .filter_map(|p| Some((p.peer_id, p.rtt_us?)))
        .collect();
    Ok(candidates
        .into_iter()
        .map(|(w, load)| {
            let rtt_ms = rtts.get(&w).map_or(0.0, |&us| us as f64 / 1000.0);
            (w, load / (1.0 + rtt_ms / 10.0))
        })
        .collect())
}

/// Asks a busy worker, chosen at random weighted by load and closeness, for
/// part of its work; claims what it grants.
pub(super) async fn steal(jobs: &Jobs, job: &ActiveJob) -> Result<Option<Claimed>> {
    let victims = victims(jobs, job).await?;
    let Some(victim) = pacing::weighted(&victims, rand::random()) else {
        return Ok(None);
    };
    ask(jobs, job, victim.clone()).await
}

/// Asks `victim` for part of its work; claims what it grants.
pub(super) async fn ask(jobs: &Jobs, job: &ActiveJob, victim: String) -> Result<Option<Claimed>> {
    let space = &jobs.space;
    let asked = Instant::now();
    let rid = random_id();
    let request = job.paths.steal(&victim, &rid);
    let asking = StealRequest {
        thief: jobs.me.clone(),
    };
    space
        .put_bytes(&request, &volatile(), &encode(&asking))
        .await?;
    let grant_path = job.paths.grant(&rid);
    let requested = asked.elapsed();
    // A job that ends meanwhile has nothing left to grant (its credit came
    // back whole): the slot stops waiting and is free for the next job.
    let over = |space: &Local| {
        let (space, request) = (space.clone(), request.clone());
        tokio::spawn(async move { space.remove(&request, None, None).await });
        tracing::debug!(job = %job.id, %victim, waited = ?asked.elapsed(), "job over while stealing");
        Ok(None)
    };
    let Some(grant) =
        until_over(job, await_grant(space, &grant_path, jobs.config.steal_wait)).await
    else {
        return over(space);
    };
    let mut grant = grant?;
    tracing::debug!(job = %job.id, %victim, ?requested, answered = ?asked.elapsed(), "steal answered");
    if grant.is_none() {
        // Withdraw; if the victim took the request first, its answer is coming.
        match space.take(&request, None).await {
            Ok(_) => return Ok(None),
            Err(SpaceError::NotFound(_)) => {
                let wait = await_grant(space, &grant_path, jobs.config.steal_wait * 2);
                let Some(late) = until_over(job, wait).await else {
                    return over(space);
                };
                grant = late?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    match grant {
        Some(Grant::Part(part)) => Ok(Some(Claimed {
            asked: Some(asked),
            ..claim_part(jobs, job, part)
        })),
        Some(Grant::Task(tid)) => {
            Ok(claim(jobs, job, &tid, Source::Stolen)
                .await?
                .claimed()
                .map(|claimed| Claimed {
                    asked: Some(asked),
                    ..claimed
                }))
        }
        // Declined, or the victim died before answering: a task it made for us
        // later is ours anyway (we are its holder) and the scan finds it.
        Some(Grant::Declined) | None => Ok(None),
    }
}

/// `wait`'s outcome, or `None` if `job` ends first.
async fn until_over<T>(job: &ActiveJob, wait: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::select! {
        outcome = wait => Some(outcome),
        () = job.ended.wait() => None,
    }
}

async fn await_grant(
    space: &Local,
    path: &str,
    wait: std::time::Duration,
) -> Result<Option<Grant>> {
    let bytes = match space.get_waiting(path, None, wait).await {
        Ok((_, bytes)) => bytes,
        Err(SpaceError::NotFound(_) | SpaceError::TimedOut(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // Read once: its removal is tidying, not on the way to work.
    let (space, path) = (space.clone(), path.to_owned());
    tokio::spawn(async move { space.remove(&path, None, None).await });
    Ok(Some(decode(&bytes, "grant")?))
}

/// Takes the steal request `rid` addressed to this worker; `None` if the thief
/// withdrew it.
async fn take_request(jobs: &Jobs, job: &ActiveJob, rid: &str) -> Result<Option<StealRequest>> {
    match jobs.space.take(&job.paths.steal(&jobs.me, rid), None).await {
        Ok((_, bytes)) => Ok(Some(decode(&bytes, "steal request")?)),
        Err(SpaceError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn answer(jobs: &Jobs, job: &ActiveJob, rid: &str, grant: &Grant) -> Result<()> {
    jobs.space
        .put_bytes(&job.paths.grant(rid), &volatile(), &encode(grant))
        .await?;
    Ok(())
}

/// Declines request `rid` (this worker has nothing of the job running).
pub(super) async fn decline(jobs: &Jobs, job: &ActiveJob, rid: &str) {
    let declined = async {
        if take_request(jobs, job, rid).await?.is_some() {
            answer(jobs, job, rid, &Grant::Declined).await?;
        }
        Ok::<_, JobError>(())
    };
    if let Err(e) = declined.await {
        tracing::debug!(job = %job.id, %rid, error = %e, "cannot decline a steal request");
    }
}

/// The requests worth answering now, newest first, at most `limit`. Requests
/// older than a thief's patience are dropped unread: their thieves have
/// withdrawn them.
fn fresh_requests(jobs: &Jobs, job: &ActiveJob, limit: usize) -> Vec<String> {
    let mut queue = locked(&job.requests);
    queue.retain(|(_, at)| at.elapsed() < jobs.config.steal_wait);
    let keep = queue.len().saturating_sub(limit);
    queue.drain(keep..).rev().map(|(rid, _)| rid).collect()
}

/// Declines what is queued for this worker once it runs nothing of `job`, so
/// thieves need not wait out their patience.
pub(super) fn decline_queued(jobs: &Arc<Jobs>, job: &Arc<ActiveJob>) {
    if !job.busy() {
        decline_behind(jobs, job, fresh_requests(jobs, job, usize::MAX));
    }
}

/// Declines `rids` on a task of their own: whoever declines goes on with
/// its work (or to the next job) meanwhile.
fn decline_behind(jobs: &Arc<Jobs>, job: &Arc<ActiveJob>, rids: Vec<String>) {
    if rids.is_empty() {
        return;
    }
    let (jobs, job) = (jobs.clone(), job.clone());
    tokio::spawn(async move {
        futures::future::join_all(rids.iter().map(|rid| decline(&jobs, &job, rid))).await;
    });
}

/// Steal requests answered at one safe point: enough for every worker of a
/// large cluster at once, few enough that the task gets back to work.
const SERVED_PER_SAFE_POINT: usize = 32;
/// How long a task that just started waits for the steal requests of idle
/// workers, so that it splits once for all of them instead of once per slice.
const GATHER: Duration = Duration::from_millis(100);
/// Requests come in a burst: once as many arrived as workers are known to
/// be idle, the gathering ends when none came for this long, unless every
/// peer is known as a worker (else workers that began the job moments ago
/// may be missing from the view).
const QUIET: Duration = Duration::from_millis(25);

/// At the root task's first safe point: while other workers of the job are
/// idle, waits up to [`GATHER`] for their requests (they ask as soon as this
/// worker's heartbeat shows it busy), to split once for all of them.
pub(super) async fn gather(jobs: &Jobs, job: &ActiveJob) {
    // Workers that began the job moments ago may not be in the view yet
    // (the watch adds them too, while this waits).
    job.refresh_workers(&jobs.space).await;
    let peers = match jobs.space.engine().everyone().await {
        Ok(peers) => peers.len(),
        Err(_) => usize::MAX,
    };
    let fresh = jobs.fresh_ms();
    let deadline = tokio::time::Instant::now() + GATHER;
    loop {
        let asked = job.asked.notified();
        let idle = job.idle_workers(&jobs.me, fresh);
        let complete = job.other_workers(&jobs.me, fresh) >= peers;
        let (queued, last) = {
            let requests = locked(&job.requests);
            (requests.len(), requests.iter().map(|(_, at)| *at).max())
        };
        if idle == 0 && queued == 0 {
            return; // no other worker
        }
        if complete && queued >= idle {
            return;
        }
        let wake = match last {
            Some(last) if queued >= idle => {
                let quiet_until = tokio::time::Instant::from_std(last + QUIET);
                if quiet_until <= tokio::time::Instant::now() {
                    return;
                }
                quiet_until.min(deadline)
            }
            _ => deadline,
        };
        if tokio::time::timeout_at(wake, asked).await.is_err()
            && tokio::time::Instant::now() >= deadline
        {
            return;
        }
    }
}

/// Whether requests wait for this worker's answer.
pub(super) fn asked(job: &ActiveJob) -> bool {
    !locked(&job.requests).is_empty()
}

/// A part larger than this travels as `task/TID`, written before its grant;
/// a smaller one travels inside its (volatile) grant.
const INLINE_PART: usize = 32 << 10;

/// At a safe point of `task`: answers a few of the steal requests queued for
/// this worker, dividing the task for each while it can. The parts are saved
/// inside this task's checkpoint before any is granted, and stay listed there
/// until their `task/TID` exists ([`task::ensure_parts`]), so a crash of either
/// side loses neither work nor credit.
pub(super) async fn serve(
    jobs: &Arc<Jobs>,
    job: &Arc<ActiveJob>,
    task: &mut Claimed,
    state: &mut AnyState,
) -> Result<()> {
    let engine = &job.job;
    if !engine.divisible(state)? {
        // Nothing to hand out: the task goes on while its thieves hear so.
        decline_behind(jobs, job, fresh_requests(jobs, job, usize::MAX));
        return Ok(());
    }
    let mut thieves = Vec::new();
    let started = Instant::now();
    let taken = futures::future::join_all(
        fresh_requests(jobs, job, SERVED_PER_SAFE_POINT)
            .into_iter()
            .map(|rid| async move { (take_request(jobs, job, &rid).await, rid) }),
    )
    .await;
    for (request, rid) in taken {
        // `None`: withdrawn meanwhile.
        if let Some(request) = request? {
            thieves.push((rid, request.thief));
        }
    }
    let taking = started.elapsed();
    let mut parts = engine.split(state, thieves.len()).into_iter();
    let mut answers = Vec::new();
    let mut large = Vec::new();
    for (rid, thief) in thieves {
        let Some(part) = parts.next() else {
            answers.push((rid, Grant::Declined));
            continue;
        };
        let part = Part {
            tid: rid.clone(),
            state: engine.checkpoint(&part)?,
            credit: task.record.credit.split(),
            holder: thief,
        };
        if part.state.len() > INLINE_PART {
            large.push(part.clone());
            answers.push((rid.clone(), Grant::Task(rid)));
        } else {
            answers.push((rid, Grant::Part(part.clone())));
        }
        task.record.parts.push(part);
    }
    let divided = answers
        .iter()
        .filter(|(_, g)| !matches!(g, Grant::Declined))
        .count();
    if divided > 0 {
        task.record.state = engine.checkpoint(state)?;
        let token = task.token().await?;
        task::write(&jobs.space, &job.paths, &task.record, token).await?;
        job.count(|s| s.divides += divided as u64);
        let paths = &job.paths;
        futures::future::try_join_all(
            large
                .iter()
                .map(|part| task::create_part(&jobs.space, paths, part.clone())),
        )
        .await?;
        task.record
            .parts
            .retain(|p| !large.iter().any(|l| l.tid == p.tid));
    }
    futures::future::try_join_all(
        answers
            .iter()
            .map(|(rid, grant)| answer(jobs, job, rid, grant)),
    )
    .await?;
    let took = started.elapsed();
    job.count(|s| s.serve_ms += took.as_millis() as u64);
    tracing::debug!(
        job = %job.id,
        thieves = answers.len(),
        taking_requests = ?taking,
        ?took,
        "answered steal requests"
    );
    Ok(())
}
