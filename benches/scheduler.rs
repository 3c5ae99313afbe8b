//! The parallel-job scheduler on real `p3ctl` node processes on 127.0.0.1:
//!
//! 1. **Scheduling efficiency**: the `sleep` job (no CPU, so the machine's core
//!    count does not matter) on 16 nodes with one worker slot each, for slices
//!    of 10 ms, 100 ms and 1 s, with `total` = 16 × 10 s so that the ideal
//!    makespan is 10 s. Efficiency = ideal makespan ÷ measured makespan, the
//!    job's `elapsed_ms` (root task published, after `main`, to the last credit
//!    back). Steals, divides and restarts come from `p3ctl job status`.
//! 2. **Speedup** of `matmul n=1024` and `nqueens n=13` with 1 and with 2
//!    worker processes, against `p3ctl job local` (the same job code in one
//!    process, objects in memory): speedup = local elapsed ÷ cluster elapsed,
//!    both excluding setup (`main`). Each layout is a 3-node cluster, so every
//!    node owns every object (R = 3) in both: "1 worker" is two `--no-worker`
//!    nodes and one `--slots 1` node; "2 workers" is one `--no-worker` node and
//!    two `--slots 1` nodes. Jobs are submitted through node 0 (a `--no-worker`
//!    node) without `--wait`; that command's duration is the setup column
//!    (process start, connecting, `main` writing its inputs to the space).
//!    Cluster results must equal the local ones.
//!
//! Run with `cargo bench --bench scheduler` (about 3 minutes of measurement
//! plus building); `P3_BENCH_QUICK=1` uses 4 sleep workers, 2 s ideal
//! makespans, `matmul n=256` and `nqueens n=11` for a quick check. Every wait
//! has a deadline; the nodes are killed when the bench ends, pass or fail.
//! `P3_BENCH_MATMUL=N` and `P3_BENCH_NQUEENS=N` choose other sizes for part 2;
//! `P3_BENCH_KEEP=1` keeps the nodes' data dirs (and `node.log`s) afterwards.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Runs `cmd` within `deadline` (killed past it, failing the bench); returns
/// its stdout as JSON and how long it ran.
fn run_json(what: &str, mut cmd: Command, deadline: Duration) -> (Value, Duration) {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run p3ctl");
    let mut child = common::KillOnDrop(child);
    while child.0.try_wait().expect("cannot wait for p3ctl").is_none() {
        assert!(
            start.elapsed() < deadline,
            "{what}: not done in {deadline:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    let (ok, out, err) = child.finish();
    assert!(ok, "{what} failed: {}", err.trim_end());
    let json = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{what}: bad JSON: {e}"));
    (json, took)
}

/// `--arg K=V` for each pair.
fn arg_list(args: &[String]) -> Vec<&str> {
    args.iter().flat_map(|a| ["--arg", a.as_str()]).collect()
}

/// One job run on a cluster, through the node of `dir`.
struct ClusterRun {
    result: Value,
    setup: Duration,
    elapsed: Duration,
    status: Value,
}

/// Submits job `kind` through the node of `dir` (timed: the setup), waits for
/// its result within `deadline`, reads its final status, removes its objects
/// and lets the workers go idle.
fn run_on(dir: &Path, kind: &str, args: &[String], deadline: Duration) -> ClusterRun {
    let what = format!("job {kind} {}", args.join(" "));
    let mut submit = vec!["job", "run", kind, "--json"];
    submit.extend(arg_list(args));
    let (submitted, setup) = run_json(&what, common::p3ctl_command(dir, &submit), deadline);
    let id = submitted["id"].as_str().expect("job run printed no id");
    let wait = common::p3ctl_command(dir, &["job", "result", id, "--wait", "--json"]);
    let (done, _) = run_json(&what, wait, deadline);
    // Workers send a last heartbeat once they see the job over: wait briefly
    // for those, so the counters are final.
    let finished = Instant::now();
    let status = loop {
        let status = common::p3ctl_json(dir, &["job", "status", id]).expect("job status");
        let end = status["job"]["finished_ms"].as_u64().unwrap_or(u64::MAX);
        let workers = status["workers"].as_array().cloned().unwrap_or_default();
        let all_final = workers.iter().all(|w| w["seen_ms"].as_u64() >= Some(end));
        if all_final || finished.elapsed() > Duration::from_secs(5) {
            break status;
        }
        thread::sleep(Duration::from_millis(200));
    };
    common::p3ctl_ok(dir, &["job", "cancel", id]);
    // A slot still waiting for a steal grant of this job gives up only after
    // 2-6 s (the worker's steal wait, then twice that if the victim took the
    // request): let them, so that the next job starts on idle workers.
    thread::sleep(Duration::from_secs(7));
    ClusterRun {
        result: done["result"].clone(),
        setup,
        elapsed: Duration::from_millis(done["elapsed_ms"].as_u64().expect("elapsed_ms")),
        status,
    }
}

/// "steals/divides/restarts" of a job status.
fn counters(status: &Value) -> String {
    let n = |k: &str| status[k].as_u64().unwrap_or(0);
    format!("{}/{}/{}", n("steals"), n("divides"), n("restarts"))
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
    let started = Instant::now();
    let cluster = cluster(&vec![&["--slots", "1"][..]; workers]);
    println!(
        "\nsleep on {workers} workers ({workers} nodes, --slots 1; formed in {:.1} s), \
         ideal makespan {ideal} s",
        secs(started.elapsed())
    );
    println!(" slice   total  slices  setup_s makespan_s efficiency  workers   steal/divide/rst");
    for slice_ms in [10u64, 100, 1000] {
        let total_ms = workers as u64 * ideal * 1000;
        let args = [format!("total={total_ms}ms"), format!("slice={slice_ms}ms")];
        let deadline = Duration::from_secs(ideal * 10 + 60);
        let run = run_on(&cluster.nodes[0].dir, "sleep", &args, deadline);
        let slices = run.result["slices"].as_u64();
        assert!(
            slices.is_some() && slices == run.result["expected"].as_u64(),
            "sleep {args:?}: {}",
            run.result
        );
        let busy = run.status["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["stats"]["slices"].as_u64() > Some(0))
            .count();
        println!(
            "{:>4}ms {:>6}s {:>7} {:>8.3} {:>10.3} {:>9.1}% {:>5}/{:<2} {:>18}",
            slice_ms,
            total_ms / 1000,
            slices.unwrap_or(0),
            secs(run.setup),
            secs(run.elapsed),
            100.0 * ideal as f64 / secs(run.elapsed),
            busy,
            workers,
            counters(&run.status)
        );
    }
    finish(cluster);
}

fn speedup(quick: bool) {
    let size = |var: &str, quick_n: u32, full_n: u32| {
        std::env::var(var).map_or(if quick { quick_n } else { full_n }, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{var}={v}: not a number"))
        })
    };
    let jobs = [
        ("matmul", size("P3_BENCH_MATMUL", 256, 1024)),
        ("nqueens", size("P3_BENCH_NQUEENS", 11, 13)),
    ];
    println!("\nspeedup against one process (`job local`); setup = `main`, not in elapsed");
    println!(
        "{:<15} {:<10} {:>8} {:>10} {:>8} {:>18}",
        "job", "run", "setup_s", "elapsed_s", "speedup", "steal/divide/rst"
    );
    let mut local = Vec::new();
    for (kind, n) in jobs {
        let args = [format!("n={n}")];
        let mut cmd = Command::new(common::p3ctl_bin());
        cmd.args(["job", "local", kind, "--json"])
            .args(arg_list(&args));
        let (run, _) = run_json(&format!("job local {kind}"), cmd, Duration::from_secs(900));
        let ms = |k: &str| Duration::from_secs_f64(run[k].as_f64().expect(k) / 1000.0);
        let (setup, elapsed) = (ms("setup_ms"), ms("elapsed_ms"));
        println!(
            "{:<15} {:<10} {:>8.3} {:>10.3} {:>8.3}",
            format!("{kind} n={n}"),
            "local",
            secs(setup),
            secs(elapsed),
            1.0
        );
        local.push((kind, args, run["result"].clone(), elapsed));
    }
    let no_worker: &[&str] = &["--no-worker"];
    let worker: &[&str] = &["--slots", "1"];
    for (label, layout) in [
        ("1 worker", [no_worker, no_worker, worker]),
        ("2 workers", [no_worker, worker, worker]),
    ] {
        let cluster = cluster(&layout);
        for (kind, args, expected, local_elapsed) in &local {
            let deadline = *local_elapsed * 10 + Duration::from_secs(120);
            let run = run_on(&cluster.nodes[0].dir, kind, args, deadline);
            assert_eq!(&run.result, expected, "{kind} {args:?} on {label}");
            println!(
                "{:<15} {:<10} {:>8.3} {:>10.3} {:>8.3} {:>18}",
                format!("{kind} {}", args.join(" ")),
                label,
                secs(run.setup),
                secs(run.elapsed),
                secs(*local_elapsed) / secs(run.elapsed),
                counters(&run.status)
            );
        }
        finish(cluster);
    }
}

fn main() {
    let quick = std::env::var("P3_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let started = Instant::now();
    println!(
        "scheduler bench ({}); {} cores",
        if quick { "quick" } else { "full" },
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    efficiency(quick);
    speedup(quick);
    println!("\nbench took {:.0} s", secs(started.elapsed()));
}
