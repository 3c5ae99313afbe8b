//! Test harness: real `p3ctl` node processes on 127.0.0.1, each in its own
//! temporary data directory, killed when the test ends (pass or fail).

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod mount;
pub mod objects;

use std::{
    fs,
    io::{Read, Write},
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

/// `p3ctl ARGS` for the node of `dir`: `--data-dir DIR` goes before a `--`
/// (after it, everything belongs to the command `p3ctl lock` runs).
pub fn p3ctl_command(dir: &Path, args: &[&str]) -> Command {
    let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let mut cmd = Command::new(p3ctl_bin());
    cmd.args(&args[..split])
        .arg("--data-dir")
        .arg(dir)
        .args(&args[split..])
        .env_remove("P3_DATA_DIR");
    cmd
}

/// [`p3ctl_command`] run inside network namespace `netns` when one is given
/// (`ip netns exec` replaces itself with p3ctl: the pid is p3ctl's).
pub fn p3ctl_command_in(netns: Option<&str>, dir: &Path, args: &[&str]) -> Command {
    let direct = p3ctl_command(dir, args);
    let Some(ns) = netns else { return direct };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(direct.get_program())
        .args(direct.get_args())
        .env_remove("P3_DATA_DIR");
    cmd
}

/// Runs `p3ctl ARGS --data-dir DIR` to completion.
pub fn p3ctl(dir: &Path, args: &[&str]) -> Output {
    p3ctl_command(dir, args).output().expect("cannot run p3ctl")
}

/// Starts `p3ctl ARGS --data-dir DIR` without waiting for it, stdout and stderr
/// piped (collect them with `wait_with_output`).
pub fn p3ctl_spawn(dir: &Path, args: &[&str]) -> Child {
    p3ctl_command(dir, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run p3ctl")
}

/// Runs `p3ctl ARGS --data-dir DIR`, failing the test (with its stderr) unless
/// it succeeds.
pub fn p3ctl_ok(dir: &Path, args: &[&str]) -> Output {
    let out = p3ctl(dir, args);
    assert!(
        out.status.success(),
        "`p3ctl {}` against {} failed with {}: {}",
        args.join(" "),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    out
}

/// Runs `p3ctl ARGS --data-dir DIR`, expecting it to fail with a one-line error
/// on stderr; returns that line.
pub fn p3ctl_err(dir: &Path, args: &[&str]) -> String {
    let out = p3ctl(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    assert!(
        !out.status.success(),
        "`p3ctl {}` against {} should have failed; stdout: {:.300}; stderr: {stderr}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "`p3ctl {}`: the error should be one line, got:\n{stderr}",
        args.join(" ")
    );
    assert!(stderr.starts_with("p3ctl: "), "{stderr}");
    stderr
}

/// Deterministic pseudo-random bytes (SplitMix64 of `seed`): different seeds give
/// different, incompressible contents, the same seed the same contents.
pub struct PseudoRandom(u64);

impl PseudoRandom {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; len];
    PseudoRandom::new(seed).fill(&mut bytes);
    bytes
}

/// Writes `len` pseudo-random bytes from `seed` to `path` a MiB at a time (the
/// content never sits in memory whole); returns its blake3 hash in hex.
pub fn write_pseudo_random_file(path: &Path, len: u64, seed: u64) -> String {
    let mut file = std::io::BufWriter::new(fs::File::create(path).expect("cannot create file"));
    let mut rng = PseudoRandom::new(seed);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).expect("cannot write file");
        left -= n as u64;
    }
    file.flush().expect("cannot write file");
    hasher.finalize().to_hex().to_string()
}

/// The blake3 hash (hex) and size of a file, read a MiB at a time.
pub fn blake3_file(path: &Path) -> (String, u64) {
    let mut file =
        fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0; 1 << 20];
    let mut size = 0;
    loop {
        let n = file.read(&mut buf).expect("cannot read file");
        if n == 0 {
            return (hasher.finalize().to_hex().to_string(), size);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Runs a `--json` command and parses its output; `None` if it failed.
pub fn p3ctl_json(dir: &Path, args: &[&str]) -> Option<Value> {
    p3ctl_json_in(None, dir, args)
}

/// [`p3ctl_json`] inside network namespace `netns`, if given.
pub fn p3ctl_json_in(netns: Option<&str>, dir: &Path, args: &[&str]) -> Option<Value> {
    let mut args = args.to_vec();
    args.push("--json");
    let out = p3ctl_command_in(netns, dir, &args)
        .output()
        .expect("cannot run p3ctl");
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
        let dirs: Vec<PathBuf> = self.nodes.iter().map(|n| n.dir.clone()).collect();
        self.nodes.clear();
        self.nodes.push(NodeProc::start(&dirs[0], &[]));
        let seed = self.nodes[0].addr.clone();
        for dir in &dirs[1..] {
            self.nodes.push(NodeProc::start(dir, &[&seed]));
        }
        statuses
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

/// The `count` of `peers` closest to `key` by Kademlia's XOR metric, nearest
/// first: the owners of `key`, computed independently of the nodes.
pub fn closest_by_xor(key: &[u8], peers: &[String], count: usize) -> Vec<String> {
    use libp2p::{kad::KBucketKey, PeerId};
    let target = KBucketKey::new(key.to_vec());
    let mut peers: Vec<PeerId> = peers
        .iter()
        .map(|p| p.parse().expect("bad PeerId"))
        .collect();
    peers.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
    peers.iter().take(count).map(ToString::to_string).collect()
}

/// A client process that is killed when the guard drops (also when a test fails).
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Waits for the process, draining stdout and stderr while it runs (a
    /// process writing more than a pipe holds would block otherwise): whether
    /// it succeeded, its stdout and its stderr.
    pub fn finish(mut self) -> (bool, Vec<u8>, String) {
        use std::io::Read;
        let mut stdout = self.0.stdout.take();
        let out = std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(pipe) = stdout.as_mut() {
                pipe.read_to_end(&mut out).expect("cannot read stdout");
            }
            out
        });
        let mut err = String::new();
        if let Some(mut pipe) = self.0.stderr.take() {
            pipe.read_to_string(&mut err).expect("cannot read stderr");
        }
        let status = self.0.wait().expect("cannot wait for the process");
        (status.success(), out.join().expect("stdout reader"), err)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
