//! The parallel-job scheduler on real `p3ctl` node processes on 127.0.0.1.
//!
//! 1. **Efficiency**: the `sleep` job (no CPU in the job itself) on 16 nodes
//!    with one worker slot each, for slices of 10 ms, 100 ms and 1 s, `total` =
//!    16 × 10 s: the ideal makespan is 10 s. Efficiency = ideal ÷ measured
//!    makespan, the job's `elapsed_ms` (from the end of `main`, before the
//!    root is spread or published, to the last credit back); "busy" = workers that ran a slice; in_slices_s =
//!    the time all workers spent inside slices (above the total, the slices
//!    themselves ran long); steals, divides
//!    and restarts from `job status`. Jobs are spread over the workers at
//!    submission; a last run of 100 ms slices publishes the root whole
//!    (`--no-spread`), so every other worker steals: the steal latency
//!    (request written → the thief's first slice) and the steals a victim
//!    serves per second.
//! 2. **Speedup** of `matmul n=1024`, `nqueens n=15` and `sum to=1e10` on 1 and on 2 worker
//!    processes = `job local` elapsed (same code, one process, objects in
//!    memory) ÷ cluster elapsed, both without setup (`main`). Both layouts have
//!    3 nodes, so every node owns every object (R = 3): 1 worker = two
//!    `--no-worker` nodes + one `--slots 1`; 2 workers = one `--no-worker` + two
//!    `--slots 1`. Jobs go through node 0 (`--no-worker`) without `--wait`; that
//!    command's duration is the setup (connecting, `main` writing the inputs).
//!    Cluster results must equal local ones. Local and cluster runs
//!    alternate, three of each, and the medians are compared (the machine's
//!    speed varies by a third from minute to minute). A `2 local` row runs
//!    two whole `job local` at once: twice the work in the slower one's time
//!    is the speedup two workers could reach at best on this machine now.
//!
//! Run with `cargo bench --bench scheduler`; all nodes share this machine, so
//! other load skews the numbers (the load average is printed).
//! 3. **Latency**: an empty job's round trip (submit → result) and the demo's
//!    `matmul n=256`, on 4 nodes.
//!
//! `P3_BENCH_QUICK=1`: 4 sleep workers, 2 s ideal, `matmul n=256`, `nqueens
//! n=11`, `sum to=1e8`. `P3_BENCH_MATMUL=N`, `P3_BENCH_NQUEENS=N`,
//! `P3_BENCH_SUM=N`: other sizes for part 2. `P3_BENCH_WORKERS=N`: sleep
//! workers for part 1. `P3_BENCH_PART=1`, `2` or `3`: only that part. `P3_BENCH_KEEP=1`: keep the data
//! dirs and `node.log`s. A job that misses its deadline (12 × ideal for sleep)
//! is reported with its progress and cancelled; nodes die with the bench.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Deadline of the `p3ctl` commands that are not the wait for a job.
const CALL: Duration = Duration::from_secs(300);

/// Runs `cmd`, killing it after `deadline` (`None` then), failing the bench if
/// it fails; returns its stdout as JSON (`null` if not JSON) and how long it ran.
fn run(what: &str, mut cmd: Command, deadline: Duration) -> Option<(Value, Duration)> {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run p3ctl");
    let mut child = common::KillOnDrop(child);
    while child.0.try_wait().expect("cannot wait for p3ctl").is_none() {
        if start.elapsed() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    let (ok, out, err) = child.finish();
    assert!(ok, "{what} failed: {}", err.trim_end());
    Some((serde_json::from_slice(&out).unwrap_or(Value::Null), took))
}

/// `p3ctl ARGS --data-dir DIR`, which must succeed within [`CALL`].
fn call(dir: &Path, args: &[&str]) -> (Value, Duration) {
    let what = format!("p3ctl {}", args.join(" "));
    run(&what, common::p3ctl_command(dir, args), CALL)
        .unwrap_or_else(|| panic!("{what}: no answer in {CALL:?}"))
}

/// `--arg K=V` for each pair.
fn arg_list(args: &[String]) -> Vec<&str> {
    args.iter().flat_map(|a| ["--arg", a.as_str()]).collect()
}

/// One job run on a cluster, through the node of `dir`.
struct ClusterRun {
    /// `None` if the job missed its deadline.
    result: Option<Value>,
    setup: Duration,
    elapsed: Duration,
    status: Value,
}

impl ClusterRun {
    /// Steal latency (request written to the thief's first slice) p50 and
    /// p99 in ms over every worker's samples, and how many steals per second
    /// a victim serves (divides ÷ time spent answering requests).
    fn steal_figures(&self) -> String {
        let workers = self.status["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut latencies: Vec<u64> = workers
            .iter()
            .flat_map(|w| {
                w["stats"]["steal_latency_ms"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|v| v.as_u64())
            .collect();
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
                .map_or("-".to_string(), |v| v.to_string())
        };
        let sum = |k: &str| {
            workers
                .iter()
                .filter_map(|w| w["stats"][k].as_u64())
                .sum::<u64>()
        };
        let (divides, serve_ms) = (sum("divides"), sum("serve_ms"));
        let rate = if serve_ms > 0 {
            format!("{:.0}", divides as f64 * 1000.0 / serve_ms as f64)
        } else {
            "-".to_string()
        };
        format!("{}/{} {rate}", at(0.5), at(0.99))
    }

    /// Its makespan in seconds (or how long it ran before it was given up on),
    /// and its steals/divides/restarts (and progress if it was given up on).
    fn columns(&self) -> (String, String) {
        let n = |k: &str| self.status[k].as_u64().unwrap_or(0);
        let counters = format!("{}/{}/{}", n("steals"), n("divides"), n("restarts"));
        if self.result.is_some() {
            return (format!("{:.3}", secs(self.elapsed)), counters);
        }
        let workers = self.status["workers"].as_array().into_iter().flatten();
        let running: Vec<_> = workers
            .filter(|w| w["running"].as_u64() > Some(0))
            .collect();
        let load: f64 = running.iter().filter_map(|w| w["load"].as_f64()).sum();
        let progress = self.status["progress"].as_f64().unwrap_or(0.0) * 100.0;
        let busy = running.len();
        let note = format!("TIMED OUT at {progress:.2}%, {busy} still running (load {load})");
        let elapsed = format!(">{:.0}", secs(self.elapsed));
        (elapsed, format!("{counters}  {note}"))
    }
}

/// Submits job `kind` through the node of `dir` (timed: the setup), waits for
/// its result up to `deadline`, reads its final status, removes its objects
/// and lets the workers go idle.
fn run_on(dir: &Path, kind: &str, args: &[String], deadline: Duration) -> ClusterRun {
    run_with(dir, kind, args, &[], deadline)
}

/// [`run_on`] with more `p3ctl job run` flags.
fn run_with(
    dir: &Path,
    kind: &str,
    args: &[String],
    flags: &[&str],
    deadline: Duration,
) -> ClusterRun {
    let mut submit = vec!["job", "run", kind, "--json"];
    submit.extend(flags);
    submit.extend(arg_list(args));
    let (submitted, setup) = call(dir, &submit);
    let id = submitted["id"].as_str().expect("job run printed no id");
    let wait = common::p3ctl_command(dir, &["job", "result", id, "--wait", "--json"]);
    let done = run(&format!("job {kind} {args:?}"), wait, deadline).map(|(done, _)| done);
    // Workers send a last heartbeat once they see the job over: wait briefly
    // for those, so that the counters are final.
    let finished = Instant::now();
    let status = loop {
        let (status, _) = call(dir, &["job", "status", id, "--json"]);
        let end = status["job"]["finished_ms"].as_u64().unwrap_or(u64::MAX);
        let workers = status["workers"].as_array().cloned().unwrap_or_default();
        let all_final = workers.iter().all(|w| w["seen_ms"].as_u64() >= Some(end));
        if done.is_none() || all_final || finished.elapsed() > Duration::from_secs(5) {
            break status;
        }
        thread::sleep(Duration::from_millis(200));
    };
    call(dir, &["job", "cancel", id]);
    // A slot still waiting for a steal grant of this job gives up only after
    // 2-6 s (the worker's steal wait, then twice that if the victim took the
    // request): let them, so that the next job starts on idle workers.
    thread::sleep(Duration::from_secs(7));
    let elapsed = done.as_ref().map_or(deadline, |d| {
        Duration::from_millis(d["elapsed_ms"].as_u64().expect("elapsed_ms"))
    });
    ClusterRun {
        result: done.map(|d| d["result"].clone()),
        setup,
        elapsed,
        status,
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Starts a cluster of nodes with the given `node start` options, formed.
fn cluster(layout: &[&[&str]]) -> common::Cluster {
    let mut cluster = common::Cluster::start_with(0, &[]);
    for options in layout {
        cluster.add(options);
    }
    cluster.wait_formed();
    cluster
}

/// Kills the nodes; with `P3_BENCH_KEEP` set, keeps their data dirs and logs.
fn finish(cluster: common::Cluster) {
    let common::Cluster { nodes, root } = cluster;
    drop(nodes);
    if std::env::var_os("P3_BENCH_KEEP").is_some() {
        println!("(data dirs kept in {})", root.keep().display());
    }
}

fn efficiency(quick: bool) {
    let (workers, ideal) = if quick { (4, 2) } else { (16, 10) };
    let workers =
        std::env::var("P3_BENCH_WORKERS").map_or(workers, |w| w.parse().expect("P3_BENCH_WORKERS"));
    let started = Instant::now();
    let cluster = cluster(&vec![&["--slots", "1"][..]; workers]);
    println!(
        "\nsleep on {workers} workers ({workers} nodes, --slots 1; formed in {:.1} s), \
         ideal makespan {ideal} s",
        secs(started.elapsed())
    );
    println!(
        " slice  root    total  slices  setup_s makespan_s efficiency   busy steal/divide/rst  \
         steal_ms_p50/p99 served/s  in_slices_s"
    );
    // Spread over the workers at submission (the default), then once with
    // the root published whole, so that every worker but one steals: the
    // steal figures.
    for (slice_ms, whole) in [(10u64, false), (100, false), (1000, false), (100, true)] {
        let total_ms = workers as u64 * ideal * 1000;
        let args = [format!("total={total_ms}ms"), format!("slice={slice_ms}ms")];
        let deadline = Duration::from_secs(ideal * 12).max(Duration::from_secs(60));
        let flags: &[&str] = if whole { &["--no-spread"] } else { &[] };
        let run = run_with(&cluster.nodes[0].dir, "sleep", &args, flags, deadline);
        let root = if whole { "whole" } else { "spread" };
        let all_slept = |r: &Value| r["slices"].is_u64() && r["slices"] == r["expected"];
        let result = run.result.as_ref();
        assert!(result.is_none_or(all_slept), "sleep {args:?}: {result:?}");
        let (makespan, counters) = run.columns();
        let busy = run.status["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["stats"]["slices"].as_u64() > Some(0))
            .count();
        let (total, slices, setup) = (total_ms / 1000, total_ms / slice_ms, secs(run.setup));
        let efficiency = 100.0 * ideal as f64 / secs(run.elapsed);
        print!("{slice_ms:>4}ms {root:<6} {total:>6}s {slices:>7} {setup:>8.3} {makespan:>10} ");
        // Time the workers spent inside slices: above `total`, the slices
        // themselves ran long (the machine, not the protocol).
        let in_slices: u64 = run.status["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["stats"]["busy_ms"].as_u64())
            .sum();
        println!(
            "{efficiency:>9.1}% {busy:>3}/{workers:<2} {counters:<16} {:<28} {:>8.1}",
            run.steal_figures(),
            in_slices as f64 / 1000.0
        );
    }
    finish(cluster);
}

/// Rounds of each speedup measurement: this machine's cores are shared with
/// other tenants, and one process's time varies by a third from minute to
/// minute; local and cluster runs alternate and the medians are compared.
const ROUNDS: usize = 3;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn speedup(quick: bool) {
    let size = |var: &str, quick_n: u64, full_n: u64| {
        let n = std::env::var(var).map(|v| v.parse().expect(var));
        n.unwrap_or(if quick { quick_n } else { full_n })
    };
    let jobs = [
        ("matmul", "n", size("P3_BENCH_MATMUL", 256, 1024)),
        ("nqueens", "n", size("P3_BENCH_NQUEENS", 11, 15)),
        (
            "sum",
            "to",
            size("P3_BENCH_SUM", 100_000_000, 10_000_000_000),
        ),
    ];
    let local_run = |kind: &str, args: &[String]| {
        let mut cmd = Command::new(common::p3ctl_bin());
        cmd.args(["job", "local", kind, "--json"])
            .args(arg_list(args));
        let what = format!("job local {kind}");
        let (run, _) = run(&what, cmd, CALL).unwrap_or_else(|| panic!("{what}: over {CALL:?}"));
        let elapsed =
            Duration::from_secs_f64(run["elapsed_ms"].as_f64().expect("elapsed_ms") / 1000.0);
        (run["result"].clone(), elapsed)
    };
    println!(
        "\nspeedup against one process (`job local`), medians of {ROUNDS} alternating runs; \
         setup = `main`, not in elapsed"
    );
    println!(
        "job             run         setup_s    local_s  elapsed_s  speedup  steal/divide/rst"
    );
    let no_worker: &[&str] = &["--no-worker"];
    let worker: &[&str] = &["--slots", "1"];
    for (label, layout) in [
        ("1 worker", [no_worker, no_worker, worker]),
        ("2 workers", [no_worker, worker, worker]),
    ] {
        let cluster = cluster(&layout);
        for (kind, key, n) in jobs {
            let args = [format!("{key}={n}")];
            let digits = n.to_string();
            let round = n >= 1_000_000 && digits.trim_start_matches('1').bytes().all(|b| b == b'0');
            let shown = if round {
                format!("1e{}", digits.len() - 1)
            } else {
                digits
            };
            let job = format!("{kind} {key}={shown}");
            let (mut locals, mut runs) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let (expected, local_elapsed) = local_run(kind, &args);
                let deadline = local_elapsed * 20 + Duration::from_secs(120);
                let run = run_on(&cluster.nodes[0].dir, kind, &args, deadline);
                if let Some(result) = &run.result {
                    assert_eq!(result, &expected, "{job} on {label}: not the local result");
                }
                locals.push(local_elapsed);
                runs.push(run);
            }
            let local = median(locals);
            runs.sort_by_key(|r| r.elapsed);
            let run = &runs[runs.len() / 2];
            let (elapsed, counters) = run.columns();
            println!(
                "{job:<15} {label:<10} {:>8.3} {:>10.3} {elapsed:>10} {:>8.3}  {counters}",
                secs(run.setup),
                secs(local),
                secs(local) / secs(run.elapsed),
            );
            if label == "2 workers" {
                // What two cores give two processes now: two whole local
                // runs at once. Twice the work in the slower one's time is
                // the speedup two workers could reach at best.
                let (mut alone, mut paired) = (Vec::new(), Vec::new());
                for _ in 0..ROUNDS {
                    alone.push(local_run(kind, &args).1);
                    paired.push(thread::scope(|s| {
                        let both = [
                            s.spawn(|| local_run(kind, &args).1),
                            s.spawn(|| local_run(kind, &args).1),
                        ];
                        both.map(|r| r.join().expect("job local panicked"))
                            .into_iter()
                            .max()
                            .unwrap_or_default()
                    }));
                }
                let (alone, paired) = (median(alone), median(paired));
                println!(
                    "{job:<15} {:<10} {:>8} {:>10.3} {:>10.3} {:>8.3}  (two `job local` at once: the ceiling)",
                    "2 local",
                    "",
                    secs(alone),
                    secs(paired),
                    2.0 * secs(alone) / secs(paired)
                );
            }
        }
        finish(cluster);
    }
}

/// Latency: an empty job (`sum to=1`) from submit to result through
/// `p3ctl job run --wait` on 4 nodes, and the demo's `matmul n=256`.
fn latency() {
    let cluster = cluster(&[&["--slots", "1"][..]; 4]);
    let dir = &cluster.nodes[0].dir;
    let mut times = Vec::new();
    for _ in 0..20 {
        let (_, took) = call(
            dir,
            &["job", "run", "sum", "--arg", "to=1", "--wait", "--json"],
        );
        times.push(took);
    }
    times.sort();
    let at = |q: f64| secs(times[((times.len() - 1) as f64 * q).round() as usize]) * 1000.0;
    println!("\nlatency on 4 nodes (--slots 1)");
    println!(
        "empty job (sum to=1), submit to result through `p3ctl job run --wait`, 20 runs: \
         p50 {:.1} ms, p99 {:.1} ms",
        at(0.5),
        at(0.99)
    );
    let run = run_on(dir, "matmul", &["n=256".to_string()], CALL);
    println!(
        "matmul n=256 (the demo): elapsed {:.3} s, setup {:.3} s",
        secs(run.elapsed),
        secs(run.setup)
    );
    finish(cluster);
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let numbers: Vec<&str> = load.split_whitespace().take(3).collect();
    numbers.join(" ")
}

fn main() {
    let quick = std::env::var("P3_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let started = Instant::now();
    println!(
        "scheduler bench ({}); {} cores; load average {}",
        if quick { "quick" } else { "full" },
        thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let part = std::env::var("P3_BENCH_PART").unwrap_or_default();
    if part.is_empty() || part == "1" {
        efficiency(quick);
    }
    if part.is_empty() || part == "2" {
        speedup(quick);
    }
    if part.is_empty() || part == "3" {
        latency();
    }
    let took = secs(started.elapsed());
    println!("\nbench took {took:.0} s; load average {}", load_average());
}
