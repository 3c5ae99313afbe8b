//! Running a job in this one process, without the space: the reference a
//! cluster run is compared with (`p3ctl job local`) and the baseline of the
//! speedup benchmarks. Objects the job writes are kept in memory.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::{
    job::{Args, Io, JobError, Result, Step},
    registry::Registry,
};

/// [`Io`] over a map in memory.
#[derive(Debug, Default)]
pub struct MemoryIo {
    objects: HashMap<String, Vec<u8>>,
}

impl Io for MemoryIo {
    fn get(&mut self, name: &str) -> Result<Vec<u8>> {
        self.objects
            .get(name)
            .cloned()
            .ok_or_else(|| JobError::Failed(format!("object data/{name} does not exist")))
    }

    fn put(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.objects.insert(name.to_owned(), value.to_vec());
        Ok(())
    }
}

/// What a local run produced.
#[derive(Debug)]
pub struct LocalRun {
    /// The job's result, as `reduce` made it.
    pub result: serde_json::Value,
    /// Time spent after `main`: restarting and computing the tasks.
    pub elapsed: Duration,
    /// Time `main` took.
    pub setup: Duration,
    /// How many tasks ran (1 unless `divide_every` split the work).
    pub tasks: usize,
}

/// Runs job `kind` to completion in this process. With `divide_every = Some(k)`
/// the running task is divided after every k-th slice and the parts queued, so
/// `divide`, `checkpoint`/`resume`, `restart` and `reduce` are exercised
/// exactly as a cluster would, in a deterministic order.
pub fn run_local(
    registry: &Registry,
    kind: &str,
    args: &Args,
    divide_every: Option<usize>,
) -> Result<LocalRun> {
    let job = registry.instantiate(kind, args)?;
    let mut io = MemoryIo::default();
    let started = Instant::now();
    let root = job.main(&mut io)?;
    let setup = started.elapsed();
    let started = Instant::now();
    let mut queue = VecDeque::from([root]);
    let mut outputs = Vec::new();
    let mut tasks = 0;
    while let Some(mut state) = queue.pop_front() {
        tasks += 1;
        job.restart(&mut io, &mut state)?;
        let mut slices = 0;
        loop {
            if let Step::Done(output) = job.compute(&mut io, &mut state)? {
                outputs.push(output);
                break;
            }
            slices += 1;
            if divide_every.is_some_and(|k| slices % k.max(1) == 0) {
                if let Some(part) = job.divide(&mut state) {
                    // A divided-off part travels as its checkpoint bytes.
                    queue.push_back(job.resume(&job.checkpoint(&part)?)?);
                }
            }
        }
    }
    Ok(LocalRun {
        result: job.reduce(&outputs)?,
        elapsed: started.elapsed(),
        setup,
        tasks,
    })
}
