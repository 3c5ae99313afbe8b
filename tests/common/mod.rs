//! Test harness: real `p3ctl` node processes on 127.0.0.1, each in its own
//! temporary data directory, killed when the test ends (pass or fail).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tempfile::TempDir;

/// Generous: CI machines are slow and run several test binaries' nodes at once.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The `p3ctl` binary under test.
pub fn p3ctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_p3ctl")
}

/// Runs `p3ctl ARGS --data-dir DIR` to completion.
pub fn p3ctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(p3ctl_bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("P3_DATA_DIR")
        .output()
        .expect("cannot run p3ctl")
}

/// Runs a `--json` command and parses its output; `None` if it failed.
pub fn p3ctl_json(dir: &Path, args: &[&str]) -> Option<Value> {
    let mut args = args.to_vec();
    args.push("--json");
    let out = p3ctl(dir, &args);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("p3ctl printed invalid JSON"))
}

/// Polls `check` until it returns `Some`, failing the test with `what` once the
/// deadline passes. The pause between polls only paces the polling.
pub fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(200));
    }
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
}

impl NodeProc {
    /// Starts a node on `dir` listening on a free 127.0.0.1 port, joining through
    /// `bootstrap`, and waits until its local API answers.
    pub fn start(dir: &Path, bootstrap: &[&str]) -> NodeProc {
        Self::start_on(dir, "/ip4/127.0.0.1/tcp/0", bootstrap)
    }

    /// Like [`NodeProc::start`], listening on `listen`.
    pub fn start_on(dir: &Path, listen: &str, bootstrap: &[&str]) -> NodeProc {
        fs::create_dir_all(dir).expect("cannot create data dir");
        let log = fs::File::create(dir.join("node.log")).expect("cannot create node log");
        let mut cmd = Command::new(p3ctl_bin());
        cmd.args(["node", "start", "--listen", listen, "--data-dir"])
            .arg(dir)
            .env_remove("P3_DATA_DIR")
            .env("RUST_LOG", "info,p3_dht=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for seed in bootstrap {
            cmd.args(["--bootstrap", seed]);
        }
        let child = cmd.spawn().expect("cannot spawn p3ctl node start");
        let mut node = NodeProc {
            child: Some(child),
            dir: dir.to_owned(),
            peer_id: String::new(),
            addr: String::new(),
        };
        let status = wait_for(
            &format!("node on {} to serve its API", dir.display()),
            DEADLINE,
            || {
                node.assert_running();
                p3ctl_json(dir, &["node", "status"])
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
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
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

    /// OS process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("node already stopped")
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

    /// `p3ctl ARGS --json` against this node.
    pub fn json(&self, args: &[&str]) -> Option<Value> {
        p3ctl_json(&self.dir, args)
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
                eprintln!("--- log of node {} ---\n{}", self.dir.display(), self.log());
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
        let root = tempfile::tempdir().expect("cannot create temp dir");
        let mut nodes = vec![NodeProc::start(&root.path().join("node0"), &[])];
        let seed = nodes[0].addr.clone();
        for i in 1..n {
            nodes.push(NodeProc::start(
                &root.path().join(format!("node{i}")),
                &[&seed],
            ));
        }
        Cluster { nodes, root }
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
