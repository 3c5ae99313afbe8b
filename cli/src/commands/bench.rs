//! `p3ctl bench put|get`: load the running node the way `rados bench` does and
//! report throughput and latency.
//!
//! C connections ("lanes") share one budget of N operations; each lane runs its
//! operations one after another, so C is the number in flight. Every object the
//! run writes lives under a fresh `bench-<hex>/` prefix, so runs never collide
//! with each other or with real data, and is removed at the end, failed run or
//! not.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context, Result};
use futures::future::join_all;
use p3_objectspace::{api::Space, lock::LockMode, object::PutOptions, Namespace, SpaceError};
use rand::RngCore;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{
    args::{BenchArgs, BenchOp, NodeOpts},
    config::DataDir,
    output,
};

/// Objects `bench get` reads from: enough to spread over owners, few enough to
/// write quickly before timing starts.
const GET_OBJECTS: u64 = 64;

/// What every lane needs to know about the run.
struct Plan {
    op: BenchOp,
    namespace: String,
    prefix: String,
    size: u64,
    count: u64,
    /// Random bytes each value is made from; each value starts with its own
    /// operation number so that no two share a blob (blobs are deduplicated,
    /// which would flatter the numbers).
    base: Vec<u8>,
    /// Objects `bench get` reads, written before timing starts.
    targets: Vec<String>,
    /// Distinct locks `bench lock` uses.
    locks: u64,
    /// Next operation number to hand out.
    next: AtomicU64,
    /// The first failure; once set, lanes stop taking operations.
    failure: Mutex<Option<anyhow::Error>>,
}

impl Plan {
    fn path(&self, i: u64) -> String {
        format!("{}/{}/{i}", self.namespace, self.prefix)
    }

    /// The value of operation `i`, streamed from `base` without a copy.
    fn value(&self, i: u64) -> impl AsyncRead + Unpin + '_ {
        let n = 8.min(self.base.len());
        let stamp = i.to_le_bytes()[..n].to_vec();
        std::io::Cursor::new(stamp).chain(&self.base[n..])
    }

    async fn write(&self, space: &mut Space, path: &str, i: u64) -> Result<(), SpaceError> {
        space
            .put(
                path,
                &PutOptions::default(),
                Some(self.size),
                self.value(i),
                |_| {},
            )
            .await
            .map(drop)
    }

    async fn read(&self, space: &mut Space, path: &str) -> Result<()> {
        let stat = space.get(path, tokio::io::sink(), |_, _| {}).await?;
        if stat.size != self.size {
            return Err(anyhow!("read {} bytes, expected {}", stat.size, self.size));
        }
        Ok(())
    }

    /// One acquire and release. A held lock takes over the conversation it
    /// was granted in, so each is asked for in a new channel of the lane's
    /// connection, as a client that takes many locks would.
    async fn lock_once(&self, space: &Space, path: &str) -> Result<()> {
        let held = space
            .channel()
            .await?
            .lock(path, LockMode::Write, Duration::from_secs(10), None)
            .await?;
        held.release().await?;
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.failure.lock().map_or(true, |f| f.is_some())
    }

    fn fail(&self, error: anyhow::Error) {
        if let Ok(mut first) = self.failure.lock() {
            first.get_or_insert(error);
        }
    }
}

/// What one lane did: its latencies, and the paths it tried to write (a failed
/// write may still have landed, so those are cleaned up too).
#[derive(Default)]
struct Lane {
    latencies: Vec<Duration>,
    written: Vec<String>,
}

/// Lane `index` running operations until the plan's budget is spent.
async fn lane(mut space: Space, plan: Arc<Plan>, index: u64) -> Lane {
    let mut done = Lane::default();
    while !plan.stopped() {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.count {
            break;
        }
        let started = Instant::now();
        let (path, result) = match plan.op {
            BenchOp::Put => {
                let path = plan.path(i);
                done.written.push(path.clone());
                let result = plan
                    .write(&mut space, &path, i)
                    .await
                    .map_err(anyhow::Error::from);
                (path, result)
            }
            BenchOp::Get => {
                let path = &plan.targets[(i % plan.targets.len() as u64) as usize];
                (path.clone(), plan.read(&mut space, path).await)
            }
            BenchOp::Take => {
                let path = &plan.targets[i as usize];
                let taken = space.take(path, None, tokio::io::sink(), |_, _| {}).await;
                (path.clone(), taken.map(drop).map_err(anyhow::Error::from))
            }
            BenchOp::Lock => {
                let path = plan.path(index % plan.locks);
                (path.clone(), plan.lock_once(&space, &path).await)
            }
        };
        match result {
            Ok(()) => done.latencies.push(started.elapsed()),
            Err(e) => plan.fail(e.context(format!("bench {} of {path} failed", op_name(plan.op)))),
        }
    }
    done
}

fn op_name(op: BenchOp) -> &'static str {
    match op {
        BenchOp::Put => "put",
        BenchOp::Get => "get",
        BenchOp::Lock => "lock",
        BenchOp::Take => "take",
    }
}

/// `p3ctl bench put|get`.
pub async fn run(opts: &NodeOpts, args: &BenchArgs) -> Result<()> {
    Namespace::new(&args.namespace)?;
    let dir = DataDir::resolve(opts.data_dir.clone())?;
    let mut lanes = Vec::new();
    for _ in 0..args.concurrency {
        lanes.push(Space::connect(dir.root()).await?);
    }
    match lanes[0].create_namespace(&args.namespace).await {
        Ok(()) | Err(SpaceError::NamespaceExists(_)) => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create namespace {}", args.namespace))
        }
    }
    // A lock moves no value: its report counts operations, not bytes.
    let moved = match args.op {
        BenchOp::Lock => 0,
        BenchOp::Put | BenchOp::Get | BenchOp::Take => args.size,
    };
    let size = usize::try_from(moved).context("--size is too large for this machine")?;
    let mut base = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut base);
    let mut plan = Plan {
        op: args.op,
        namespace: args.namespace.clone(),
        prefix: format!("bench-{:016x}", rand::random::<u64>()),
        size: moved,
        count: args.count,
        base,
        targets: Vec::new(),
        locks: args.locks,
        next: AtomicU64::new(0),
        failure: Mutex::new(None),
    };

    let prepared = match args.op {
        BenchOp::Get => args.count.min(GET_OBJECTS),
        BenchOp::Take => args.count,
        BenchOp::Put | BenchOp::Lock => 0,
    };
    if prepared > 0 {
        // Untimed: the objects the gets read or the takes take.
        for i in 0..prepared {
            let path = plan.path(i);
            plan.targets.push(path.clone());
            if let Err(e) = plan.write(&mut lanes[0], &path, i).await {
                let e = anyhow::Error::new(e).context(format!("cannot write {path} for bench get"));
                cleanup(&dir, args.concurrency, plan.targets).await;
                return Err(e);
            }
        }
    }

    let plan = Arc::new(plan);
    let started = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .zip(0..)
        .map(|(space, index)| tokio::spawn(lane(space, plan.clone(), index)))
        .collect();
    let mut latencies = Vec::new();
    let mut written = plan.targets.clone();
    for result in join_all(tasks).await {
        match result {
            Ok(done) => {
                latencies.extend(done.latencies);
                written.extend(done.written);
            }
            Err(e) => plan.fail(anyhow!("a bench lane crashed: {e}")),
        }
    }
    let elapsed = started.elapsed();

    let cleanup_failures = cleanup(&dir, args.concurrency, written).await;
    if let Some(e) = plan.failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    let report = Report::new(
        &plan,
        args.concurrency,
        elapsed,
        latencies,
        cleanup_failures,
    );
    if opts.json {
        output::json(&report)
    } else {
        report.print();
        Ok(())
    }
}

/// Removes `paths` over fresh connections (a lane's may be broken by the error
/// that ended the run). Returns how many could not be removed; each is also told
/// on stderr as one warning line so a failed cleanup does not go unnoticed.
async fn cleanup(dir: &DataDir, concurrency: u64, paths: Vec<String>) -> usize {
    if paths.is_empty() {
        return 0;
    }
    let lanes = (concurrency as usize).min(paths.len());
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); lanes];
    for (i, path) in paths.into_iter().enumerate() {
        shares[i % lanes].push(path);
    }
    let total: usize = shares.iter().map(Vec::len).sum();
    let failures: usize = join_all(shares.into_iter().map(|share| async move {
        let Ok(mut space) = Space::connect(dir.root()).await else {
            return share.len();
        };
        let mut failed = 0;
        for path in &share {
            match space.remove(path, None).await {
                Ok(_) | Err(SpaceError::NotFound(_)) => {}
                Err(_) => failed += 1,
            }
        }
        failed
    }))
    .await
    .into_iter()
    .sum();
    if failures > 0 {
        eprintln!("p3ctl: warning: could not remove {failures} of {total} bench objects");
    }
    failures
}

/// The result of a run, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    op: &'static str,
    namespace: String,
    prefix: String,
    size: u64,
    count: u64,
    concurrency: u64,
    elapsed_secs: f64,
    ops_per_sec: f64,
    /// Decimal megabytes (10^6 bytes) per second, as `rados bench` reports.
    mb_per_sec: f64,
    latency_ms: Latency,
    cleanup_failures: usize,
}

/// Latency of single operations, in milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Report {
    fn new(
        plan: &Plan,
        concurrency: u64,
        elapsed: Duration,
        mut latencies: Vec<Duration>,
        cleanup_failures: usize,
    ) -> Self {
        latencies.sort_unstable();
        let ops = latencies.len() as f64;
        let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let total: Duration = latencies.iter().sum();
        Self {
            op: op_name(plan.op),
            namespace: plan.namespace.clone(),
            prefix: plan.prefix.clone(),
            size: plan.size,
            count: latencies.len() as u64,
            concurrency,
            elapsed_secs: elapsed.as_secs_f64(),
            ops_per_sec: ops / secs,
            mb_per_sec: ops * plan.size as f64 / 1e6 / secs,
            latency_ms: Latency {
                p50: ms(percentile(&latencies, 50.0)),
                p99: ms(percentile(&latencies, 99.0)),
                max: ms(latencies.last().copied().unwrap_or_default()),
                mean: if latencies.is_empty() {
                    0.0
                } else {
                    ms(total) / ops
                },
            },
            cleanup_failures,
        }
    }

    fn print(&self) {
        let of = match self.size {
            0 => String::new(),
            size => format!(" of {size} bytes"),
        };
        println!(
            "bench {}: {} ops{of} over {} connections in {:.3} s",
            self.op, self.count, self.concurrency, self.elapsed_secs
        );
        println!("ops/s:    {:.1}", self.ops_per_sec);
        if self.size > 0 {
            println!("MB/s:     {:.2}", self.mb_per_sec);
        }
        let l = &self.latency_ms;
        println!(
            "latency:  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  mean {:.2} ms",
            l.p50, l.p99, l.max, l.mean
        );
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample with at
/// least `p`% of samples at or below it (so p99 of 100 samples is the 99th,
/// not an interpolation that no operation actually took).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        values.into_iter().map(Duration::from_millis).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples = ms(1..=100);
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&ms([7]), 99.0), Duration::from_millis(7));
        assert_eq!(percentile(&ms([1, 2]), 50.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    fn plan(size: usize) -> Plan {
        Plan {
            op: BenchOp::Put,
            namespace: "bench".into(),
            prefix: "bench-00".into(),
            size: size as u64,
            count: 1,
            base: vec![9; size],
            targets: Vec::new(),
            locks: 1,
            next: AtomicU64::new(0),
            failure: Mutex::new(None),
        }
    }

    async fn value(plan: &Plan, i: u64) -> Vec<u8> {
        let mut out = Vec::new();
        plan.value(i).read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn values_are_size_bytes_and_differ_by_operation() {
        let big = plan(12);
        assert_eq!(big.path(3), "bench/bench-00/3");
        assert_eq!(value(&big, 1).await, [1, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9]);
        assert_ne!(value(&big, 1).await, value(&big, 2).await);
        assert_eq!(value(&plan(3), 258).await, [2, 1, 0]);
        assert!(value(&plan(0), 5).await.is_empty());
    }

    #[test]
    fn the_first_failure_wins() {
        let plan = plan(1);
        assert!(!plan.stopped());
        plan.fail(anyhow!("first"));
        plan.fail(anyhow!("second"));
        assert!(plan.stopped());
        assert_eq!(
            plan.failure.lock().unwrap().as_ref().unwrap().to_string(),
            "first"
        );
    }
}
