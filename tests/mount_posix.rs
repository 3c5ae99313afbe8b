//! What a mount keeps of a file besides its bytes, through real FUSE on two
//! nodes: mode bits, owner, group and times set by `tar -x`, `chmod`, `chown`
//! and `touch -d` are stored with the object and seen through the other
//! node's mount; symbolic links are objects of their own type that
//! `p3ctl get` reads; hard links are refused with EPERM; git works in a mount
//! (its lock files are renamed over the files they replace); a second
//! `rsync -a` finds nothing to do (directories keep their attributes too);
//! a directory listing carries each entry's attributes as they are.

mod common;

use std::fs;

use common::mount::*;
use common::objects::stat;
use common::p3ctl_ok;

/// Whether this test runs as root (then it can give files other owners).
fn root() -> bool {
    sh_ok("id -u").trim() == "0"
}

#[test]
fn tar_keeps_modes_owners_times_and_symlinks_across_mounts() {
    if fuse_missing() {
        return;
    }
    let (cluster, m1, m3) = two_mounts();
    let src = cluster.root.path().join("src");
    fs::create_dir_all(src.join("sub/dir")).unwrap();
    fs::write(
        src.join("script.sh"),
        "#!/bin/sh\necho hi from the script\n",
    )
    .unwrap();
    fs::write(src.join("secret"), "private\n").unwrap();
    fs::write(src.join("plain"), "plain text\n").unwrap();
    fs::write(src.join("sub/dir/file"), "deep\n").unwrap();
    let s = q(&src);
    sh_ok(&format!(
        "cd {s} && chmod 755 . sub sub/dir script.sh && chmod 600 secret && chmod 644 plain \
         && chmod 640 sub/dir/file \
         && touch -h -d '2001-02-03 04:05:06.123456789' script.sh secret sub/dir/file \
         && touch -d '1999-12-31 23:59:59' plain \
         && ln -s plain link && ln -s nowhere dangling && ln -s ../script.sh sub/up"
    ));
    if root() {
        sh_ok(&format!("chown 1234:5678 {s}/secret"));
    }
    let archive = cluster.root.path().join("tree.tar");
    // POSIX (pax) archives keep nanoseconds; the default GNU format whole seconds.
    sh_ok(&format!("tar --format=posix -cf {} -C {s} .", q(&archive)));

    sh_ok(&format!("mkdir {}", m1.q("tree")));
    sh_ok(&format!("tar -xpf {} -C {}", q(&archive), m1.q("tree")));
    sh_ok(&format!("tar -df {} -C {}", q(&archive), m1.q("tree")));
    // Through the other node's mount: modes, owners, times, contents and
    // link targets all compare equal.
    eventually(
        "the extracted tree to compare clean through mount 3",
        &format!("tar -df {} -C {}", q(&archive), m3.q("tree")),
    );
    let out = sh_ok(&m3.q("tree/script.sh"));
    assert_eq!(out, "hi from the script\n", "the script runs from mount 3");
    assert_eq!(
        sh_ok(&format!("readlink {}", m3.q("tree/sub/up"))),
        "../script.sh\n"
    );
    assert_eq!(sh_ok(&format!("cat {}", m3.q("tree/link"))), "plain text\n");
    assert_eq!(
        sh_ok(&format!("stat -c '%F %a' {}", m3.q("tree/dangling"))),
        "symbolic link 777\n"
    );

    // Stored with the object: `p3ctl stat` shows them, `p3ctl get` reads a link.
    let node = &cluster.nodes[1].dir;
    let script = stat(node, &format!("{NS}/tree/script.sh"));
    assert_eq!(
        script["meta"]["posix.mode"].as_f64(),
        Some(f64::from(0o755)),
        "{script}"
    );
    let seconds = |date: &str| sh_ok(&format!("date -d '{date}' +%s")).trim().to_owned();
    assert_eq!(
        script["meta"]["posix.mtime"].as_str(),
        Some(format!("{}.123456789", seconds("2001-02-03 04:05:06")).as_str()),
        "{script}"
    );
    let link = p3ctl_ok(node, &["get", &format!("{NS}/tree/link")]).stdout;
    assert_eq!(link, b"plain");
    assert_eq!(
        stat(node, &format!("{NS}/tree/link"))["type"],
        "inode/symlink"
    );

    // Changes on one mount show on the other; new content gets a new mtime
    // but keeps its mode.
    sh_ok(&format!(
        "chmod 700 {p} && touch -d '2010-01-01 00:00:00' {p}",
        p = m1.q("tree/plain")
    ));
    let new_year = seconds("2010-01-01 00:00:00");
    eventually(
        "chmod and touch -d on mount 1 to show on mount 3",
        &format!(
            "test \"$(stat -c '%a %Y' {})\" = '700 {new_year}'",
            m3.q("tree/plain")
        ),
    );
    sh_ok(&format!("echo more >> {}", m1.q("tree/plain")));
    eventually(
        "an append on mount 1 to move the mtime on mount 3 and keep the mode",
        &format!(
            "test \"$(stat -c '%a' {p})\" = 700 && test \"$(stat -c '%Y' {p})\" -gt {new_year}",
            p = m3.q("tree/plain")
        ),
    );
    if root() {
        sh_ok(&format!("chown 42:43 {}", m1.q("tree/plain")));
        eventually(
            "chown on mount 1 to show on mount 3",
            &format!("test \"$(stat -c '%u:%g' {})\" = 42:43", m3.q("tree/plain")),
        );
    }

    // One name per object: hard links are refused.
    sh_fails_with(
        &format!("ln {} {}", m1.q("tree/plain"), m1.q("tree/hard")),
        "Operation not permitted",
    );
    // A link's name is taken like a file's.
    sh_fails_with(&format!("ln -s x {}", m1.q("tree/link")), "File exists");
}

/// `ls -l` of a mounted directory takes each entry's attributes from the
/// directory read itself (`readdirplus`), not from a lookup per entry: they
/// must be the files' own, on the mount that set them and on the other,
/// and a file open for writing shows what has been written so far.
#[test]
fn a_listing_shows_what_each_entry_is() {
    if fuse_missing() {
        return;
    }
    let (cluster, m1, m3) = two_mounts();
    sh_ok(&format!(
        "mkdir {d} && cd {d} && printf 12345 > five && chmod 640 five \
         && touch -d '2001-02-03 04:05:06' five && ln -s five link \
         && mkdir sub && chmod 711 sub && printf x > old && chmod 644 old",
        d = m1.q("listed")
    ));
    let five_mtime = sh_ok("date -d '2001-02-03 04:05:06' +%s").trim().to_owned();
    // Mode, size (not for the directory) and name of each entry, and the
    // mtime of the one whose time was set, as `ls -ln` prints them.
    let listing = |dir: &str| {
        format!(
            "ls -ln --time-style=+%s {dir} | awk 'NR > 1 {{ \
               size = substr($1, 1, 1) == \"d\" ? \"-\" : $5; \
               time = $7 == \"five\" ? \" \" $6 : \"\"; \
               print $1, size, $7 time }}'"
        )
    };
    let expected = format!(
        "-rw-r----- 5 five {five_mtime}\nlrwxrwxrwx 4 link\n-rw-r--r-- 1 old\ndrwx--x--x - sub\n"
    );
    assert_eq!(
        sh_ok(&listing(&m1.q("listed"))),
        expected,
        "through mount 1"
    );
    let wanted = cluster.root.path().join("listing");
    fs::write(&wanted, &expected).unwrap();
    eventually(
        "mount 3's listing to show every entry as it is",
        &format!(
            "test \"$({})\" = \"$(cat {})\"",
            listing(&m3.q("listed")),
            q(&wanted)
        ),
    );

    // Open for writing, replaced by three bytes not yet sent: the listing
    // of the mount that writes shows three bytes, not the version stored.
    let mut open = fs::File::create(m1.path("listed/old")).unwrap();
    std::io::Write::write_all(&mut open, b"abc").unwrap();
    let sizes = sh_ok(&format!(
        "ls -ln {} | awk '$NF == \"old\" {{ print $5 }}'",
        m1.q("listed")
    ));
    assert_eq!(sizes, "3\n", "the listing shows the bytes written so far");
    drop(open);
}

#[test]
fn a_second_rsync_into_a_mount_has_nothing_to_transfer() {
    if fuse_missing() {
        return;
    }
    let (cluster, m1, m3) = two_mounts();
    let src = cluster.root.path().join("src");
    fs::create_dir_all(src.join("lib/deep")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    fs::write(src.join("lib/a.txt"), "a\n").unwrap();
    fs::write(src.join("lib/deep/b.bin"), vec![7u8; 100_000]).unwrap();
    // Enough files below the copy's top directory that the mount looks names
    // in it up one by one instead of listing it (listings::LARGE_LISTING).
    fs::create_dir_all(src.join("many")).unwrap();
    for i in 0..300 {
        fs::write(src.join(format!("many/{i}")), format!("{i}\n")).unwrap();
    }
    let s = q(&src);
    // Directory modes and times are set last, as after a build: rsync -a
    // keeps them on directories too.
    sh_ok(&format!(
        "cd {s} && chmod 755 run.sh && chmod 600 lib/a.txt && ln -s lib/a.txt link \
         && touch -d '2003-04-05 06:07:08.5' run.sh lib/a.txt lib/deep/b.bin \
         && touch -h -d '2004-01-01' link \
         && chmod 750 lib && chmod 700 empty \
         && touch -d '2005-06-07 08:09:10' lib lib/deep empty ."
    ));
    let copy = m1.q("copy");
    let first = sh_ok(&format!("rsync -a --itemize-changes {s}/ {copy}/"));
    assert!(first.contains("run.sh"), "the first run copies: {first}");
    let second = sh_ok(&format!("rsync -a --itemize-changes {s}/ {copy}/"));
    assert_eq!(second, "", "a second rsync -a finds everything up to date");
    // Through the other node's mount it is the same tree.
    eventually(
        "mount 3 to hold what rsync wrote, attributes and all",
        &format!(
            "test -z \"$(rsync -a --dry-run --itemize-changes {s}/ {}/)\"",
            m3.q("copy")
        ),
    );
    assert_eq!(
        sh_ok(&format!("stat -c '%a %Y' {}", m3.q("copy/lib"))),
        format!("750 {}", sh_ok("date -d '2005-06-07 08:09:10' +%s").trim()) + "\n"
    );
    assert_eq!(sh_ok(&m3.q("copy/run.sh")), "ran\n");
}

#[test]
fn a_git_repository_made_in_one_mount_clones_clean_out_of_another() {
    if fuse_missing() {
        return;
    }
    let (cluster, m1, m3) = two_mounts();
    let git = "git -c user.email=p3@example.com -c user.name=P3 -c init.defaultBranch=main";
    let repo = m1.q("repo");
    sh_ok(&format!("{git} init -q {repo}"));
    for i in 0..3 {
        sh_ok(&format!(
            "cd {repo} && mkdir -p src && echo 'line {i}' >> src/file.txt && echo '#!/bin/sh' > run.sh \
             && chmod +x run.sh && {git} add -A && {git} commit -qm 'commit {i}'"
        ));
    }
    sh_ok(&format!("cd {repo} && {git} gc -q && {git} fsck --strict"));
    // Through the other node's mount, out to local disk.
    let out = cluster.root.path().join("clone");
    eventually(
        "the repository to clone out of mount 3",
        &format!(
            "rm -rf {o} && {git} clone -q {} {o}",
            m3.q("repo"),
            o = q(&out)
        ),
    );
    let o = q(&out);
    sh_ok(&format!("cd {o} && {git} fsck --strict"));
    assert_eq!(
        sh_ok(&format!("cd {o} && {git} log --format=%s")),
        "commit 2\ncommit 1\ncommit 0\n"
    );
    assert_eq!(
        sh_ok(&format!("stat -c %a {o}/run.sh")),
        "755\n",
        "git kept the executable bit"
    );
    // And back into a mount.
    sh_ok(&format!("{git} clone -q {o} {}", m3.q("again")));
    let status = sh_ok(&format!(
        "cd {} && {git} fsck --strict && {git} status --porcelain",
        m3.q("again")
    ));
    assert_eq!(status, "", "a fresh clone in the mount shows changes");
}
