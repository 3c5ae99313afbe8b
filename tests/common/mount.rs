//! Harness for mount tests: a `p3ctl mount` process that is unmounted and
//! killed when it drops, and shell commands with a time limit so a hung mount
//! fails a test instead of hanging it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{p3ctl_command, wait_for, Cluster, DEADLINE};

/// The namespace every mount test mounts.
pub const NS: &str = "fs";

/// Longest any single shell command may take before it counts as hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether FUSE is missing; says so, since a mount test then returns early
/// (the only allowed skip).
pub fn fuse_missing() -> bool {
    let missing = !Path::new("/dev/fuse").exists();
    if missing {
        eprintln!("skipping: /dev/fuse is missing (install fuse3 / load the fuse module)");
    }
    missing
}

/// A cluster of `n` nodes with namespace [`NS`].
pub fn cluster_with_ns(n: usize) -> Cluster {
    let cluster = Cluster::start(n);
    if n > 1 {
        cluster.wait_formed();
        cluster.wait_members();
    }
    super::p3ctl_ok(&cluster.nodes[0].dir, &["ns", "create", NS]);
    cluster
}

/// Mounts of [`NS`] on node 1 and node 3 of a three-node cluster.
pub fn two_mounts() -> (Cluster, Mount, Mount) {
    let cluster = cluster_with_ns(3);
    let m1 = Mount::on(&cluster, 0, "m1", false);
    let m3 = Mount::on(&cluster, 2, "m3", false);
    (cluster, m1, m3)
}

/// Whether `dir` (canonical) is a mount point, per /proc/self/mountinfo.
pub fn is_mounted(dir: &Path) -> bool {
    let want = dir.to_str().expect("non-UTF-8 mount dir");
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|point| point.replace("\\040", " ") == want)
}

/// Sends `kill -SIGNAL` to `pid`, best effort.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

/// A running `p3ctl mount` process. Dropping it sends SIGTERM, waits up to
/// 10 s, then SIGKILLs it and lazily unmounts, so no stale mount outlives a test.
pub struct Mount {
    child: Option<Child>,
    /// The mount point (canonical).
    dir: PathBuf,
    /// The process's stderr (its stdout, which should stay empty, goes to DIR.out).
    log: PathBuf,
}

impl Mount {
    /// Mounts `NS` at `cluster.root/name` (created) through node `i`; waits
    /// until mounted.
    pub fn on(cluster: &Cluster, i: usize, name: &str, read_only: bool) -> Mount {
        let dir = cluster.root.path().join(name);
        fs::create_dir_all(&dir).expect("cannot create mount dir");
        let dir = fs::canonicalize(&dir).expect("cannot resolve mount dir");
        let (log, out) = (dir.with_extension("log"), dir.with_extension("out"));
        let dir_arg = dir.to_str().expect("non-UTF-8 mount dir");
        let mut args = vec!["mount", NS, dir_arg];
        if read_only {
            args.push("--read-only");
        }
        let child = p3ctl_command(&cluster.nodes[i].dir, &args)
            .env(
                "RUST_LOG",
                std::env::var("P3_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("cannot create mount stdout"))
            .stderr(fs::File::create(&log).expect("cannot create mount log"))
            .spawn()
            .expect("cannot spawn p3ctl mount");
        let mut mount = Mount {
            child: Some(child),
            dir,
            log,
        };
        let what = format!("{} to be mounted", mount.dir.display());
        wait_for(&what, DEADLINE, || {
            mount.assert_running();
            is_mounted(&mount.dir).then_some(())
        });
        mount
    }

    /// `DIR/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// `DIR/rel` as a shell-quoted word.
    pub fn q(&self, rel: &str) -> String {
        q(&self.dir.join(rel))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("mount ended")
    }

    /// Fails the test (showing the log) if the mount process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = super::exited(&mut self.child) {
            panic!(
                "p3ctl mount exited with {status}; log:\n{}",
                self.log_text()
            );
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory (VmHWM) of the mount process, in bytes.
    pub fn peak_memory(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap();
        kib.trim().trim_end_matches(" kB").parse::<u64>().unwrap() * 1024
    }

    /// Waits (bounded) for the process to exit after `how` (e.g. "SIGTERM");
    /// fails the test unless it exited 0, unmounted and printed nothing on stdout.
    pub fn assert_ends_cleanly(&mut self, how: &str) {
        let child = self.child.as_mut().expect("mount already ended");
        let status = wait_for("p3ctl mount to exit", DEADLINE, || {
            child.try_wait().unwrap()
        });
        self.child = None;
        let log = self.log_text();
        assert!(
            status.success(),
            "mount after {how} exited with {status}:\n{log}"
        );
        let stdout = fs::read_to_string(self.dir.with_extension("out")).unwrap();
        assert!(stdout.is_empty(), "mount printed on stdout: {stdout}");
        if is_mounted(&self.dir) {
            let start = Instant::now();
            while is_mounted(&self.dir) && start.elapsed() < Duration::from_secs(5) {
                thread::sleep(Duration::from_millis(50));
            }
            let later = match is_mounted(&self.dir) {
                true => "and still 5 s later (a stale mount)".to_owned(),
                false => format!("gone {:?} later", start.elapsed()),
            };
            panic!("still mounted after {how} and exit 0, {later}");
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
        }
        if thread::panicking() {
            eprintln!(
                "--- log of mount {} ---\n{}",
                self.dir.display(),
                self.log_text()
            );
        }
    }
}

/// `path` as a single-quoted shell word.
pub fn q(path: &Path) -> String {
    let path = path.to_str().expect("non-UTF-8 path");
    format!("'{}'", path.replace('\'', r"'\''"))
}

/// Runs `sh -c CMD`, killed after `limit`; panics if it had to be killed.
pub fn sh_within(cmd: &str, limit: Duration) -> Output {
    let out = Command::new("timeout")
        .args(["-s", "KILL", &limit.as_secs().to_string(), "sh", "-c", cmd])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run timeout sh -c");
    assert!(
        out.status.code() != Some(137),
        "`{cmd}` hung: killed after {limit:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn sh(cmd: &str) -> Output {
    sh_within(cmd, COMMAND_TIMEOUT)
}

/// Runs `cmd`, failing the test unless it succeeds; its stdout.
pub fn sh_ok(cmd: &str) -> String {
    sh_ok_within(cmd, COMMAND_TIMEOUT)
}

pub fn sh_ok_within(cmd: &str, limit: Duration) -> String {
    let out = sh_within(cmd, limit);
    assert!(
        out.status.success(),
        "`{cmd}` failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd`, failing the test unless it fails with `error` (strerror text) on stderr.
pub fn sh_fails_with(cmd: &str, error: &str) {
    let out = sh(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed = !out.status.success() && stderr.contains(error);
    assert!(
        failed,
        "`{cmd}`: want {error:?}, got {}: {stderr}",
        out.status
    );
}

/// Polls `cmd` until it succeeds (the other mount learns of changes through
/// its watch, within milliseconds; see `tests/mount_freshness.rs` for the
/// bound); fails the test with its last output after [`DEADLINE`].
pub fn eventually(what: &str, cmd: &str) {
    let start = Instant::now();
    loop {
        let out = sh(cmd);
        if out.status.success() {
            eprintln!("{what}: after {:?}", start.elapsed());
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}: `{cmd}` still fails with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        thread::sleep(Duration::from_millis(200));
    }
}
