//! `p3ctl mount`: a namespace as a directory through real FUSE, end to end. A
//! tree copied into one mount reads back identical through a mount on another
//! node; puts, renames, removals, overwrites, appends, truncation and
//! directories made in one place show up in the other mount without
//! remounting; writes reach the space on close or fsync, never half-done; a
//! 300 MiB file passes through without the mount holding it in memory, and
//! while a large file's close sends it other programs are served
//! (`mount_streaming.rs` has the writes sent while they are made); xattrs
//! expose and set an object's type and metadata; errors map to the right errno
//! (also EROFS on `--read-only` mounts, EIO when the node dies); `p3ctl umount`,
//! SIGTERM and SIGINT end a mount cleanly. Real node and mount processes on
//! 127.0.0.1, each in a temp dir; commands run through `sh` with a timeout so a
//! hung mount fails the test instead of hanging it.

mod common;

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::mount::*;
use common::objects::{get, stat, MIB};
use common::{blake3_file, p3ctl_ok, wait_for, write_pseudo_random_file, KillOnDrop, DEADLINE};

/// Returns from the test, saying why, if FUSE is missing (the only allowed skip).
macro_rules! skip_without_fuse {
    () => {
        if fuse_missing() {
            return;
        }
    };
}

/// Asserts `file`'s xattrs (as getfattr prints them) include `want`; all of them.
fn assert_xattrs(file: &str, want: &[(&str, &str)]) -> BTreeMap<String, String> {
    let attrs: BTreeMap<String, String> =
        sh_ok(&format!("getfattr -d -m - --absolute-names {file}"))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
    for (name, value) in want {
        assert_eq!(
            attrs.get(*name).map(String::as_str),
            Some(*value),
            "{file}: {attrs:?}"
        );
    }
    attrs
}

#[test]
fn copied_tree_reads_back_identical_through_both_mounts() {
    skip_without_fuse!();
    let (cluster, m1, m3) = two_mounts();
    let src = cluster.root.path().join("src");
    for d in ["nested/deeper/deepest", "dir with spaces", "empty dir"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("small.txt"), b"hello\n").unwrap();
    fs::write(src.join("name with spaces.txt"), b"spaced out\n").unwrap();
    fs::write(src.join("nested/deeper/deepest/leaf.txt"), b"leaf\n").unwrap();
    fs::write(src.join("dir with spaces/a file.txt"), b"inside\n").unwrap();
    write_pseudo_random_file(&src.join("nested/seventy.bin"), 70 * 1024, 70);
    write_pseudo_random_file(&src.join("big.bin"), 5 * MIB, 5);

    sh_ok(&format!("cp -r {} {}", q(&src), m1.q("tree")));
    sh_ok(&format!("diff -r {} {}", q(&src), m1.q("tree")));
    eventually(
        "the tree copied into mount 1 to read back identical through mount 3",
        &format!("diff -r {} {}", q(&src), m3.q("tree")),
    );
    // Sizes in the listing come from the objects.
    let size = sh_ok(&format!("stat -c %s {}", m3.q("tree/big.bin")));
    assert_eq!(size.trim(), (5 * MIB).to_string());
}

#[test]
fn object_put_elsewhere_appears_in_both_mounts() {
    skip_without_fuse!();
    let (cluster, m1, m3) = two_mounts();
    let file = cluster.root.path().join("file.bin");
    write_pseudo_random_file(&file, 100 * 1024, 3);
    let path = format!("{NS}/some/dir/file.bin");
    p3ctl_ok(
        &cluster.nodes[1].dir,
        &["put", &path, file.to_str().unwrap()],
    );
    for (name, m) in [("mount 1", &m1), ("mount 3", &m3)] {
        eventually(
            &format!("the put object to appear in {name}"),
            &format!("cmp {} {}", q(&file), m.q("some/dir/file.bin")),
        );
        let listing = sh_ok(&format!("ls {}", m.q("some/dir")));
        assert_eq!(listing.trim(), "file.bin", "{name}");
        // Size and mtime come from the object.
        let meta = stat(&cluster.nodes[1].dir, &path);
        let got = sh_ok(&format!("stat -c '%s %Y' {}", m.q("some/dir/file.bin")));
        let (size, mtime) = got.trim().split_once(' ').unwrap();
        assert_eq!(size, "102400", "{name}");
        let want = meta["modified_ms"].as_u64().unwrap() / 1000;
        let mtime: u64 = mtime.parse().unwrap();
        assert!(
            mtime.abs_diff(want) <= 1,
            "{name}: mtime {mtime}, object {meta}"
        );
    }
}

#[test]
fn changes_in_one_mount_show_in_the_other() {
    skip_without_fuse!();
    let (cluster, m1, m3) = two_mounts();
    let (a, b) = (m1.q(""), m3.q(""));
    sh_ok(&format!(
        "cd {a} && printf alpha > a.txt && printf bravo > b.txt && mkdir -p d/sub gone/inner \
         && printf x > d/x.txt && printf y > d/sub/y.txt && printf z > gone/z.txt \
         && printf w > gone/inner/w.txt"
    ));
    eventually(
        "the files written in mount 1 to show in mount 3",
        &format!(
            "cd {b} && [ \"$(cat a.txt b.txt d/x.txt d/sub/y.txt gone/z.txt gone/inner/w.txt)\" = alphabravoxyzw ]"
        ),
    );

    sh_ok(&format!("mv {a}/a.txt {a}/moved.txt"));
    eventually(
        "a renamed file to show under its new name only",
        &format!("cd {b} && [ \"$(cat moved.txt)\" = alpha ] && ! [ -e a.txt ]"),
    );
    sh_ok(&format!("mv {a}/d {a}/d2"));
    eventually(
        "a renamed directory to show under its new name only",
        &format!(
            "cd {b} && [ \"$(cat d2/x.txt d2/sub/y.txt)\" = xy ] && ! [ -e d ] && [ -d d2/sub ]"
        ),
    );
    sh_ok(&format!("rm -r {a}/gone"));
    eventually("a removed tree to vanish", &format!("! [ -e {b}/gone ]"));
    assert!(
        !sh_ok(&format!("ls -R {b}")).contains("gone"),
        "removed tree still listed"
    );

    let other = cluster.root.path().join("other");
    fs::write(&other, "a longer replacement\n").unwrap();
    sh_ok(&format!("cp {} {a}/b.txt", q(&other)));
    eventually(
        "an overwritten file to show its new bytes",
        &format!("cmp {} {b}/b.txt", q(&other)),
    );
    sh_ok(&format!("echo x >> {a}/b.txt"));
    eventually(
        "an append to show",
        &format!("[ \"$(cat {b}/b.txt)\" = \"$(printf 'a longer replacement\\nx')\" ]"),
    );
    sh_ok(&format!("truncate -s 3 {a}/b.txt"));
    eventually(
        "a truncation to show",
        &format!("[ \"$(stat -c %s {b}/b.txt)\" = 3 ] && [ \"$(cat {b}/b.txt)\" = 'a l' ]"),
    );
    let got = p3ctl_ok(&cluster.nodes[1].dir, &["get", &format!("{NS}/b.txt")]).stdout;
    assert_eq!(got, b"a l", "the space holds the truncated file");

    sh_ok(&format!("touch {a}/new"));
    eventually(
        "a touched file to show, empty",
        &format!("[ -f {b}/new ] && [ \"$(stat -c %s {b}/new)\" = 0 ]"),
    );
    sh_ok(&format!("mkdir {a}/empty"));
    eventually(
        "a new empty directory to show",
        &format!("[ -d {b}/empty ] && [ -z \"$(ls -A {b}/empty)\" ]"),
    );
    let marker = stat(&cluster.nodes[0].dir, &format!("{NS}/empty/"));
    assert_eq!(marker["type"], "p3.directory", "{marker}");
    sh_ok(&format!("rmdir {a}/empty"));
    eventually(
        "a removed directory to vanish",
        &format!("! [ -e {b}/empty ]"),
    );
}

#[test]
fn a_large_files_close_does_not_hold_up_other_programs() {
    skip_without_fuse!();
    const SIZE: u64 = 128 * MIB;
    /// Rounds of listing and reading small files that must complete while
    /// the large file's close is sending it; served one request at a time,
    /// the first round would wait for the whole send.
    const ROUNDS: usize = 10;
    let cluster = cluster_with_ns(3);
    let m1 = Mount::on(&cluster, 0, "m1", false);
    fs::create_dir(m1.path("small")).unwrap();
    for i in 0..5 {
        fs::write(m1.path(&format!("small/{i}")), format!("small file {i}")).unwrap();
    }
    let big = m1.path("big.bin");
    let (said, heard) = mpsc::channel();
    let writer = thread::spawn(move || {
        let mut file = fs::File::create(&big).unwrap();
        let chunk = vec![5u8; MIB as usize];
        for _ in 0..SIZE / MIB {
            file.write_all(&chunk).unwrap();
        }
        said.send("closing").unwrap();
        drop(file); // the close sends the value and returns once it is stored
        said.send("closed").unwrap();
    });
    assert_eq!(heard.recv_timeout(DEADLINE), Ok("closing"));
    let mut rounds = 0;
    while rounds < ROUNDS && heard.try_recv().is_err() {
        // Each round reaches the mount: listings and opens are never
        // answered from the kernel's caches.
        let names = fs::read_dir(m1.path("small")).unwrap().count();
        assert_eq!(names, 5);
        for i in 0..5 {
            let text = fs::read_to_string(m1.path(&format!("small/{i}"))).unwrap();
            assert_eq!(text, format!("small file {i}"));
        }
        rounds += 1;
    }
    writer.join().unwrap();
    assert_eq!(
        rounds, ROUNDS,
        "only {rounds} rounds of small reads were served while the large file was being sent"
    );
    let meta = stat(&cluster.nodes[1].dir, &format!("{NS}/big.bin"));
    assert_eq!(meta["size"].as_u64(), Some(SIZE), "{meta}");
}

#[test]
fn large_file_passes_through_without_buffering_in_memory() {
    skip_without_fuse!();
    const SIZE: u64 = 300 * MIB;
    // Far below one copy of the file: a mount that held it whole would exceed it.
    const PEAK_BOUND: u64 = 150 * MIB;
    const LONG: Duration = Duration::from_secs(900);
    let (cluster, m1, m3) = two_mounts();
    let source = cluster.root.path().join("large.in");
    let want = write_pseudo_random_file(&source, SIZE, 300);

    let t = Instant::now();
    sh_ok_within(&format!("cp {} {}", q(&source), m1.q("large.bin")), LONG);
    let copy_in = t.elapsed();
    eventually(
        "the large file's full size to show in mount 3",
        &format!("[ \"$(stat -c %s {})\" = {SIZE} ]", m3.q("large.bin")),
    );
    let t = Instant::now();
    sh_ok_within(&format!("cmp {} {}", q(&source), m3.q("large.bin")), LONG);
    let read_back = t.elapsed();

    let copy = cluster.root.path().join("large.out");
    let path = format!("{NS}/large.bin");
    p3ctl_ok(
        &cluster.nodes[1].dir,
        &["get", &path, "-o", copy.to_str().unwrap()],
    );
    assert_eq!(
        blake3_file(&copy),
        (want.clone(), SIZE),
        "p3ctl get of the file"
    );
    let meta = stat(&cluster.nodes[1].dir, &path);
    assert_eq!(meta["hash"], want.as_str(), "{meta}");

    // A rename is copied by the node (the value does not pass through the
    // mount): same hash under the new name, the old name gone.
    sh_ok_within(
        &format!("mv {} {}", m3.q("large.bin"), m3.q("moved.bin")),
        LONG,
    );
    let moved = stat(&cluster.nodes[1].dir, &format!("{NS}/moved.bin"));
    assert_eq!(moved["hash"], want.as_str(), "{moved}");
    sh_fails_with(
        &format!("stat {}", m3.q("large.bin")),
        "No such file or directory",
    );

    let (peak1, peak3) = (m1.peak_memory(), m3.peak_memory());
    eprintln!(
        "large file: cp in {copy_in:?}, cmp via mount 3 {read_back:?}; VmHWM writer mount {} MiB, reader mount {} MiB",
        peak1 / MIB,
        peak3 / MIB
    );
    assert!(
        peak1.max(peak3) < PEAK_BOUND,
        "a mount peaked over the bound"
    );
}

#[test]
fn xattrs_show_and_set_type_and_metadata() {
    skip_without_fuse!();
    let (cluster, m1, m3) = two_mounts();
    sh_ok(&format!("printf 'doc\\n' > {}", m1.q("doc.txt")));
    let doc = m1.q("doc.txt");
    sh_ok(&format!(
        "setfattr -n user.p3.type -v text/plain {doc} && setfattr -n user.p3.meta.owner -v alice {doc}"
    ));
    let meta = stat(&cluster.nodes[1].dir, &format!("{NS}/doc.txt"));
    assert_eq!(meta["type"], "text/plain", "{meta}");
    assert_eq!(meta["meta"]["owner"], "alice", "{meta}");
    assert_eq!(meta["size"], 4, "setting xattrs keeps the content: {meta}");

    let file = m3.q("doc.txt");
    eventually(
        "the xattrs set through mount 1 to show in mount 3",
        &format!(
            "getfattr -d -m - --absolute-names {file} | grep -qx 'user.p3.meta.owner=\"alice\"' \
             && getfattr -d -m - --absolute-names {file} | grep -qx 'user.p3.type=\"text/plain\"'"
        ),
    );
    let version = meta["version"].to_string();
    assert_xattrs(
        &file,
        &[
            ("user.p3.hash", meta["hash"].as_str().unwrap()),
            ("user.p3.version", &version),
        ],
    );
    let out = sh(&format!("setfattr -n user.p3.hash -v 00 {file}"));
    assert!(!out.status.success(), "user.p3.hash must be read-only");
    // Names outside user.p3. (the kernel asks for security.capability
    // before writes) are never stored: no such attribute, not an error.
    let out = sh(&format!("getfattr -n security.capability {file}"));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("No such attribute"),
        "security.capability: {said}"
    );
    let out = sh(&format!("setfattr -n user.other -v 1 {file}"));
    assert!(!out.status.success(), "only user.p3. names can be set");

    // An object put with a type and metadata shows them as xattrs.
    let value = cluster.root.path().join("value");
    fs::write(&value, "v\n").unwrap();
    let path = format!("{NS}/put.bin");
    let value = value.to_str().unwrap();
    let (ty, k, n) = ("application/x-thing", "k=v", "n=3");
    p3ctl_ok(
        &cluster.nodes[2].dir,
        &["put", &path, value, "--type", ty, "--meta", k, "--meta", n],
    );
    eventually(
        "the put object to show in mount 1",
        &format!("[ -f {} ]", m1.q("put.bin")),
    );
    let attrs = assert_xattrs(
        &m1.q("put.bin"),
        &[
            ("user.p3.type", "application/x-thing"),
            ("user.p3.meta.k", "v"),
        ],
    );
    let n = attrs
        .get("user.p3.meta.n")
        .and_then(|n| n.parse::<f64>().ok());
    assert_eq!(n, Some(3.0), "numbers print as numbers: {attrs:?}");
}

#[test]
fn errors_map_to_errno_and_read_only_mounts_refuse_writes() {
    skip_without_fuse!();
    let cluster = cluster_with_ns(1);
    let dir = &cluster.nodes[0].dir;
    let m = Mount::on(&cluster, 0, "rw", false);
    let ro = Mount::on(&cluster, 0, "ro", true);
    let a = m.q("");

    sh_fails_with(&format!("cat {a}/missing"), "No such file or directory");
    sh_fails_with(&format!("rm {a}/missing"), "No such file or directory");
    sh_fails_with(&format!("ls {a}/missing-dir"), "No such file or directory");
    sh_ok(&format!("mkdir {a}/d && printf hi > {a}/f.txt"));
    sh_fails_with(&format!("mkdir {a}/d"), "File exists");
    sh_fails_with(&format!("mkdir {a}/f.txt"), "File exists");
    sh_ok(&format!("mkdir {a}/full && printf hi > {a}/full/f"));
    sh_fails_with(&format!("rmdir {a}/full"), "Directory not empty");

    // Reads work on the read-only mount; every write fails with EROFS.
    let r = ro.q("");
    eventually(
        "the files to show in the read-only mount",
        &format!("[ \"$(cat {r}/full/f)\" = hi ]"),
    );
    assert!(sh_ok(&format!("ls {r}")).contains("full"));
    let local = cluster.root.path().join("local");
    fs::write(&local, "local\n").unwrap();
    for cmd in [
        format!("cp {} {r}/new", q(&local)),
        format!("cp {} {r}/f.txt", q(&local)),
        format!("echo more >> {r}/f.txt"),
        format!("rm {r}/full/f"),
        format!("rm -r {r}/full"),
        format!("mkdir {r}/newdir"),
        format!("rmdir {r}/d"),
        format!("touch {r}/touched"),
        format!("touch {r}/f.txt"),
        format!("mv {r}/f.txt {r}/g.txt"),
        format!("truncate -s 0 {r}/f.txt"),
        format!("setfattr -n user.p3.meta.owner -v bob {r}/f.txt"),
    ] {
        sh_fails_with(&cmd, "Read-only file system");
    }
    assert_eq!(get(dir, &format!("{NS}/f.txt")), b"hi");
    assert_eq!(get(dir, &format!("{NS}/full/f")), b"hi");
    let listing = String::from_utf8(p3ctl_ok(dir, &["ls", NS]).stdout).unwrap();
    for absent in ["new", "newdir", "touched", "g.txt"] {
        assert!(
            !listing.lines().any(|l| l.starts_with(absent)),
            "{absent} written: {listing}"
        );
    }
}

/// `dd` copying its stdin into a file, through the one descriptor it opens:
/// stdout is closed first, so the file lands on fd 1 without a dup whose
/// close would count as closing the file (FUSE flushes on every close).
struct Writer {
    child: KillOnDrop,
    written: u64,
}

impl Writer {
    /// `file` is shell-quoted; `flags` more dd operands (`oflag=sync`).
    fn start(file: &str, flags: &str) -> Writer {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec dd of={file} bs=512 status=none {flags} >&-"))
            .stdin(Stdio::piped())
            .spawn()
            .expect("cannot spawn dd");
        Writer {
            child: KillOnDrop(child),
            written: 0,
        }
    }

    /// Writes `bytes` and waits until dd has written them to the file.
    fn feed(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stdin = self.child.0.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
        self.written += bytes.len() as u64;
        let io = format!("/proc/{}/io", self.child.0.id());
        wait_for("dd to write to the file", DEADLINE, || {
            let io = fs::read_to_string(&io).unwrap_or_default();
            let wchar = io.lines().find_map(|l| l.strip_prefix("wchar: "))?;
            (wchar.parse::<u64>().ok()? >= self.written).then_some(())
        });
    }

    /// Closes dd's stdin and waits for it to close the file and exit.
    fn finish(mut self) {
        drop(self.child.0.stdin.take());
        let status = wait_for("dd to exit", DEADLINE, || self.child.0.try_wait().unwrap());
        assert!(status.success(), "dd failed: {status}");
    }
}

#[test]
fn writes_reach_the_space_on_close_or_fsync_only() {
    skip_without_fuse!();
    let cluster = cluster_with_ns(1);
    let m = Mount::on(&cluster, 0, "m", false);
    let path = format!("{NS}/f.txt");
    let get = || get(&cluster.nodes[0].dir, &path);
    sh_ok(&format!("printf old > {}", m.q("f.txt")));
    assert_eq!(get(), b"old");

    // Truncated and written, but neither synced nor closed: not in the space yet.
    let mut writer = Writer::start(&m.q("f.txt"), "");
    writer.feed(b"new");
    assert_eq!(get(), b"old", "a file still open was committed");
    writer.finish();
    assert_eq!(get(), b"new", "a closed file must be committed");

    // With O_SYNC every write is fsync'd: each is in the space at once.
    let mut writer = Writer::start(&m.q("f.txt"), "oflag=sync");
    writer.feed(b"synced");
    assert_eq!(get(), b"synced", "fsync must commit the file");
    writer.feed(b"+more");
    assert_eq!(get(), b"synced+more", "fsync must commit the file");
    writer.finish();
    assert_eq!(get(), b"synced+more");
    assert_eq!(sh_ok(&format!("cat {}", m.q("f.txt"))), "synced+more");
}

#[test]
fn dead_node_gives_errors_not_hangs() {
    skip_without_fuse!();
    let mut cluster = cluster_with_ns(1);
    let m = Mount::on(&cluster, 0, "m", false);
    sh_ok(&format!("printf data > {}", m.q("file")));
    assert_eq!(sh_ok(&format!("cat {}", m.q("file"))), "data");

    cluster.nodes[0].stop("KILL");
    let killed = Instant::now();
    for cmd in [format!("ls {}", m.q("")), format!("cat {}", m.q("file"))] {
        let out = loop {
            assert!(
                killed.elapsed() < DEADLINE,
                "`{cmd}` still succeeds {DEADLINE:?} after the node was killed"
            );
            // A hung command (over 90 s) fails the test in sh_within.
            let out = sh_within(&cmd, Duration::from_secs(90));
            if !out.status.success() {
                break out;
            }
            thread::sleep(Duration::from_millis(200));
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "`{cmd}` after the node died ({:?}): {}",
            killed.elapsed(),
            stderr.trim()
        );
        // EIO from a live mount is the spec; ENOTCONN (the mount process died) is tolerated.
        assert!(
            stderr.contains("Input/output error")
                || stderr.contains("Transport endpoint is not connected"),
            "`{cmd}`: want EIO, got: {stderr}"
        );
    }
}

#[test]
fn umount_and_sigterm_end_the_mount_cleanly() {
    skip_without_fuse!();
    let cluster = cluster_with_ns(1);
    let dir = &cluster.nodes[0].dir;
    let mut m = Mount::on(&cluster, 0, "a", false);
    sh_ok(&format!("printf kept > {}", m.q("kept.txt")));
    sh_ok(&format!(
        "{} umount {}",
        q(Path::new(common::p3ctl_bin())),
        m.q("")
    ));
    m.assert_ends_cleanly("p3ctl umount");
    assert_eq!(get(dir, &format!("{NS}/kept.txt")), b"kept");

    // A few rounds: an unmount that races the exit shows up only sometimes.
    for (round, sig) in ["TERM", "INT", "TERM", "INT", "TERM"].iter().enumerate() {
        let mut m = Mount::on(&cluster, 0, &format!("b{round}"), false);
        assert_eq!(sh_ok(&format!("cat {}", m.q("kept.txt"))), "kept");
        sh_ok(&format!("printf {round} > {}", m.q("round")));
        signal(m.pid(), sig);
        m.assert_ends_cleanly(&format!("SIG{sig} (round {round})"));
    }
}
