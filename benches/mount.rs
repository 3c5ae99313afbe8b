//! What tools get from a mount, on local 3-node clusters (separate `p3ctl`
//! processes on 127.0.0.1, one disk; a fresh cluster for the small files and
//! another for the large file), each beside the same on local disk:
//! sequential throughput of one large file against `p3ctl put` / `p3ctl
//! get`; `tar -x` of 10,000 small files in 100 directories (files per
//! second); `ls -l` of a 10,000-entry tree, and of one directory of 10,000
//! files; `git clone` of a 5,000-file repository.
//!
//! The large file is compared in four rounds, each a put and a `cp` into the
//! mount (with contents of their own), then three gets and three `cat`s out,
//! in turns (see [`in_turns`]), after an untimed first write. A round's read
//! ratio is that of the medians of its reads (see [`READS`]); the median of
//! the rounds' ratios is reported.
//!
//! Run with `cargo bench --bench mount` (1 GiB, 10,000 files; `P3_BENCH_QUICK=1`
//! for 64 MiB and 1,000 files; `P3_BENCH_MIB=N` for an N MiB large file).
//! Every write is timed until it is durable: the local copy until `sync FILE`
//! returns, a put and a mount write (`cp` into the mount: the close sends the
//! file) until the owners acknowledge. Reads go to `/dev/null` (and are then
//! checked through files, untimed). Needs `/dev/fuse`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{p3ctl_ok, wait_for, Cluster, DEADLINE};

/// The `p3ctl mount` process, its mount point and its log; unmounts
/// (SIGTERM) when dropped, and shows the log if the bench failed.
struct Mount(Child, std::path::PathBuf, std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.2).unwrap_or_default();
            eprintln!("--- mount log ---\n{log}");
        }
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

/// Rounds of the large-file comparisons: in each, a put and a write
/// through the mount of one large file each, then a get and a read through
/// the mount of the object they made.
const ROUNDS: u64 = 4;

/// Reads of each kind per round, alternating, compared by their medians. A
/// read takes about a second, and the owners' background work (compacting
/// away what the round before removed) slowed whichever read it met by up
/// to half: one pair per round swung from 69 % to 234 %.
const READS: u64 = 3;

fn timed(what: &str, bytes: u64, run: impl FnOnce()) -> f64 {
    let start = Instant::now();
    run();
    let secs = start.elapsed().as_secs_f64();
    let mbps = bytes as f64 / secs / 1e6;
    println!("{what:<34} {secs:>8.2} s {mbps:>9.1} MB/s");
    mbps
}

/// Runs the two timed operations of a comparison, `space` (the `p3ctl`
/// command) first in even turns and `mount` first in odd ones, and returns
/// their rates, the command's first. The one that runs second finds
/// more on disk and its object overwritten, or its value already in the
/// page cache, so neither order alone is fair. Each starts after a `sync`:
/// the dirty pages the one before left (a file got, a spool) are not
/// written back on its time.
fn in_turns(turn: u64, space: impl FnOnce() -> f64, mount: impl FnOnce() -> f64) -> (f64, f64) {
    if turn % 2 == 0 {
        sh("sync");
        let space = space();
        sh("sync");
        (space, mount())
    } else {
        sh("sync");
        let mount = mount();
        sh("sync");
        (space(), mount)
    }
}

/// The middle of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (values[(n - 1) / 2] + values[n / 2]) / 2.0
}

/// The middle of `ratios` (the mean of the middle two for an even count),
/// and all of them, as percentages.
fn summary(ratios: &mut [f64]) -> String {
    let all: Vec<String> = ratios
        .iter()
        .map(|r| format!("{:.0}%", r * 100.0))
        .collect();
    let median = median(ratios);
    format!("median {:.0}% (rounds: {})", median * 100.0, all.join(", "))
}

/// Bytes free for unprivileged use on the filesystem of `dir` (`df`).
fn available_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .expect("df");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("df printed no free space for {}: {text}", dir.display()))
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
    let quick = std::env::var_os("P3_BENCH_QUICK").is_some();
    let mib: u64 = match std::env::var("P3_BENCH_MIB") {
        Ok(mib) => mib.parse().expect("P3_BENCH_MIB: a number of MiB"),
        Err(_) if quick => 64,
        Err(_) => 1024,
    };
    let bytes = mib << 20;
    let started = Instant::now();
    // The large file needs at most: two sources, three owners' copies of
    // two versions and their logs, and the two files read back.
    let (needed, free) = (12 * bytes, available_bytes(&std::env::temp_dir()));
    if free < needed {
        println!(
            "mount bench: {} MiB free under {}, {} MiB needed for a {} MiB file (set P3_BENCH_MIB lower)",
            free >> 20,
            std::env::temp_dir().display(),
            needed >> 20,
            bytes >> 20
        );
        std::process::exit(1);
    }
    // Each part on a cluster of its own: after the large files the owners
    // spend minutes compacting away the gigabytes the rounds removed, and
    // the small files' 15,000 objects make every later repair round longer.
    small_files(&Mounted::start(), quick);
    large_file(&Mounted::start(), bytes);
    println!(
        "mount bench took {:?}",
        Duration::from_secs(started.elapsed().as_secs())
    );
}

/// A fresh 3-node cluster with namespace `bench` mounted on node 0.
struct Mounted {
    // Unmounted before the nodes stop.
    _mount: Mount,
    dir: std::path::PathBuf,
    cluster: Cluster,
}

impl Mounted {
    fn start() -> Self {
        let cluster = Cluster::start(3);
        cluster.wait_formed();
        let work = cluster.root.path();
        let node = &cluster.nodes[0].dir;
        p3ctl_ok(node, &["ns", "create", "bench"]);
        let dir = work.join("mnt");
        std::fs::create_dir_all(&dir).expect("mount point");
        let log = work.join("mount.log");
        let child = common::p3ctl_command(node, &["mount", "bench", dir.to_str().expect("utf-8")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("p3ctl mount");
        let mount = Mount(child, dir.clone(), log);
        wait_for("the mount", DEADLINE, || is_mounted(&dir).then_some(()));
        Self {
            _mount: mount,
            dir,
            cluster,
        }
    }

    /// A directory for the bench's own files, beside the nodes'.
    fn work(&self) -> &Path {
        self.cluster.root.path()
    }

    /// Node 0's directory (for `p3ctl`).
    fn node(&self) -> &Path {
        &self.cluster.nodes[0].dir
    }
}

/// A large file of `bytes` through the mount and through `p3ctl`.
fn large_file(mounted: &Mounted, bytes: u64) {
    let (dir, work, node) = (&mounted.dir, mounted.work(), mounted.node());
    println!("{} MiB, 3 nodes, R = 3, mount on node 0", bytes >> 20);
    let local = {
        let source = work.join("local.bin");
        common::write_pseudo_random_file(&source, bytes, 6);
        let (s, w) = (source.display(), work.display());
        let mbps = timed("local disk: cp + sync", bytes, || {
            sh(&format!("cp {s} {w}/copy.bin && sync {w}/copy.bin"))
        });
        sh(&format!("rm {s} {w}/copy.bin"));
        mbps
    };
    // An untimed first write: the first large write into a fresh cluster
    // runs faster than any after it (the owners' stores are empty, and what
    // a write leaves for their stores to flush after its acknowledgement
    // lands on the next one), so without it the write that happens to come
    // first would be measured on different terms from all the others.
    {
        let warm_up = work.join("warm-up.bin");
        common::write_pseudo_random_file(&warm_up, bytes, 5);
        p3ctl_ok(
            node,
            &["put", "bench/warm-up.bin", &warm_up.to_string_lossy()],
        );
        p3ctl_ok(node, &["rm", "bench/warm-up.bin"]);
        std::fs::remove_file(&warm_up).expect("remove the warm-up file");
    }
    // Each write with contents of its own: the space stores a value once,
    // so a second write of the same bytes would not move them again.
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    let m = dir.display();
    for round in 0..ROUNDS {
        let source = |seed: u64| {
            let path = work.join(format!("source-{seed}.bin"));
            let hash = common::write_pseudo_random_file(&path, bytes, seed);
            (path, hash)
        };
        let ((put_from, put_hash), (cp_from, cp_hash)) =
            (source(2 * round + 7), source(2 * round + 8));
        // One name for both: its primary, which fetches the value from
        // node 0 (unless it is node 0) before the other owners fetch it
        // from the primary, decides much of a write's time.
        let name = format!("large-{round}.bin");
        let object = format!("bench/{name}");
        let (put, cp) = in_turns(
            round,
            || {
                timed("p3ctl put", bytes, || {
                    p3ctl_ok(node, &["put", &object, &put_from.to_string_lossy()]);
                })
            },
            || {
                timed("mount: cp into it (until close)", bytes, || {
                    sh(&format!("cp {} {m}/{name}", cp_from.display()))
                })
            },
        );
        writes.push(cp / put);
        // Both read what the second write left, into /dev/null: what is
        // compared is the read path, not the local disk's writeback (which
        // `get -o`'s fsync waits for and `cp` leaves for later). Both are
        // then checked, untimed, through files.
        let stored = if round % 2 == 0 { &cp_hash } else { &put_hash };
        let (mut gets, mut cats) = (Vec::new(), Vec::new());
        for turn in 0..READS {
            let (get, cat) = in_turns(
                round + turn,
                || {
                    timed("p3ctl get -o /dev/null", bytes, || {
                        p3ctl_ok(node, &["get", &object, "-o", "/dev/null"]);
                    })
                },
                || {
                    timed("mount: cat out of it > /dev/null", bytes, || {
                        sh(&format!("cat {m}/{name} > /dev/null"))
                    })
                },
            );
            gets.push(get);
            cats.push(cat);
        }
        reads.push(median(&mut cats) / median(&mut gets));
        let (got, back) = (work.join("got.bin"), work.join("back.bin"));
        p3ctl_ok(node, &["get", &object, "-o", &got.to_string_lossy()]);
        sh(&format!("cp {m}/{name} {}", back.display()));
        assert_eq!(&common::blake3_file(&got).0, stored, "get differs");
        assert_eq!(&common::blake3_file(&back).0, stored, "mount read differs");
        // What the next round measures should not depend on the space
        // this one filled.
        p3ctl_ok(node, &["rm", &object]);
        for path in [&put_from, &cp_from, &got, &back] {
            std::fs::remove_file(path).expect("remove a file of the round");
        }
    }
    println!("mount write / put: {}", summary(&mut writes));
    println!(
        "mount read / get: {}; local copy {local:.0} MB/s",
        summary(&mut reads)
    );
}

/// Seconds `script` takes (run by `sh`, which must succeed).
fn seconds(script: &str) -> f64 {
    let start = Instant::now();
    sh(script);
    start.elapsed().as_secs_f64()
}

/// Many small files: `tar -x`, `ls -l`, `git clone`, into the mount and
/// into a local directory.
fn small_files(mounted: &Mounted, quick: bool) {
    let (mnt, work) = (&mounted.dir, mounted.work());
    let (files, repo_files) = if quick { (1_000, 500) } else { (10_000, 5_000) };
    let (m, w) = (mnt.display(), work.display());
    // A source tree: 100 directories of small files (1-4 KiB, like code).
    sh(&format!(
        "mkdir -p {w}/tree && cd {w}/tree && for d in $(seq 0 99); do mkdir d$d; done && \
         awk 'BEGIN {{ for (i = 0; i < {files}; i++) {{ f = sprintf(\"d%d/f%d.c\", i % 100, i); \
           n = 1024 + (i * 37) % 3072; s = \"\"; while (length(s) < n) s = s \"int x\" i \" = \" i \";\\n\"; \
           printf \"%s\", s > f; close(f) }} }}' && tar -cf {w}/tree.tar -C {w}/tree ."
    ));
    let rate = |secs: f64| files as f64 / secs;
    let local = seconds(&format!(
        "mkdir {w}/untar && tar -xf {w}/tree.tar -C {w}/untar && sync"
    ));
    let mounted = seconds(&format!(
        "mkdir {m}/untar && tar -xf {w}/tree.tar -C {m}/untar"
    ));
    println!(
        "tar -x of {files} small files: local disk {:.0} files/s, mount {:.0} files/s",
        rate(local),
        rate(mounted)
    );
    let local = seconds(&format!("ls -lR {w}/untar > /dev/null"));
    let mounted = seconds(&format!("ls -lR {m}/untar > /dev/null"));
    println!("ls -lR of {files} entries: local disk {local:.3} s, mount {mounted:.3} s");
    sh(&format!("diff -r {w}/tree {m}/untar"));

    // One directory of as many files: every lookup `ls -l` makes in it is
    // answered from one listing of `files` names.
    sh(&format!(
        "mkdir -p {w}/flat && cd {w}/flat && \
         awk 'BEGIN {{ for (i = 0; i < {files}; i++) {{ f = sprintf(\"f%05d\", i); print i > f; close(f) }} }}' && \
         mkdir {m}/flat && tar -cf - . | tar -xf - -C {m}/flat"
    ));
    let local = seconds(&format!("ls -l {w}/flat > /dev/null"));
    let mounted = seconds(&format!("ls -l {m}/flat > /dev/null"));
    println!(
        "ls -l of one directory of {files} files: local disk {local:.3} s, mount {mounted:.3} s"
    );
    sh(&format!("diff -r {w}/flat {m}/flat"));

    // A repository of `repo_files` files in one commit.
    sh(&format!(
        "mkdir {w}/repo && cd {w}/repo && git init -q && \
         tar -xf {w}/tree.tar && find . -name '*.c' | sort | tail -n +{} | xargs rm -f && \
         git add -A && git -c user.email=b@example.com -c user.name=bench commit -qm tree",
        repo_files + 1
    ));
    let local = seconds(&format!(
        "git clone -q --no-local {w}/repo {w}/clone && sync"
    ));
    let mounted = seconds(&format!("git clone -q --no-local {w}/repo {m}/clone"));
    println!("git clone of {repo_files} files: local disk {local:.2} s, mount {mounted:.2} s");
    sh(&format!(
        "cd {m}/clone && git fsck --no-progress 2>/dev/null && git status --porcelain | wc -l | grep -qx 0"
    ));
}
