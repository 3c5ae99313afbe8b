//! Parallel jobs on real `p3ctl` nodes on 127.0.0.1: results equal a run in one
//! process, work is spread over the workers at submission (a dead worker's
//! part runs elsewhere) and by stealing, nodes that join mid-job take part, a
//! killed worker's task resumes from its checkpoint, jobs run side by side,
//! and cancel stops every worker and removes the job's namespace.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{p3ctl_err, p3ctl_json, p3ctl_ok, wait_for, Cluster, KillOnDrop, DEADLINE};
use serde_json::Value;

/// Longest a test job may take before the test fails instead of hanging.
const JOB_DEADLINE: Duration = Duration::from_secs(180);

fn arg_list(args: &[&str]) -> Vec<String> {
    args.iter()
        .flat_map(|a| ["--arg".to_owned(), (*a).to_owned()])
        .collect()
}

/// Submits a job through the node of `dir`; returns its id.
fn submit(dir: &Path, kind: &str, args: &[&str]) -> String {
    submit_with(dir, kind, args, &[])
}

/// [`submit`] with more `p3ctl job run` flags.
fn submit_with(dir: &Path, kind: &str, args: &[&str], flags: &[&str]) -> String {
    let mut command = vec!["job".to_owned(), "run".to_owned(), kind.to_owned()];
    command.extend(flags.iter().map(|f| (*f).to_owned()));
    command.extend(arg_list(args));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let out = p3ctl_ok(dir, &command);
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// Waits (bounded) for job `id` to finish, through the node of `dir`; returns
/// its result.
fn result(dir: &Path, id: &str) -> Value {
    let child = common::p3ctl_command(dir, &["job", "result", id, "--wait", "--json"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run p3ctl");
    let guard = KillOnDrop(child);
    let pid = guard.0.id();
    // Kills the waiting client if the job overruns, so the test fails instead
    // of hanging; the guard kills it in any case when the test ends.
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < JOB_DEADLINE {
            std::thread::sleep(Duration::from_millis(200));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let (ok, stdout, stderr) = guard.finish();
    let _ = watchdog.join();
    assert!(
        ok,
        "job {id} did not finish within {JOB_DEADLINE:?}: {stderr}"
    );
    let value: Value = serde_json::from_slice(&stdout).expect("job result is not JSON");
    value["result"].clone()
}

fn status(dir: &Path, id: &str) -> Value {
    let out = p3ctl_ok(dir, &["job", "status", id, "--json"]);
    serde_json::from_slice(&out.stdout).expect("job status is not JSON")
}

/// The same job computed in one process, without the space.
fn local(kind: &str, args: &[&str]) -> Value {
    let out = Command::new(common::p3ctl_bin())
        .args(["job", "local", kind, "--json"])
        .args(arg_list(args))
        .output()
        .expect("cannot run p3ctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    value["result"].clone()
}

/// The workers of a status, by peer id: (slices computed, stats).
fn worker_stats(status: &Value) -> Vec<(String, Value)> {
    status["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| {
            (
                w["worker"].as_str().expect("worker").to_owned(),
                w["stats"].clone(),
            )
        })
        .collect()
}

/// Tasks of job `id` the worker of `dir` runs now (from `node status`).
fn running_here(dir: &Path, id: &str) -> usize {
    let status = p3ctl_json(dir, &["node", "status"]).expect("node status");
    status["worker"]["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["id"] == id)
        .map(|j| j["running"].as_array().map_or(0, Vec::len))
        .sum()
}

fn formed(n: usize, options: &[&str]) -> Cluster {
    let cluster = Cluster::start_with(n, options);
    cluster.wait_formed();
    cluster
}

#[test]
fn matmul_on_four_nodes_matches_one_process_and_every_node_works() {
    let cluster = formed(4, &[]);
    let args = ["n=256"];
    let dir = cluster.nodes[0].dir.clone();
    wait_for("every worker in p3.workers", DEADLINE, || {
        (announced(&dir).len() == 4).then_some(())
    });
    let id = submit(&dir, "matmul", &args);
    let got = result(&cluster.nodes[1].dir, &id);
    assert_eq!(
        got,
        local("matmul", &args),
        "cluster and one process disagree"
    );
    assert_eq!(got["n"], 256);

    let status = status(&cluster.nodes[2].dir, &id);
    assert_eq!(status["job"]["state"], "done");
    assert_eq!(status["tasks"], 0);
    // Spread at submission: a part for each worker, each of which computed.
    let parts = status["job"]["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 4, "{status:#}");
    let workers = worker_stats(&status);
    for node in &cluster.nodes {
        let stats = workers
            .iter()
            .find(|(w, _)| *w == node.peer_id)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("node {} never reported: {status:#}", node.peer_id));
        assert!(
            stats["slices"].as_u64() > Some(0),
            "node {} computed nothing: {status:#}",
            node.peer_id
        );
    }
    // C itself is in the space, in blocks of rows that add up to n² entries
    // of four bytes.
    let c = p3ctl_json(
        &cluster.nodes[3].dir,
        &["ls", &format!("p3.job.{id}/data/C/")],
    )
    .expect("ls");
    let bytes: u64 = c
        .as_array()
        .expect("list")
        .iter()
        .map(|o| o["size"].as_u64().expect("size"))
        .sum();
    assert_eq!(bytes, 256 * 256 * 4);
}

#[test]
fn nqueens_11_counts_2680_and_only_ends_when_every_task_has() {
    let cluster = formed(4, &[]);
    // The root published whole: every other worker steals.
    let id = submit_with(
        &cluster.nodes[0].dir,
        "nqueens",
        &["n=11", "nodes_per_slice=500"],
        &["--no-spread"],
    );
    let got = result(&cluster.nodes[3].dir, &id);
    assert_eq!(got["solutions"], 2680);
    // Every task ever made (the root and one per divide) finished exactly once
    // before the job was declared done, and none is left.
    let status = status(&cluster.nodes[0].dir, &id);
    assert_eq!(status["tasks"], 0);
    assert_eq!(status["restarts"], 0);
    let results = p3ctl_json(
        &cluster.nodes[1].dir,
        &["ls", &format!("p3.job.{id}/result/")],
    )
    .expect("ls");
    let divides = status["divides"].as_u64().expect("divides");
    assert_eq!(
        results.as_array().map(Vec::len),
        Some(divides as usize + 1),
        "{status:#}"
    );
}

#[test]
fn a_node_that_joins_mid_job_steals_and_finishes_work() {
    let mut cluster = formed(4, &[]);
    // 15 s of work on 4 workers: time for a node to start, join and steal.
    let id = submit(
        &cluster.nodes[0].dir,
        "sleep",
        &["total=60s", "slice=100ms"],
    );
    wait_for("the job to make progress", DEADLINE, || {
        (status(&cluster.nodes[0].dir, &id)["progress"].as_f64() > Some(0.0)
            || worker_stats(&status(&cluster.nodes[0].dir, &id))
                .iter()
                .any(|(_, s)| s["slices"].as_u64() > Some(0)))
        .then_some(())
    });
    let late = cluster.add(&[]);
    // A node that has just joined computes owners from the peers it knows so
    // far, and may ask the wrong ones (issue 12): read through it once it
    // knows them all.
    cluster.wait_formed();
    let got = result(&cluster.nodes[late].dir, &id);
    assert_eq!(got["slices"], got["expected"]);
    assert_eq!(got["slices"], 600);
    // Asked through a node that has been connected to all others all along.
    let status = status(&cluster.nodes[0].dir, &id);
    let (_, stats) = worker_stats(&status)
        .into_iter()
        .find(|(w, _)| *w == cluster.nodes[late].peer_id)
        .unwrap_or_else(|| panic!("the late node never reported: {status:#}"));
    assert!(
        stats["steals"].as_u64() > Some(0),
        "late node stole nothing: {stats}"
    );
    assert!(
        stats["finished"].as_u64() > Some(0),
        "late node finished nothing: {stats}"
    );
}

#[test]
fn a_job_of_a_tenth_of_a_second_reaches_two_nodes() {
    let cluster = formed(4, &[]);
    // Workers learn of a job through a watch on the registry, and the root
    // task is divided for the thieves that ask at its first safe points.
    let id = submit(
        &cluster.nodes[0].dir,
        "sleep",
        &["total=100ms", "slice=10ms"],
    );
    let got = result(&cluster.nodes[1].dir, &id);
    assert_eq!(got["slices"], 10, "{got}");
    // Counters arrive with each worker's last heartbeat, moments after.
    wait_for("slices computed on two nodes", DEADLINE, || {
        let working = worker_stats(&status(&cluster.nodes[0].dir, &id))
            .into_iter()
            .filter(|(_, s)| s["slices"].as_u64() > Some(0))
            .count();
        (working >= 2).then_some(())
    });
}

/// The workers listed in `p3.workers` (through the node of `dir`).
fn announced(dir: &Path) -> Vec<String> {
    p3ctl_json(dir, &["ls", "p3.workers/"])
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|o| Some(o["path"].as_str()?.rsplit('/').next()?.to_owned()))
        .collect()
}

#[test]
fn a_job_is_spread_over_the_workers_and_a_dead_workers_part_runs_elsewhere() {
    let mut cluster = formed(4, &[]);
    let dir = cluster.nodes[0].dir.clone();
    wait_for("every worker in p3.workers", DEADLINE, || {
        (announced(&dir).len() == 4).then_some(())
    });
    // Stopped cleanly, a worker withdraws its entry before it exits (its
    // TTL would keep it listed for up to 10 s).
    let stopped = cluster.nodes[3].peer_id.clone();
    cluster.nodes[3].stop("TERM");
    let listed = announced(&dir);
    assert!(!listed.contains(&stopped), "still listed: {listed:?}");
    assert_eq!(listed.len(), 3, "{listed:?}");
    // Killed, its entry stays listed until its TTL runs out: the next job
    // gets a part for it, which one of the two live workers must run.
    let dead = cluster.nodes[2].peer_id.clone();
    cluster.nodes[2].stop("KILL");
    // Writes wait for the map without it (until then, one whose primary was
    // the dead node fails as "may or may not have been applied").
    for node in &cluster.nodes[..2] {
        wait_for("the map to drop the dead node", DEADLINE, || {
            let status = node.json(&["node", "status"])?;
            (status["membership"]["members"].as_array()?.len() == 2).then_some(())
        });
    }
    let id = submit(&dir, "sleep", &["total=3s", "slice=100ms"]);
    let got = result(&dir, &id);
    assert_eq!(got["slices"], 30, "every slice slept exactly once: {got}");
    let status = status(&dir, &id);
    let parts = status["job"]["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 3, "one part per worker listed: {status:#}");
    assert!(
        parts.iter().any(|p| p["worker"] == dead),
        "no part for the dead worker: {status:#}"
    );
    assert!(status["job"]["root"].is_null(), "{status:#}");
    // Counters arrive with each worker's last heartbeat, moments after.
    // (At least 3 tasks: a part may have been divided again for a thief.)
    wait_for(
        "the live workers to report the 3 parts finished",
        DEADLINE,
        || {
            let finished: u64 = worker_stats(&self::status(&dir, &id))
                .iter()
                .filter(|(w, _)| *w != dead)
                .map(|(_, s)| s["finished"].as_u64().unwrap_or(0))
                .sum();
            (finished >= 3).then_some(())
        },
    );
    // Gone from the registry once its TTL ran out.
    wait_for("the dead worker's entry to expire", DEADLINE, || {
        (!announced(&dir).contains(&dead)).then_some(())
    });
}

#[test]
fn a_killed_worker_task_resumes_from_its_checkpoint() {
    let mut cluster = formed(4, &[]);
    // 12 s of work per worker: a checkpoint shows in the heartbeats 2-4 s in,
    // which leaves several seconds to see it before the tasks end.
    let id = submit(
        &cluster.nodes[0].dir,
        "sleep",
        &["total=48s", "slice=100ms"],
    );
    // Kill a node (not the one we ask) while it runs a task and has
    // checkpointed it: workers checkpoint every 2 s, so after 2.5 s of slices
    // (any such node: the first busy one may have stolen its task late).
    let victim = wait_for("a worker to run a task for a while", DEADLINE, || {
        let stats = worker_stats(&status(&cluster.nodes[0].dir, &id));
        (1..4).find(|&i| {
            let peer = &cluster.nodes[i].peer_id;
            let slices = stats
                .iter()
                .find(|(w, _)| w == peer)
                .and_then(|(_, s)| s["slices"].as_u64())
                .unwrap_or(0);
            slices >= 25 && running_here(&cluster.nodes[i].dir, &id) > 0
        })
    });
    cluster.nodes[victim].stop("KILL");
    let got = result(&cluster.nodes[0].dir, &id);
    assert_eq!(got["slices"], 480, "every slice slept exactly once: {got}");
    let status = status(&cluster.nodes[0].dir, &id);
    assert!(
        status["restarts"].as_u64() >= Some(1),
        "no restart from checkpoint: {status:#}"
    );
}

#[test]
fn two_jobs_at_once_on_the_same_nodes_both_complete() {
    let cluster = formed(4, &["--slots", "2"]);
    let matmul = submit(&cluster.nodes[0].dir, "matmul", &["n=128", "seed=5"]);
    let queens = submit(
        &cluster.nodes[1].dir,
        "nqueens",
        &["n=10", "nodes_per_slice=300"],
    );
    let sum = submit(
        &cluster.nodes[2].dir,
        "sum",
        &["from=1", "to=30000000", "chunk=500000"],
    );
    assert_eq!(result(&cluster.nodes[3].dir, &queens)["solutions"], 724);
    assert_eq!(
        result(&cluster.nodes[3].dir, &matmul),
        local("matmul", &["n=128", "seed=5"])
    );
    assert_eq!(
        result(&cluster.nodes[3].dir, &sum)["sum"],
        (30_000_000u64 * 30_000_001 / 2).to_string()
    );
    let listed = p3ctl_json(&cluster.nodes[0].dir, &["job", "ls"]).expect("job ls");
    let done = listed
        .as_array()
        .expect("list")
        .iter()
        .filter(|j| j["state"] == "done")
        .count();
    assert_eq!(done, 3, "{listed:#}");
}

#[test]
fn cancel_stops_every_worker_and_removes_the_namespace() {
    let cluster = formed(4, &[]);
    let id = submit(
        &cluster.nodes[0].dir,
        "sleep",
        &["total=600s", "slice=100ms"],
    );
    wait_for("all four workers to run the job", DEADLINE, || {
        cluster
            .nodes
            .iter()
            .all(|n| running_here(&n.dir, &id) > 0)
            .then_some(())
    });
    p3ctl_ok(&cluster.nodes[1].dir, &["job", "cancel", &id]);
    let namespace = format!("p3.job.{id}");
    // "Within a few seconds": the workers' next safe point is 100 ms away and
    // they learn of the cancellation from the registry at once (or within 1 s).
    let stopped = Instant::now();
    wait_for(
        "every worker to stop the job",
        Duration::from_secs(10),
        || {
            cluster
                .nodes
                .iter()
                .all(|n| running_here(&n.dir, &id) == 0)
                .then_some(())
        },
    );
    eprintln!(
        "workers stopped {:?} after the cancel returned",
        stopped.elapsed()
    );
    for node in &cluster.nodes {
        let spaces = p3ctl_json(&node.dir, &["ns", "ls"]).expect("ns ls");
        assert!(
            !spaces
                .as_array()
                .expect("list")
                .iter()
                .any(|n| n == namespace.as_str()),
            "{namespace} still listed by {}",
            node.peer_id
        );
    }
    assert_eq!(
        status(&cluster.nodes[2].dir, &id)["job"]["state"],
        "cancelled"
    );
    let error = p3ctl_err(&cluster.nodes[3].dir, &["job", "result", &id]);
    assert!(error.contains("cancelled"), "{error}");
}

#[test]
fn bad_job_requests_get_one_line_errors() {
    let cluster = formed(1, &[]);
    let dir = &cluster.nodes[0].dir;
    let unknown = p3ctl_err(dir, &["job", "run", "nosuchkind"]);
    assert!(
        unknown.contains("unknown job kind \"nosuchkind\""),
        "{unknown}"
    );
    let bad = p3ctl_err(dir, &["job", "run", "matmul", "--arg", "n=abc"]);
    assert!(bad.contains("n=abc"), "{bad}");
    let typo = p3ctl_err(dir, &["job", "run", "matmul", "--arg", "size=3"]);
    assert!(typo.contains("unknown argument \"size\""), "{typo}");
    let id = p3ctl_err(dir, &["job", "status", "../../x"]);
    assert!(id.contains("12 hex digits"), "{id}");
    let missing = p3ctl_err(dir, &["job", "result", "0123456789ab"]);
    assert!(missing.contains("no job"), "{missing}");
    // Nothing was started by the refused requests.
    let listed = p3ctl_json(dir, &["job", "ls"]).expect("job ls");
    assert_eq!(listed, Value::Array(vec![]));
}

/// The example node binary with its own job kind (`examples/custom_node.rs`),
/// which `cargo test` builds next to the test binaries.
fn custom_node() -> std::path::PathBuf {
    let p3ctl = Path::new(common::p3ctl_bin());
    let program = p3ctl
        .parent()
        .expect("target dir")
        .join("examples/custom_node");
    assert!(
        program.exists(),
        "{} is missing; cargo test builds examples",
        program.display()
    );
    program
}

#[test]
fn a_node_binary_with_its_own_job_kind_runs_it_and_p3ctl_nodes_leave_it_alone() {
    let mut cluster = formed(2, &[]);
    // A custom node without a worker submits; only p3ctl workers exist so far.
    let submitter = cluster.add_program(&custom_node(), &["--no-worker"]);
    cluster.wait_formed();
    let out = Command::new(custom_node())
        .args(["job", "run", "primes", "--arg", "to=1000000", "--data-dir"])
        .arg(&cluster.nodes[submitter].dir)
        .output()
        .expect("cannot run custom_node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    // p3ctl cannot submit it: it does not know the kind.
    let refused = p3ctl_err(&cluster.nodes[0].dir, &["job", "run", "primes"]);
    assert!(refused.contains("unknown job kind"), "{refused}");
    for node in &cluster.nodes[..2] {
        wait_for(
            "the p3ctl workers to see the job and pass",
            DEADLINE,
            || node.log().contains("not working on this job").then_some(()),
        );
    }
    let waiting = status(&cluster.nodes[0].dir, &id);
    assert_eq!(waiting["job"]["state"], "running");
    assert_eq!(waiting["progress"], 0.0);
    assert_eq!(waiting["workers"], Value::Array(vec![]), "{waiting:#}");

    // A node running the custom binary joins and does the job.
    let worker = cluster.add_program(&custom_node(), &[]);
    assert_eq!(result(&cluster.nodes[0].dir, &id)["primes"], 78498);
    let status = status(&cluster.nodes[0].dir, &id);
    let workers: Vec<String> = worker_stats(&status).into_iter().map(|(w, _)| w).collect();
    assert_eq!(
        workers,
        vec![cluster.nodes[worker].peer_id.clone()],
        "{status:#}"
    );
}
