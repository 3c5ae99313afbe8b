//! Sequential throughput of one large file through a mount, against the same
//! file through `p3ctl put` / `p3ctl get` and a plain local-disk copy, on a
//! local 3-node cluster (separate `p3ctl` processes on 127.0.0.1, one disk).
//!
//! Run with `cargo bench --bench mount` (1 GiB; `P3_BENCH_QUICK=1` for 64 MiB).
//! Every write is timed until it is durable: the local copy until `sync FILE`
//! returns, a put and a mount write (`cp` into the mount: the close sends the
//! file) until the owners acknowledge. Reads go to a local file. Needs
//! `/dev/fuse`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{p3ctl_ok, wait_for, Cluster, DEADLINE};

/// The `p3ctl mount` process; unmounts (SIGTERM) when dropped.
struct Mount(Child, std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.1)
            .stderr(Stdio::null())
            .status();
    }
}

fn is_mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == dir.to_str())
}

fn timed(what: &str, bytes: u64, run: impl FnOnce()) -> f64 {
    let start = Instant::now();
    run();
    let secs = start.elapsed().as_secs_f64();
    let mbps = bytes as f64 / secs / 1e6;
    println!("{what:<34} {secs:>8.2} s {mbps:>9.1} MB/s");
    mbps
}

fn sh(script: &str) {
    let status = Command::new("sh")
        .args(["-c", script])
        .status()
        .expect("sh");
    assert!(status.success(), "`{script}` failed");
}

fn main() {
    if !Path::new("/dev/fuse").exists() {
        println!(
            "mount bench: skipped, /dev/fuse is missing (install fuse3 / load the fuse module)"
        );
        return;
    }
    let bytes: u64 = if std::env::var_os("P3_BENCH_QUICK").is_some() {
        64 << 20
    } else {
        1 << 30
    };
    let started = Instant::now();
    let cluster = Cluster::start(3);
    cluster.wait_formed();
    let work = cluster.root.path();
    // Different contents for the two writes: the space stores a value once,
    // so a second write of the same bytes would not move them again.
    let (source, node) = (work.join("source.bin"), &cluster.nodes[0].dir);
    let hash = common::write_pseudo_random_file(&source, bytes, 7);
    let other = work.join("other.bin");
    let other_hash = common::write_pseudo_random_file(&other, bytes, 8);
    p3ctl_ok(node, &["ns", "create", "bench"]);
    let dir = work.join("mnt");
    std::fs::create_dir_all(&dir).expect("mount point");
    let child = common::p3ctl_command(node, &["mount", "bench", dir.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("mount.log")).expect("log"))
        .spawn()
        .expect("p3ctl mount");
    let _mount = Mount(child, dir.clone());
    wait_for("the mount", DEADLINE, || is_mounted(&dir).then_some(()));

    println!("{} MiB, 3 nodes, R = 3, mount on node 0", bytes >> 20);
    let (s, w) = (source.display(), work.display());
    let local = timed("local disk: cp + sync", bytes, || {
        sh(&format!("cp {s} {w}/copy.bin && sync {w}/copy.bin"))
    });
    let put = timed("p3ctl put", bytes, || {
        p3ctl_ok(node, &["put", "bench/put.bin", &source.to_string_lossy()]);
    });
    let get = timed("p3ctl get -o", bytes, || {
        p3ctl_ok(
            node,
            &[
                "get",
                "bench/put.bin",
                "-o",
                &work.join("got.bin").to_string_lossy(),
            ],
        );
    });
    let (m, o) = (dir.display(), other.display());
    let write = timed("mount: cp into it (until close)", bytes, || {
        sh(&format!("cp {o} {m}/file.bin"))
    });
    let read = timed("mount: cp out of it", bytes, || {
        sh(&format!("cp {m}/file.bin {w}/back.bin"))
    });
    assert_eq!(
        common::blake3_file(&work.join("got.bin")).0,
        hash,
        "get differs"
    );
    assert_eq!(
        common::blake3_file(&work.join("back.bin")).0,
        other_hash,
        "mount read differs"
    );
    println!(
        "mount write = {:.0}% of put, read = {:.0}% of get; local copy {local:.0} MB/s",
        write / put * 100.0,
        read / get * 100.0
    );
    println!(
        "mount bench took {:?}",
        Duration::from_secs(started.elapsed().as_secs())
    );
}
