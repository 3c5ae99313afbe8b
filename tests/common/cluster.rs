//! Node processes and clusters of them: `p3ctl node start` on 127.0.0.1 (or
//! in a network namespace), each in its own data directory, killed when
//! dropped; their logs kept when a test fails.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
};

use serde_json::Value;
use tempfile::TempDir;

use super::*;

/// How a child process ended, if it has (without waiting).
pub fn exited(child: &mut Option<Child>) -> Option<std::process::ExitStatus> {
    child.as_mut().and_then(|c| c.try_wait().ok().flatten())
}

/// A running node process. Dropping it kills the process.
pub struct NodeProc {
    child: Option<Child>,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its PeerId.
    pub peer_id: String,
    /// Its listen address, with `/p2p/PEERID`, for `--bootstrap`.
    pub addr: String,
    /// The network namespace it runs in, if not the test's own.
    pub netns: Option<String>,
}

impl NodeProc {
    /// Starts a node on `dir` listening on a free 127.0.0.1 port, joining through
    /// `bootstrap`, and waits until its local API answers.
    pub fn start(dir: &Path, bootstrap: &[&str]) -> NodeProc {
        Self::start_on(dir, "/ip4/127.0.0.1/tcp/0", bootstrap)
    }

    /// Like [`NodeProc::start`], listening on `listen`.
    pub fn start_on(dir: &Path, listen: &str, bootstrap: &[&str]) -> NodeProc {
        Self::start_with(dir, listen, bootstrap, &[])
    }

    /// Like [`NodeProc::start_on`], with more `node start` options (`--slots 2`).
    pub fn start_with(dir: &Path, listen: &str, bootstrap: &[&str], options: &[&str]) -> NodeProc {
        Self::start_program(Path::new(p3ctl_bin()), dir, listen, bootstrap, options)
    }

    /// Like [`NodeProc::start_with`], running `program` (a node binary built on
    /// `p3::cli::main_with`) instead of `p3ctl`.
    pub fn start_program(
        program: &Path,
        dir: &Path,
        listen: &str,
        bootstrap: &[&str],
        options: &[&str],
    ) -> NodeProc {
        Self::start_in(None, program, dir, listen, bootstrap, options)
    }

    /// Like [`NodeProc::start_program`], inside network namespace `netns` if
    /// given (then `listen` is an address of that namespace).
    pub fn start_in(
        netns: Option<&str>,
        program: &Path,
        dir: &Path,
        listen: &str,
        bootstrap: &[&str],
        options: &[&str],
    ) -> NodeProc {
        fs::create_dir_all(dir).expect("cannot create data dir");
        // Appended to: a restarted node's log follows its first life's.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .expect("cannot create node log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(["node", "start", "--listen", listen, "--data-dir"])
            .arg(dir)
            .env_remove("P3_DATA_DIR")
            // P3_TEST_RUST_LOG overrides the nodes' log filter when debugging a test.
            .env(
                "RUST_LOG",
                std::env::var("P3_TEST_RUST_LOG").unwrap_or_else(|_| "info,p3_dht=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for seed in bootstrap {
            cmd.args(["--bootstrap", seed]);
        }
        cmd.args(options);
        let child = cmd.spawn().expect("cannot spawn p3ctl node start");
        let mut node = NodeProc {
            child: Some(child),
            dir: dir.to_owned(),
            peer_id: String::new(),
            addr: String::new(),
            netns: netns.map(str::to_owned),
        };
        let status = wait_for(
            &format!("node on {} to serve its API", dir.display()),
            DEADLINE,
            || {
                node.assert_running();
                p3ctl_json_in(netns, dir, &["node", "status"])
            },
        );
        node.peer_id = status["peer_id"]
            .as_str()
            .expect("status without peer_id")
            .to_owned();
        node.addr = status["listen_addrs"][0]
            .as_str()
            .expect("status without listen address")
            .to_owned();
        node
    }

    /// Fails the test (showing the node's log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = exited(&mut self.child) {
            panic!(
                "node on {} exited with {status}; log:\n{}",
                self.dir.display(),
                self.log()
            );
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// Copies the node's log out of its data dir (which the test removes) into
    /// the target dir; one line saying where. A failing test prints this line
    /// instead of the whole log so that its panic message stays at the end of
    /// the output, where CI shows it.
    fn save_log(&self) -> String {
        let test = thread::current()
            .name()
            .unwrap_or("test")
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "-");
        let node = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "node".to_owned());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("failed-tests")
            .join(test);
        let path = dir.join(format!("{node}-{}.log", self.peer_id));
        match fs::create_dir_all(&dir).and_then(|()| fs::write(&path, self.log())) {
            Ok(()) => format!("log of node {} ({node}): {}", self.peer_id, path.display()),
            Err(e) => format!(
                "log of node {} not saved ({e}):\n{}",
                self.peer_id,
                self.log()
            ),
        }
    }

    /// OS process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("node already stopped")
    }

    /// Whether the process is still ours to signal (not stopped by [`NodeProc::stop`]).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A `kB` field of /proc/PID/status, e.g. "VmRSS" (resident memory now) or
    /// "VmHWM" (peak resident memory), in bytes.
    pub fn proc_status_bytes(&self, field: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("cannot read /proc/PID/status");
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse {line:?}"));
        kib * 1024
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits for the process to exit.
    pub fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node already stopped");
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} failed");
        child.wait().expect("cannot wait for node")
    }

    /// Sends `signal` (e.g. "STOP", "CONT") without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// `p3ctl ARGS` against this node (in its namespace), not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        p3ctl_command_in(self.netns.as_deref(), &self.dir, args)
    }

    /// `p3ctl ARGS --json` against this node.
    pub fn json(&self, args: &[&str]) -> Option<Value> {
        p3ctl_json_in(self.netns.as_deref(), &self.dir, args)
    }

    /// PeerIds in this node's routing table.
    pub fn routing_table(&self) -> Vec<String> {
        self.peers(|p| p["in_routing_table"] == true)
    }

    /// PeerIds this node has an open connection to.
    pub fn connected(&self) -> Vec<String> {
        self.peers(|p| p["connected"] == true)
    }

    fn peers(&self, keep: impl Fn(&Value) -> bool) -> Vec<String> {
        let peers = self.json(&["peers"]).unwrap_or(Value::Null);
        let mut ids: Vec<String> = peers
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| keep(p))
            .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if thread::panicking() {
                eprintln!("{}", self.save_log());
            }
        }
    }
}

/// Several nodes, the first one the seed of the others, each in its own data dir
/// under one temporary directory.
pub struct Cluster {
    /// The nodes, seed first.
    pub nodes: Vec<NodeProc>,
    /// Holds the data dirs; removed after the nodes are killed (fields drop in order).
    pub root: TempDir,
}

impl Cluster {
    /// Starts `n` nodes: node 0, then the others with node 0 as their only seed.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    /// [`Cluster::start`] with more `node start` options for every node.
    pub fn start_with(n: usize, options: &[&str]) -> Cluster {
        let root = tempfile::tempdir().expect("cannot create temp dir");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            root,
        };
        for _ in 0..n {
            cluster.add(options);
        }
        cluster
    }

    /// Starts one more node, joining through node 0; returns its index.
    pub fn add(&mut self, options: &[&str]) -> usize {
        self.add_program(Path::new(p3ctl_bin()), options)
    }

    /// [`Cluster::add`] running `program` instead of `p3ctl`.
    pub fn add_program(&mut self, program: &Path, options: &[&str]) -> usize {
        let i = self.nodes.len();
        let dir = self.root.path().join(format!("node{i}"));
        let seed = self.nodes.first().map(|n| n.addr.clone());
        let seeds: Vec<&str> = seed.iter().map(String::as_str).collect();
        let node = NodeProc::start_program(program, &dir, "/ip4/127.0.0.1/tcp/0", &seeds, options);
        self.nodes.push(node);
        i
    }

    /// The PeerIds of every node but `i`, sorted.
    pub fn others(&self, i: usize) -> Vec<String> {
        let mut ids: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.peer_id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The index of the node with PeerId `peer`.
    pub fn index_of(&self, peer: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.peer_id == peer)
    }

    /// Stops every node (node `i` with signal `signal(i)`, e.g. "TERM" or "KILL",
    /// returning the exit statuses), then starts them again on the same data dirs
    /// and new ports: node 0 first, the others joining through its new address.
    pub fn restart_all(
        &mut self,
        signal: impl Fn(usize) -> &'static str,
    ) -> Vec<std::process::ExitStatus> {
        let statuses = self
            .nodes
            .iter_mut()
            .enumerate()
            .map(|(i, node)| node.stop(signal(i)))
            .collect();
        self.start_stopped();
        statuses
    }

    /// Starts every (stopped) node again on its data dir: node 1 first, the
    /// others joining through it.
    pub fn start_stopped(&mut self) {
        let dirs: Vec<PathBuf> = self.nodes.iter().map(|n| n.dir.clone()).collect();
        self.nodes.clear();
        self.nodes.push(NodeProc::start(&dirs[0], &[]));
        let seed = self.nodes[0].addr.clone();
        for dir in &dirs[1..] {
            self.nodes.push(NodeProc::start(dir, &[&seed]));
        }
    }

    /// Waits until every node's membership map lists all the nodes: before
    /// that, a node may refuse writes as not yet a member.
    pub fn wait_members(&self) {
        let n = self.nodes.len();
        for (i, node) in self.nodes.iter().enumerate() {
            wait_for(
                &format!("node {i}'s map to list all {n} nodes"),
                DEADLINE,
                || {
                    let status = node.json(&["node", "status"])?;
                    let members = status["membership"]["members"].as_array()?.len();
                    (members == n).then_some(())
                },
            );
        }
    }

    /// Waits until every node's routing table holds every other node.
    pub fn wait_formed(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            let others = self.others(i);
            wait_for(
                &format!(
                    "node {i}'s routing table to hold the {} others",
                    others.len()
                ),
                DEADLINE,
                || {
                    let table = node.routing_table();
                    others.iter().all(|p| table.contains(p)).then_some(())
                },
            );
        }
    }
}
