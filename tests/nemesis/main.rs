//! The nemesis suite: five real nodes, each in its own network namespace
//! (this test creates and deletes them), with clients on every node driving
//! `p3ctl`: a CAS counter, takes of 100 objects, a write lock around a logged
//! critical section, and unique writes. Each test injects one fault — a 2|3
//! or 1|4 partition, SIGSTOP of a primary, kill -9 and restart of a primary —
//! heals it, reads the state back and checks the promises: no acknowledged
//! increment lost, no object taken twice, no overlapping write locks or
//! duplicate tokens, no acknowledged write lost, no conflict that was applied;
//! and the majority side completes operations during the fault.
//!
//! Each nemesis runs twice: with the default connection policy (every node
//! connected to every other) and with `connections = "on-demand"`, where a
//! node holds a connection only while it talks to the peer, so the fault
//! also meets connections being closed and dialled again.
//!
//! Without network namespaces (not root, or a kernel without them) the suite
//! says so in one line and runs the pause and kill nemeses on 127.0.0.1.

#[path = "../common/mod.rs"]
mod common;

mod checker;
mod net;
mod workload;

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::Duration,
};

use checker::{check, Final, History, Violations};
use common::{closest_by_xor, p3ctl_bin, wait_for, NodeProc, DEADLINE};
use net::Net;
use workload::{Clients, P3ctl, TASKS};

/// The nodes of a run.
const NODES: usize = 5;
/// Clients run this long before the fault.
const BEFORE: Duration = Duration::from_secs(3);
/// How long the fault lasts.
const FAULT: Duration = Duration::from_secs(12);
/// A killed node is restarted this long after the kill.
const DOWN: Duration = Duration::from_secs(5);
/// Clients run this long after the fault is healed.
const AFTER: Duration = Duration::from_secs(6);

/// The configuration file of a node under on-demand connections: idle
/// connections close after a second, so they come and go during the run.
const ON_DEMAND: &str =
    "[network]\nconnections = \"on-demand\"\nidle_connection_timeout_secs = 1\n";

/// One run at a time: each one is five nodes and twenty clients on this machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// The faults.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Nemesis {
    /// The counter's primary and one more of its owners cut off from the rest.
    SplitTwoThree,
    /// The counter's primary alone cut off.
    SplitOneFour,
    /// The counter's primary stopped with SIGSTOP, then continued.
    Pause,
    /// The counter's primary killed with SIGKILL and restarted on its data.
    KillRestart,
}

/// Five nodes, in namespaces when there are some, and where each one listens.
struct Nodes {
    // Dropped in order: the nodes are killed before their namespaces go.
    nodes: Vec<NodeProc>,
    listen: Vec<String>,
    /// Each node's `config.toml`, if not the defaults.
    config: Option<&'static str>,
    net: Option<Net>,
    root: tempfile::TempDir,
}

impl Nodes {
    fn start(net: Option<Net>, config: Option<&'static str>) -> Nodes {
        let root = tempfile::tempdir().expect("cannot create temp dir");
        let listen: Vec<String> = (0..NODES)
            .map(|i| match net {
                Some(_) => format!("/ip4/{}/tcp/4001", Net::addr(i)),
                None => "/ip4/127.0.0.1/tcp/0".to_owned(),
            })
            .collect();
        let mut nodes = Nodes {
            nodes: Vec::new(),
            listen,
            config,
            net,
            root,
        };
        for i in 0..NODES {
            let seed = nodes.nodes.first().map(|n| n.addr.clone());
            let node = nodes.launch(i, seed.as_deref());
            nodes.nodes.push(node);
        }
        nodes.wait_members(NODES);
        nodes
    }

    fn launch(&self, i: usize, seed: Option<&str>) -> NodeProc {
        let dir = self.root.path().join(format!("node{i}"));
        let seeds: Vec<&str> = seed.into_iter().collect();
        let ns = self.net.as_ref().map(|net| net.ns(i));
        if let Some(config) = self.config {
            std::fs::create_dir_all(&dir).expect("cannot create data dir");
            std::fs::write(dir.join("config.toml"), config).expect("cannot write config.toml");
        }
        NodeProc::start_in(
            ns,
            Path::new(p3ctl_bin()),
            &dir,
            &self.listen[i],
            &seeds,
            &[],
        )
    }

    /// Waits until every running node's map has `n` members.
    fn wait_members(&self, n: usize) {
        for (i, node) in self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_running())
        {
            wait_for(
                &format!("node {i}'s map to hold {n} members"),
                DEADLINE,
                || {
                    let status = node.json(&["node", "status"])?;
                    let members = status["membership"]["members"].as_array()?.len();
                    (members == n).then_some(())
                },
            );
        }
    }

    /// How a client on node `i` runs `p3ctl`.
    fn p3ctl(&self, i: usize) -> P3ctl {
        let dir = self.nodes[i].dir.clone();
        let ns = self.nodes[i].netns.clone();
        Arc::new(move |args| common::p3ctl_command_in(ns.as_deref(), &dir, args))
    }

    /// The node that leads the membership group, as node 0 sees it.
    fn leader(&self) -> Option<usize> {
        let status = self.nodes[0].json(&["node", "status"])?;
        let leader = status["membership"]["leader"].as_str()?;
        self.nodes.iter().position(|n| n.peer_id == leader)
    }

    /// The owners of `path` (NS/NAME) on a map of all the nodes, primary first.
    fn owners(&self, path: &str) -> Vec<usize> {
        let (ns, name) = path.split_once('/').expect("NS/NAME");
        let key = blake3::hash(format!("{ns}\0{name}").as_bytes());
        let peers: Vec<String> = self.nodes.iter().map(|n| n.peer_id.clone()).collect();
        closest_by_xor(key.as_bytes(), &peers, 3)
            .iter()
            .map(|p| {
                peers
                    .iter()
                    .position(|q| q == p)
                    .expect("an owner is a node")
            })
            .collect()
    }
}

/// A name (`global/nemesis-WHAT-K`) whose primary is node `primary`: the
/// lock beside the counter, so a fault at that node hits both.
fn name_with_primary(nodes: &Nodes, what: &str, primary: usize) -> String {
    (0..)
        .map(|k| format!("global/nemesis-{what}-{k}"))
        .find(|path| nodes.owners(path)[0] == primary)
        .expect("some name has that primary")
}

/// Runs `p3ctl ARGS` on node `i` until it succeeds (a node may refuse while
/// the map settles); its stdout.
fn until_ok(nodes: &Nodes, i: usize, args: &[&str], input: &[u8]) -> String {
    wait_for(
        &format!("`p3ctl {}` to succeed", args.join(" ")),
        DEADLINE,
        || {
            let mut child = nodes.nodes[i]
                .command(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("cannot run p3ctl");
            use std::io::Write;
            let _ = child.stdin.take().expect("stdin").write_all(input);
            let out = child.wait_with_output().expect("cannot wait for p3ctl");
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    )
}

fn run(nemesis: Nemesis, config: Option<&'static str>) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let net = match Net::create(NODES) {
        Ok(net) => Some(net),
        Err(why) => {
            let partition = matches!(nemesis, Nemesis::SplitTwoThree | Nemesis::SplitOneFour);
            println!(
                "nemesis: network namespaces unavailable ({why}); {}",
                if partition {
                    "partition nemesis skipped"
                } else {
                    "running on 127.0.0.1"
                }
            );
            if partition {
                return;
            }
            None
        }
    };
    let mut nodes = Nodes::start(net, config);
    // The pause and the 1|4 split take the group's leader away with the
    // counter's primary (an election comes before the takeover: the slowest
    // case); the others hit whichever node the counter's name gives.
    let counter = match nemesis {
        Nemesis::Pause | Nemesis::SplitOneFour => match nodes.leader() {
            Some(leader) => name_with_primary(&nodes, "counter", leader),
            None => "global/nemesis-counter".to_owned(),
        },
        Nemesis::SplitTwoThree | Nemesis::KillRestart => "global/nemesis-counter".to_owned(),
    };
    until_ok(&nodes, 0, &["put", &counter, "-"], b"start");
    let owners = nodes.owners(&counter);
    let primary = owners[0];
    let lock = name_with_primary(&nodes, "lock", primary);
    for k in 0..TASKS {
        until_ok(
            &nodes,
            k as usize % NODES,
            &["put", &workload::task(k), "-"],
            b"task",
        );
    }
    let cut: Vec<usize> = match nemesis {
        Nemesis::SplitTwoThree => owners[..2].to_vec(),
        _ => vec![primary],
    };
    let majority: Vec<usize> = (0..NODES).filter(|i| !cut.contains(i)).collect();

    let mut clients = Clients::new();
    for i in 0..NODES {
        clients.start(i, nodes.p3ctl(i), (&counter, &lock));
    }
    thread::sleep(BEFORE);
    // Whether the fault also takes the membership group's leader away.
    let leader_cut = nodes.leader().is_some_and(|l| cut.contains(&l));
    let fault_at = clients.now();
    for i in 0..NODES {
        clients.start_takes(i, nodes.p3ctl(i));
    }
    match nemesis {
        Nemesis::SplitTwoThree | Nemesis::SplitOneFour => {
            nodes
                .net
                .as_ref()
                .expect("partitions need namespaces")
                .partition(&cut);
            thread::sleep(FAULT);
            nodes
                .net
                .as_ref()
                .expect("partitions need namespaces")
                .heal();
        }
        Nemesis::Pause => {
            nodes.nodes[primary].signal("STOP");
            thread::sleep(FAULT);
            nodes.nodes[primary].signal("CONT");
        }
        Nemesis::KillRestart => {
            nodes.nodes[primary].stop("KILL");
            thread::sleep(DOWN);
            let seed = nodes.nodes[majority[0]].addr.clone();
            nodes.nodes[primary] = nodes.launch(primary, Some(&seed));
            thread::sleep(FAULT.saturating_sub(DOWN));
        }
    }
    let healed_at = clients.now();
    thread::sleep(AFTER);
    let history = clients.finish();

    nodes.wait_members(NODES);
    let after = read_back(&nodes, &counter, &history);
    let found = check(&history, &after);
    report(
        (nemesis, leader_cut),
        &history,
        &found,
        &majority,
        (fault_at, healed_at),
    );
    let holds: Vec<&checker::Hold> = history.holds.iter().map(|o| &o.what).collect();
    let overlapping: Vec<String> = checker::overlapping_pairs(&holds)
        .iter()
        .map(|(a, b)| format!("{a:?} and {b:?}"))
        .collect();
    // The holds are listed only when they are what failed: a list of a hundred
    // would push the counts out of view.
    let holders: Vec<String> = history
        .holds
        .iter()
        .filter(|_| found.overlapping_holds + found.duplicate_tokens > 0)
        .map(|o| {
            format!(
                "node {} {:.2}s-{:.2}s {:?}",
                o.node,
                o.start.as_secs_f64(),
                o.end.as_secs_f64(),
                o.what
            )
        })
        .collect();
    let applied = checker::conflicts_applied(&history, &checker::values_seen(&history, &after));
    let shared = checker::shared_reads(&history);
    assert_eq!(
        found,
        Violations::default(),
        "{nemesis:?}: {found}\nconflicts applied: {applied:?}\nincrements from one read: {shared:?}\noverlapping: {overlapping:?}\nholds (fault at {fault_at:?}):\n{}",
        holders.join("\n")
    );
}

/// The state after the run, read through every node in turn.
fn read_back(nodes: &Nodes, counter: &str, history: &History) -> Final {
    let stat = until_ok(nodes, 0, &["stat", counter, "--json"], b"");
    let version = serde_json::from_str::<serde_json::Value>(&stat).expect("stat JSON")["version"]
        .as_u64()
        .expect("stat without version");
    let value = until_ok(nodes, 0, &["get", counter], b"");
    let acked: Vec<&String> = history
        .writes
        .iter()
        .filter(|op| op.outcome.ok())
        .map(|op| &op.what.0)
        .collect();
    let writes: HashMap<String, Option<String>> = thread::scope(|s| {
        let readers: Vec<_> = (0..NODES)
            .map(|i| {
                let mine: Vec<&String> = acked.iter().copied().skip(i).step_by(NODES).collect();
                s.spawn(move || {
                    mine.into_iter()
                        .map(|key| (key.clone(), read_one(&nodes.nodes[i], key)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        readers
            .into_iter()
            .flat_map(|r| r.join().expect("reader"))
            .collect()
    });
    Final {
        counter: (version, value),
        writes,
    }
}

/// The value of `key` read through `node`, `None` if the object does not
/// exist. A read that fails otherwise (a node still settling its map after
/// the heal answers "unavailable") says nothing about the write, so it is
/// retried until the deadline.
fn read_one(node: &NodeProc, key: &str) -> Option<String> {
    wait_for(&format!("a read of {key}"), DEADLINE, || {
        let out = node.command(&["get", key]).output().expect("p3ctl");
        if out.status.success() {
            return Some(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        String::from_utf8_lossy(&out.stderr)
            .contains("does not exist")
            .then_some(None)
    })
}

fn acked<T>(ops: &[checker::Op<T>]) -> usize {
    ops.iter().filter(|o| o.outcome.ok()).count()
}

/// One line per run: what was done, what the majority side got done during
/// the fault, and the violations.
fn report(
    (nemesis, leader_cut): (Nemesis, bool),
    history: &History,
    found: &Violations,
    majority: &[usize],
    (fault_at, healed_at): (Duration, Duration),
) {
    let during =
        |node: usize, end: Duration| majority.contains(&node) && end > fault_at && end < healed_at;
    let acked_during = history
        .cas
        .iter()
        .filter(|o| o.outcome.ok() && during(o.node, o.end))
        .count()
        + history
            .writes
            .iter()
            .filter(|o| o.outcome.ok() && during(o.node, o.end))
            .count()
        + history
            .takes
            .iter()
            .filter(|o| o.outcome.ok() && during(o.node, o.end))
            .count()
        + history
            .holds
            .iter()
            .filter(|o| during(o.node, o.end))
            .count();
    let first_cas = history
        .cas
        .iter()
        .filter(|o| o.outcome.ok() && during(o.node, o.end) && o.start > fault_at)
        .map(|o| o.end - fault_at)
        .min();
    println!(
        "nemesis {nemesis:?} (group leader cut off: {leader_cut}): {} increments ({} acked), {} takes ({} acked), {} holds, {} writes ({} acked); \
         majority side during the fault: {acked_during} ops ({:.1}/s), first increment of the counter after {first_cas:?}; {found}",
        history.cas.len(),
        acked(&history.cas),
        history.takes.len(),
        acked(&history.takes),
        history.holds.len(),
        history.writes.len(),
        acked(&history.writes),
        acked_during as f64 / (healed_at - fault_at).as_secs_f64(),
    );
    assert!(
        acked_during > 0,
        "{nemesis:?}: the majority side completed no operation during the fault"
    );
    // Any one of the counter's old owners holds every acknowledged increment,
    // so the majority side takes the counter over in every fault: within
    // seconds, unless the membership group must elect a new leader first
    // (on two loaded cores its election has taken up to 10 s). The run must
    // at least end with the counter served again.
    let served_again = history
        .cas
        .iter()
        .filter(|o| o.outcome.ok() && o.start > fault_at)
        .map(|o| o.end - fault_at)
        .min();
    let outcomes: Vec<String> = history
        .cas
        .iter()
        .filter(|o| during(o.node, o.end))
        .map(|o| format!("{:.1}s {:?}", (o.end - fault_at).as_secs_f64(), o.outcome))
        .collect();
    assert!(
        served_again.is_some(),
        "{nemesis:?}: no increment of the counter completed after the fault began; the majority side's attempts during it:\n{}",
        outcomes.join("\n")
    );
}

#[test]
fn partition_two_three() {
    run(Nemesis::SplitTwoThree, None);
}

#[test]
fn partition_two_three_on_demand() {
    run(Nemesis::SplitTwoThree, Some(ON_DEMAND));
}

#[test]
fn partition_one_four() {
    run(Nemesis::SplitOneFour, None);
}

#[test]
fn partition_one_four_on_demand() {
    run(Nemesis::SplitOneFour, Some(ON_DEMAND));
}

#[test]
fn pause_the_primary() {
    run(Nemesis::Pause, None);
}

#[test]
fn pause_the_primary_on_demand() {
    run(Nemesis::Pause, Some(ON_DEMAND));
}

#[test]
fn kill_and_restart_the_primary() {
    run(Nemesis::KillRestart, None);
}

#[test]
fn kill_and_restart_the_primary_on_demand() {
    run(Nemesis::KillRestart, Some(ON_DEMAND));
}
