//! Test harness: real `p3ctl` node processes on 127.0.0.1, each in its own
//! temporary data directory, killed when the test ends (pass or fail).

#![allow(dead_code)] // each test binary uses a different part of the harness

mod cluster;
pub mod mount;
pub mod objects;
pub mod rogue;

#[allow(unused_imports)] // as above: not every binary names each
pub use cluster::{exited, Cluster, NodeProc};

use std::{
    fs,
    io::{Read, Write},
    path::Path,
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

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

/// The value of metric `name` (a gauge or a counter without labels) on the
/// node of `dir`, read from its `GET /metrics` with its token; `None` if the
/// node does not answer or has not recorded it yet.
pub fn metric(dir: &Path, name: &str) -> Option<f64> {
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("api.json")).ok()?).ok()?;
    let url = format!("http://{}/metrics", info["http"].as_str()?);
    let token = format!("Bearer {}", info["token"].as_str()?);
    let mut reply = ureq::get(&url)
        .header("Authorization", &token)
        .call()
        .ok()?;
    let text = reply.body_mut().read_to_string().ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
