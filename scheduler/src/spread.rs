//! Spreading a new job over the workers there are. The submitter divides the
//! root into one part per worker slot it knows of (the `p3.workers`
//! registry) and lists the parts, each naming its worker, in the job's
//! record: every worker claims its own part the moment it reads the record,
//! instead of waiting for a steal from whichever worker won the root (a lock
//! race, a gathering of requests, a checkpoint and a grant: 0.1–0.25 s on a
//! busy cluster, for every job). Parts small enough to ride in the record
//! are first written as `task/TID` by the worker that runs them; larger
//! ones are written by the submitter before the record.
//!
//! Nothing here is needed for correctness: a part whose worker is gone or
//! busy is picked up by any idle worker (see the worker's scan), and a job
//! that cannot be spread (no registry, one slot, a root that does not divide)
//! is published as one root task, as before.

use p3_objectspace::{
    object::{MetaValue, PutOptions, Stat},
    SpaceError,
};
use rand::Rng;

use crate::{
    job::Result,
    objects::Objects,
    records::{
        last_part, random_id, Assigned, Credit, TaskRecord, KINDS_META, SLOTS_META,
        WORKERS_NAMESPACE,
    },
    registry::{AnyState, DynJob},
};

/// How a new job's root is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Divided among the worker slots listed in `p3.workers`, when it
    /// divides and there are two or more (the default).
    OverWorkers,
    /// As one task, which the first idle worker claims and the others steal
    /// from (`p3ctl job run --no-spread`: to measure stealing).
    Whole,
}

/// Parts a root is divided into at most, whatever the slots: more workers
/// get theirs by stealing.
pub const MAX_PARTS: usize = 64;

/// The slots of the workers known now that run `kind`: each worker once per
/// slot (at most [`MAX_PARTS`] in all), in an order rotated at random so that
/// the workers left out when a root divides into fewer parts differ from job
/// to job.
/// Empty if the registry cannot be read (the job is then published whole).
pub async fn live_slots(space: &mut impl Objects, kind: &str) -> Vec<String> {
    let listed = match space.list(WORKERS_NAMESPACE, "").await {
        Ok(listed) => listed,
        Err(SpaceError::NoSuchNamespace(_)) => return Vec::new(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot list the workers; publishing the root whole");
            return Vec::new();
        }
    };
    let runs_kind = |stat: &&Stat| match stat.meta.get(KINDS_META) {
        Some(MetaValue::Str(kinds)) => kinds.split(',').any(|k| k == kind),
        _ => false,
    };
    let mut workers: Vec<(String, usize)> = listed
        .iter()
        .filter(runs_kind)
        .map(|stat| {
            let slots = match stat.meta.get(SLOTS_META) {
                Some(MetaValue::Num(n)) if *n >= 1.0 => *n as usize,
                _ => 1,
            };
            (last_part(&stat.path).to_owned(), slots.min(MAX_PARTS))
        })
        .collect();
    workers.sort();
    let mut slots: Vec<String> = Vec::new();
    // One slot of every worker first, then the second ones...: with more
    // slots than parts, parts go to different nodes.
    let most = workers.iter().map(|(_, n)| *n).max().unwrap_or(0);
    for round in 0..most {
        for (worker, n) in &workers {
            if round < *n {
                slots.push(worker.clone());
            }
        }
    }
    if !slots.is_empty() {
        let turn = rand::thread_rng().gen_range(0..workers.len().max(1));
        let first_round = workers.len().min(slots.len());
        slots[..first_round].rotate_left(turn);
    }
    slots.truncate(MAX_PARTS);
    slots
}

/// Divides `root` into at most one part per entry of `slots` (fewer if it
/// stops dividing) and returns the task record of each part, holder set to
/// its slot's worker, with the credit split among them. Fewer than two
/// slots, or a root that does not divide: nothing, and `root` as it was (it
/// is published whole).
pub fn divide(
    engine: &dyn DynJob,
    root: &mut AnyState,
    slots: &[String],
) -> Result<Vec<TaskRecord>> {
    if slots.len() < 2 {
        return Ok(Vec::new());
    }
    let parts = engine.split(root, slots.len() - 1);
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let mut credit = Credit::ALL;
    let mut records = Vec::with_capacity(parts.len() + 1);
    for (state, worker) in parts.iter().zip(slots.iter().skip(1)) {
        records.push(record(engine.checkpoint(state)?, credit.split(), worker));
    }
    records.insert(0, record(engine.checkpoint(root)?, credit, &slots[0]));
    Ok(records)
}

fn record(state: Vec<u8>, credit: Credit, worker: &str) -> TaskRecord {
    TaskRecord {
        tid: random_id(),
        state,
        credit,
        holder: Some(worker.to_owned()),
        claims: 0,
        parts: Vec::new(),
    }
}

/// Parts' states travel in the job's record (read by every worker) up to
/// this many bytes in all.
const INLINE_STATES: usize = 32 << 10;

/// The record's list of parts: which worker is to claim which task (with the
/// states, if they are small).
pub fn assigned(records: &[TaskRecord]) -> Vec<Assigned> {
    let inline = records.iter().map(|r| r.state.len()).sum::<usize>() <= INLINE_STATES;
    records
        .iter()
        .map(|r| Assigned {
            tid: r.tid.clone(),
            worker: r.holder.clone().unwrap_or_default(),
            credit: r.credit,
            state: inline.then(|| r.state.clone()),
        })
        .collect()
}

/// A part as its task record when submitted, if its state rides in the job's
/// record: such a part's `task/TID` is first written by a worker that runs it.
pub fn submitted(part: &Assigned) -> Option<TaskRecord> {
    Some(TaskRecord {
        tid: part.tid.clone(),
        state: part.state.clone()?,
        credit: part.credit,
        holder: Some(part.worker.clone()),
        claims: 0,
        parts: Vec::new(),
    })
}

/// The parts riding in a job's record that no worker has written as a task
/// yet (`written` is the listing of `task/`): until one does, the record is
/// all there is of them.
pub fn unwritten<'a>(
    parts: &'a [Assigned],
    written: &'a [Stat],
) -> impl Iterator<Item = &'a Assigned> + 'a {
    parts.iter().filter(move |part| {
        part.state.is_some() && !written.iter().any(|s| last_part(&s.path) == part.tid)
    })
}

/// How a part is written: created once (`if_version` 0), its holder in the
/// metadata like every task's.
pub fn options(record: &TaskRecord) -> PutOptions {
    PutOptions {
        meta: record.meta(),
        if_version: Some(0),
        ..PutOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        job::Args,
        records::{decode, Ledger},
    };

    fn sleep() -> std::sync::Arc<dyn DynJob> {
        let args = Args::from_pairs(["total=16s", "slice=100ms"]).unwrap();
        crate::jobs::builtin().instantiate("sleep", &args).unwrap()
    }

    #[test]
    fn a_root_spreads_into_equal_parts_whose_credit_adds_up_to_all() {
        let engine = sleep();
        let mut root = engine.main(&mut crate::local::MemoryIo::default()).unwrap();
        let slots: Vec<String> = (0..16).map(|i| format!("w{i}")).collect();
        let records = divide(engine.as_ref(), &mut root, &slots).unwrap();
        assert_eq!(records.len(), 16);
        let mut ledger = Ledger::default();
        for (record, slot) in records.iter().zip(&slots) {
            assert_eq!(record.holder.as_deref(), Some(slot.as_str()));
            let state = engine.resume(&record.state).unwrap();
            assert_eq!(engine.load(&state), 10.0, "160 slices in 16 equal parts");
            ledger.add(record.credit);
        }
        assert!(ledger.is_whole());
        let listed = assigned(&records);
        assert_eq!(listed.len(), 16);
        assert!(listed
            .iter()
            .zip(&records)
            .all(|(a, r)| a.tid == r.tid && a.state.as_ref() == Some(&r.state)));
        let _: TaskRecord = decode(&crate::records::encode(&records[3]), "task").unwrap();
    }

    #[test]
    fn a_riding_part_is_unwritten_until_its_task_is_listed() {
        let engine = sleep();
        let mut root = engine.main(&mut crate::local::MemoryIo::default()).unwrap();
        let slots: Vec<String> = (0..3).map(|i| format!("w{i}")).collect();
        let parts = assigned(&divide(engine.as_ref(), &mut root, &slots).unwrap());
        let listed = |tid: &str| Stat {
            path: format!("p3.job.x/task/{tid}"),
            version: 1,
            ..Stat::default()
        };
        let written = vec![listed(&parts[1].tid)];
        let left: Vec<_> = unwritten(&parts, &written).map(|p| &p.tid).collect();
        assert_eq!(left, [&parts[0].tid, &parts[2].tid]);
        let task = submitted(&parts[0]).unwrap();
        assert_eq!((task.claims, task.holder.as_deref()), (0, Some("w0")));
        let mut large = parts[2].clone();
        large.state = None;
        assert!(submitted(&large).is_none(), "written by the submitter");
        let written_apart = [large];
        assert_eq!(unwritten(&written_apart, &[]).count(), 0);
    }

    #[test]
    fn one_slot_or_an_indivisible_root_publishes_the_root_whole() {
        let engine = sleep();
        let one = vec!["w0".to_owned()];
        let mut root = engine.main(&mut crate::local::MemoryIo::default()).unwrap();
        assert!(divide(engine.as_ref(), &mut root, &one).unwrap().is_empty());
        assert_eq!(engine.load(&root), 160.0, "left whole");
        let args = Args::from_pairs(["total=100ms", "slice=100ms"]).unwrap();
        let single = crate::jobs::builtin().instantiate("sleep", &args).unwrap();
        let mut root = single.main(&mut crate::local::MemoryIo::default()).unwrap();
        let slots = vec!["w0".to_owned(), "w1".to_owned()];
        assert!(divide(single.as_ref(), &mut root, &slots)
            .unwrap()
            .is_empty());
    }
}
