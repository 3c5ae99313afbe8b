//! `p3ctl mount`, writes sent while they are made, through real FUSE: a new
//! file written in order reaches the node while it is still open, and its
//! object after `fsync` and after close is what was written; one rewritten at
//! its start is sent whole; one renamed while its stream is open, or before
//! it was ever sent (even while another process flushes it), becomes the
//! new name when closed; an existing file opened with `O_TRUNC` is written
//! without its old version being read. Reads stream too: a read at any
//! offset (inside a received frame, across two, back, forward, past the end)
//! returns the file's bytes; a large file is read past the kernel's page
//! cache and can still be mapped. Real node and mount processes on 127.0.0.1,
//! each in a temp dir.

mod common;

use std::{fs, io::Write, path::Path, sync::mpsc, thread};

use common::mount::*;
use common::objects::{assert_same_bytes, get, MIB};
use common::{
    metric, p3ctl_err, p3ctl_ok, pseudo_random, wait_for, write_pseudo_random_file, DEADLINE,
};

/// Returns from the test, saying why, if FUSE is missing (the only allowed skip).
macro_rules! skip_without_fuse {
    () => {
        if fuse_missing() {
            return;
        }
    };
}

/// Bytes of the files under `dir`. Walked here, not by `du`: a process
/// started while a file of the mount is open closes its inherited copy of
/// the descriptor, and that close flushes the file (the mount sends it).
fn disk_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| match entry.metadata() {
                    Ok(m) if m.is_dir() => disk_bytes(&entry.path()),
                    Ok(m) => m.len(),
                    // Files come and go under a running node.
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_new_file_written_in_order_reaches_the_node_while_it_is_written() {
    skip_without_fuse!();
    const SIZE: usize = 48 * MIB as usize;
    let cluster = cluster_with_ns(3);
    let m1 = Mount::on(&cluster, 0, "m1", false);
    let node = &cluster.nodes[0].dir;
    let before = disk_bytes(node);
    let first = pseudo_random(SIZE, 48);
    let mut file = fs::File::create(m1.path("streamed.bin")).unwrap();
    file.write_all(&first).unwrap();
    // Still open: a file sent only when closed would have none of its bytes
    // on the node yet (its spool is in the system's temporary directory).
    wait_for(
        "the node to store most of the open file's bytes",
        DEADLINE,
        || (disk_bytes(node) >= before + SIZE as u64 / 2).then_some(()),
    );
    // fsync ends the stream: the object is the file so far.
    file.sync_all().unwrap();
    let object = format!("{NS}/streamed.bin");
    let other = &cluster.nodes[1].dir;
    assert_same_bytes(&get(other, &object), &first, "the object after fsync");
    // What is written after it is sent whole when the file is closed.
    let tail = pseudo_random(MIB as usize, 49);
    file.write_all(&tail).unwrap();
    drop(file);
    let mut want = first;
    want.extend_from_slice(&tail);
    assert_same_bytes(&get(other, &object), &want, "the object after close");

    // A file rewritten at its start is sent whole, as written.
    let body = pseudo_random(8 * MIB as usize, 50);
    let mut rewritten = fs::File::create(m1.path("rewritten.bin")).unwrap();
    rewritten.write_all(&body).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&rewritten, b"HEAD", 0).unwrap();
    drop(rewritten);
    let mut want = body;
    want[..4].copy_from_slice(b"HEAD");
    let got = get(other, &format!("{NS}/rewritten.bin"));
    assert_same_bytes(&got, &want, "a file rewritten at its start");

    // Rewritten, and renamed while its stream is open: it is sent whole
    // under its new name (a stream goes to the name it began with).
    fs::write(m1.path("moving.bin"), b"first version").unwrap();
    let body = pseudo_random(8 * MIB as usize, 51);
    let mut moving = fs::File::create(m1.path("moving.bin")).unwrap();
    moving.write_all(&body[..6 * MIB as usize]).unwrap();
    fs::rename(m1.path("moving.bin"), m1.path("moved.bin")).unwrap();
    moving.write_all(&body[6 * MIB as usize..]).unwrap();
    drop(moving);
    let got = get(other, &format!("{NS}/moved.bin"));
    assert_same_bytes(&got, &body, "a file renamed while it was written");
    // Asked of its primary (a listing gathers copies and may show one
    // whose removal has not reached it yet).
    let gone = p3ctl_err(other, &["stat", &format!("{NS}/moving.bin")]);
    assert!(gone.contains("does not exist"), "{gone}");
}

#[test]
fn a_new_file_renamed_before_it_was_sent_becomes_the_target_when_closed() {
    skip_without_fuse!();
    let cluster = cluster_with_ns(3);
    let m1 = Mount::on(&cluster, 0, "m1", false);
    let other = &cluster.nodes[1].dir;
    // Over an existing file, as a program that writes a temporary file and
    // renames it into place while it is still open does.
    fs::write(m1.path("target.txt"), b"old target").unwrap();
    let mut fresh = fs::File::create(m1.path("fresh.tmp")).unwrap();
    fresh.write_all(b"new ").unwrap();
    fs::rename(m1.path("fresh.tmp"), m1.path("target.txt")).unwrap();
    fresh.write_all(b"target").unwrap();
    drop(fresh);
    assert_eq!(get(other, &format!("{NS}/target.txt")), b"new target");
    let never = p3ctl_err(other, &["stat", &format!("{NS}/fresh.tmp")]);
    assert!(never.contains("does not exist"), "{never}");
}

#[test]
fn a_new_file_flushed_by_another_process_while_it_is_renamed_leaves_no_old_name() {
    skip_without_fuse!();
    let cluster = cluster_with_ns(3);
    let m1 = Mount::on(&cluster, 0, "m1", false);
    let other = &cluster.nodes[1].dir;
    // A process started while the file is open closes its copy of the
    // descriptor when it execs, and that close flushes (sends) the file
    // under whatever name it has then: before, during or after the rename.
    // Whichever it is, the file ends up under the new name only.
    for round in 0..8 {
        let (fresh_name, target_name) = (format!("fresh{round}.tmp"), format!("target{round}"));
        let mut fresh = fs::File::create(m1.path(&fresh_name)).unwrap();
        fresh.write_all(b"new ").unwrap();
        let child = std::thread::spawn(|| std::process::Command::new("true").status());
        fs::rename(m1.path(&fresh_name), m1.path(&target_name)).unwrap();
        fresh.write_all(b"target").unwrap();
        drop(fresh);
        assert!(child.join().unwrap().unwrap().success());
        assert_eq!(get(other, &format!("{NS}/{target_name}")), b"new target");
        let gone = p3ctl_err(other, &["stat", &format!("{NS}/{fresh_name}")]);
        assert!(gone.contains("does not exist"), "round {round}: {gone}");
    }
}

#[test]
fn overwriting_a_file_never_reads_its_old_version() {
    skip_without_fuse!();
    const SIZE: usize = 16 * MIB as usize;
    let cluster = cluster_with_ns(3);
    let m1 = Mount::on(&cluster, 0, "m1", false);
    let node = &cluster.nodes[0].dir;
    let old = pseudo_random(SIZE, 60);
    fs::write(m1.path("big.bin"), &old).unwrap();
    // Read once through node 0, which also makes it count bytes read.
    assert_same_bytes(
        &get(node, &format!("{NS}/big.bin")),
        &old,
        "the old version",
    );
    let read_out = || metric(node, "p3_bytes_out_total").expect("node 0's count of bytes read");
    let before = read_out();

    // What `cp` and shell redirection do: open(O_WRONLY|O_CREAT|O_TRUNC).
    let new = pseudo_random(SIZE, 61);
    fs::write(m1.path("big.bin"), &new).unwrap();
    let other = &cluster.nodes[1].dir;
    assert_same_bytes(
        &get(other, &format!("{NS}/big.bin")),
        &new,
        "the new version",
    );
    let read = read_out() - before;
    assert!(
        read < (SIZE / 2) as f64,
        "the overwrite read {read} bytes of the old version through the node"
    );
}

/// What `work` returns, run on a thread so that a hung mount fails the test
/// (saying `what` did not finish) instead of hanging it.
fn off_thread<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(work());
    });
    match result.recv_timeout(DEADLINE) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not finish before the deadline"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} failed (its panic is above)"),
    }
}

#[test]
fn reads_at_any_offset_return_the_files_bytes() {
    skip_without_fuse!();
    // Frames are 1 MiB: reads inside one, across two, back across two kept
    // frames, back to the start, forward past several, at and past the end.
    const SIZE: usize = 3 * MIB as usize + 12_345;
    let (cluster, _m1, m3) = two_mounts();
    let file = cluster.root.path().join("random.bin");
    write_pseudo_random_file(&file, SIZE as u64, 17);
    let want = fs::read(&file).unwrap();
    p3ctl_ok(
        &cluster.nodes[0].dir,
        &["put", &format!("{NS}/random.bin"), file.to_str().unwrap()],
    );
    eventually(
        "the object's full size to show in mount 3",
        &format!("[ \"$(stat -c %s {})\" = {SIZE} ]", m3.q("random.bin")),
    );
    let mib = MIB as usize;
    let reads: Vec<(usize, usize)> = vec![
        (0, 4096),
        (mib - 100, 300),
        (2 * mib + 5, 70_000),
        (mib - 50, 100),
        (10, 20),
        (100, 3 * mib),
        (3 * mib - 1, 20_000),
        (SIZE + 10, 100),
        (SIZE - 1, 1),
        (mib / 2, 1),
    ];
    let path = m3.path("random.bin");
    // O_DIRECT: each read reaches the mount as asked, not through the page
    // cache.
    let (reads, got) = off_thread("the reads", move || {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .unwrap();
        let got: Vec<Vec<u8>> = reads
            .iter()
            .map(|&(offset, size)| {
                let mut bytes = vec![0u8; size];
                let mut filled = 0;
                while filled < size {
                    let n = file
                        .read_at(&mut bytes[filled..], (offset + filled) as u64)
                        .unwrap();
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                bytes.truncate(filled);
                bytes
            })
            .collect();
        (reads, got)
    });
    for ((offset, size), bytes) in reads.into_iter().zip(got) {
        let from = offset.min(SIZE);
        let upto = offset.saturating_add(size).min(SIZE);
        assert!(
            bytes == want[from..upto],
            "read of {size} bytes at {offset}: {} bytes, {}",
            bytes.len(),
            if bytes.len() == upto - from {
                "different"
            } else {
                "wrong length"
            }
        );
    }
}

/// Pages of the first `len` bytes of `file` in the kernel's page cache, seen
/// through a shared map of it (which direct I/O allows only with
/// `FUSE_DIRECT_IO_ALLOW_MMAP`), and those bytes read through the map.
fn cached_pages_and_mapped_bytes(file: &fs::File, len: usize) -> (usize, Vec<u8>) {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh read-only shared map of an open file, read within its
    // length and unmapped before returning; `mincore` writes one byte per
    // page into a vector of that many.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(
            map,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut resident = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(map, len, resident.as_mut_ptr()), 0, "mincore");
        let cached = resident.iter().filter(|&&r| r & 1 == 1).count();
        let bytes = std::slice::from_raw_parts(map as *const u8, len).to_vec();
        libc::munmap(map, len);
        (cached, bytes)
    }
}

#[test]
fn large_files_are_read_past_the_page_cache_and_can_still_be_mapped() {
    skip_without_fuse!();
    // Large: at least the mount's `DIRECT_FROM` (4 MiB), read with direct
    // I/O; small: read through the page cache.
    let (cluster, _m1, m3) = two_mounts();
    for (name, size, cached_after_read) in [
        ("large.bin", 5 * MIB + 7, false),
        ("small.bin", 65_536, true),
    ] {
        let file = cluster.root.path().join(name);
        write_pseudo_random_file(&file, size, 23);
        let want = fs::read(&file).unwrap();
        p3ctl_ok(
            &cluster.nodes[0].dir,
            &["put", &format!("{NS}/{name}"), file.to_str().unwrap()],
        );
        eventually(
            &format!("{name}'s full size to show in mount 3"),
            &format!("[ \"$(stat -c %s {})\" = {size} ]", m3.q(name)),
        );
        let path = m3.path(name);
        let (read, cached, mapped) = off_thread("the read and the map", move || {
            use std::io::Read;
            let mut file = fs::File::open(&path).unwrap();
            let mut read = Vec::new();
            file.read_to_end(&mut read).unwrap();
            let (cached, mapped) = cached_pages_and_mapped_bytes(&file, read.len());
            (read, cached, mapped)
        });
        assert!(read == want, "{name}: read differs ({} bytes)", read.len());
        assert!(mapped == want, "{name}: the map differs");
        if cached_after_read {
            assert!(
                cached > 0,
                "{name}: the read left no page in the kernel's cache"
            );
        } else {
            assert_eq!(
                cached, 0,
                "{name}: the read went through the kernel's cache"
            );
        }
    }
}
