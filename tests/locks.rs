//! Owner-held read/write locks with leases and fencing tokens, used through
//! `p3ctl lock` from separate processes on a 5-node cluster on 127.0.0.1.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{p3ctl_bin, p3ctl_err, p3ctl_ok, Cluster, KillOnDrop, DEADLINE};

/// `p3ctl ARGS --data-dir DIR` with P3 pointing at the binary, for scripts.
fn spawn(dir: &Path, args: &[&str]) -> KillOnDrop {
    KillOnDrop(
        common::p3ctl_command(dir, args)
            .env("P3", p3ctl_bin())
            .env("D", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run p3ctl"),
    )
}

/// Kills a process by pid when dropped (a command `p3ctl lock` started).
struct KillPid(u64);

impl Drop for KillPid {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .status();
    }
}

/// Waits for a client process; its success and stderr.
fn finish(child: KillOnDrop) -> (bool, String) {
    let (ok, _, err) = child.finish();
    (ok, err)
}

fn wait_file(path: &Path) {
    common::wait_for(&format!("{} to appear", path.display()), DEADLINE, || {
        path.exists().then_some(())
    });
}

fn read_token(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `p3ctl lock global/res --lease 2s -- sh -c SCRIPT`.
fn hold_res(script: &str) -> [&str; 8] {
    [
        "lock",
        "global/res",
        "--lease",
        "2s",
        "--",
        "sh",
        "-c",
        script,
    ]
}

/// Waits until the holder's script has written its token (a whole line).
fn wait_token(file: &Path) {
    common::wait_for("the token to be written", DEADLINE, || {
        std::fs::read_to_string(file)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
}

/// Takes the lock on global/res through the node of `dir` (waiting up to
/// 30 s) and returns the fencing token its holder got, by way of `file`.
fn next_token(dir: &Path, file: &Path) -> u64 {
    let script = format!("echo $P3_FENCING_TOKEN > {}", file.display());
    p3ctl_ok(
        dir,
        &[
            "lock",
            "global/res",
            "--timeout",
            "30s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    read_token(file)
}

/// Shell loop: COUNT read-increment-write cycles of global/counter, each under
/// the lock or not.
fn counter_loop(locked: bool, count: u32) -> String {
    let cycle = r#"v=$("$P" get global/counter --data-dir "$D") && echo $((v+1)) | "$P" put global/counter - --data-dir "$D" ${P3_FENCING_TOKEN:+--token $P3_FENCING_TOKEN} >/dev/null"#;
    let step = if locked {
        format!(r#""$P" lock global/counter --write --data-dir "$D" -- sh -c '{cycle}'"#)
    } else {
        cycle.to_owned()
    };
    format!("for i in $(seq {count}); do {step} || exit 1; done")
}

fn run_counters(cluster: &Cluster, locked: bool) -> u64 {
    let file = cluster.root.path().join("zero");
    std::fs::write(&file, "0").unwrap();
    p3ctl_ok(
        &cluster.nodes[0].dir,
        &["put", "global/counter", file.to_str().unwrap()],
    );
    let clients: Vec<KillOnDrop> = (1..5)
        .map(|i| {
            let dir = &cluster.nodes[i].dir;
            KillOnDrop(
                Command::new("sh")
                    .args(["-c", &counter_loop(locked, 50)])
                    .env("P", p3ctl_bin())
                    .env("D", dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for client in clients {
        let (ok, err) = finish(client);
        assert!(ok, "a client failed: {err}");
    }
    let out = p3ctl_ok(&cluster.nodes[0].dir, &["get", "global/counter"]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn write_locks_exclude_and_without_them_updates_are_lost() {
    let cluster = Cluster::start(5);
    cluster.wait_formed();
    let locked = run_counters(&cluster, true);
    assert_eq!(locked, 200, "4 clients x 50 locked increments");
    let unlocked = run_counters(&cluster, false);
    eprintln!("without the lock: {unlocked} of 200");
    assert!(
        unlocked < 200,
        "the unlocked run lost no update; the test shows nothing"
    );
}

#[test]
fn readers_share_and_a_writer_waits_for_both() {
    let cluster = Cluster::start(5);
    cluster.wait_formed();
    let tmp = cluster.root.path();
    let f = |name: &str| tmp.join(name);
    // Each reader marks that it holds the lock, then holds it until both hold
    // it at once and the test says go (bounded: 30 s).
    let reader = |i: usize| {
        let script = format!(
            "touch {me}; n=0; until [ -e {r1} ] && [ -e {r2} ] && [ -e {go} ]; do n=$((n+1)); [ $n -gt 600 ] && exit 1; sleep 0.05; done; touch {me}.done",
            me = f(&format!("r{i}")).display(),
            r1 = f("r1").display(),
            r2 = f("r2").display(),
            go = f("go").display(),
        );
        spawn(
            &cluster.nodes[i].dir,
            &["lock", "global/shared", "--read", "--", "sh", "-c", &script],
        )
    };
    let r1 = reader(1);
    let r2 = reader(2);
    wait_file(&f("r1"));
    wait_file(&f("r2")); // both hold the read lock at once
                         // A writer that gives up is told whom the lock is with: the nodes the
                         // readers asked through.
    let refused = p3ctl_err(
        &cluster.nodes[4].dir,
        &["lock", "global/shared", "--timeout", "200ms", "--", "true"],
    );
    for reader in [1, 2] {
        let node = &cluster.nodes[reader].peer_id;
        assert!(
            refused.contains(node.as_str()),
            "reader {reader} ({node}) not named: {refused}"
        );
    }
    let check = format!(
        "test -e {}.done && test -e {}.done",
        f("r1").display(),
        f("r2").display()
    );
    let mut writer = spawn(
        &cluster.nodes[3].dir,
        &["lock", "global/shared", "--write", "--", "sh", "-c", &check],
    );
    // The writer is queued behind the readers, not running.
    thread::sleep(Duration::from_millis(300)); // a chance to run early, were it wrong
    assert!(
        writer.0.try_wait().unwrap().is_none(),
        "the writer did not wait for the readers"
    );
    std::fs::write(f("go"), "").unwrap();
    for r in [r1, r2] {
        let (ok, err) = finish(r);
        assert!(ok, "a reader failed: {err}");
    }
    let (ok, err) = finish(writer);
    assert!(ok, "the writer ran before both readers were done: {err}");
}

#[test]
fn a_dead_holders_lock_ends_with_its_lease_and_its_token_is_refused() {
    let mut cluster = Cluster::start(5);
    cluster.wait_formed();
    let tmp: PathBuf = cluster.root.path().to_owned();
    let token_file = tmp.join("token");
    // The holder's command writes its pid (it becomes the `sleep`) so the test
    // can end it: killing `p3ctl lock` does not end the command it runs.
    let pid_file = tmp.join("pid");
    let script = format!(
        "echo $$ > {}; echo $P3_FENCING_TOKEN > {}; exec sleep 600",
        pid_file.display(),
        token_file.display()
    );
    let holder = spawn(&cluster.nodes[1].dir, &hold_res(&script));
    wait_token(&token_file);
    let _command = KillPid(read_token(&pid_file));
    let dead_token = read_token(&token_file);
    cluster.nodes[1].stop("KILL");
    drop(holder);

    let started = Instant::now();
    let token2 = next_token(&cluster.nodes[2].dir, &tmp.join("token2"));
    eprintln!(
        "acquired {:?} after the holder's node died",
        started.elapsed()
    );
    assert!(token2 > dead_token, "tokens must grow");

    let value = tmp.join("v");
    std::fs::write(&value, "late").unwrap();
    let err = p3ctl_err(
        &cluster.nodes[3].dir,
        &[
            "put",
            "global/res",
            value.to_str().unwrap(),
            "--token",
            &dead_token.to_string(),
        ],
    );
    assert!(err.contains("no longer valid"), "{err}");
}

#[test]
fn a_lock_survives_its_primarys_death_and_can_still_be_released() {
    let mut cluster = Cluster::start(5);
    cluster.wait_formed();
    let peers: Vec<String> = cluster.nodes.iter().map(|n| n.peer_id.clone()).collect();
    let mut key = blake3::Hasher::new();
    key.update(b"global\0guarded");
    let owners = common::closest_by_xor(key.finalize().as_bytes(), &peers, 3);
    let primary = cluster.index_of(&owners[0]).unwrap();
    let others: Vec<usize> = (0..5).filter(|i| *i != primary).collect();
    let (holder_node, contender_node) = (others[0], others[1]);

    let tmp: PathBuf = cluster.root.path().to_owned();
    let (held, release) = (tmp.join("held"), tmp.join("release"));
    let script = format!(
        "touch {}; n=0; until [ -e {} ]; do n=$((n+1)); [ $n -gt 1200 ] && exit 1; sleep 0.05; done",
        held.display(),
        release.display()
    );
    // The key's owners change only when the membership group removes the dead
    // primary (lease + drift, 3.5 s, after its last heartbeat, plus an
    // election if it led the group): a lease longer than that outlives the
    // takeover, and the new primary honours it.
    let holder = spawn(
        &cluster.nodes[holder_node].dir,
        &[
            "lock",
            "global/guarded",
            "--lease",
            "8s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    wait_file(&held);
    cluster.nodes[primary].stop("KILL");

    // Still held, beyond its lease: renewals reach the new primary.
    let err = p3ctl_err(
        &cluster.nodes[contender_node].dir,
        &["lock", "global/guarded", "--timeout", "12s", "--", "true"],
    );
    assert!(err.contains("still locked"), "{err}");

    std::fs::write(&release, "").unwrap();
    let (ok, err) = finish(holder);
    assert!(
        ok && !err.contains("warning"),
        "the holder could not release: {err}"
    );
    p3ctl_ok(
        &cluster.nodes[contender_node].dir,
        &["lock", "global/guarded", "--timeout", "10s", "--", "true"],
    );
}

/// A holder whose node can no longer renew its lease (the other owners and
/// the membership group's majority are paused) hears that the lock is lost
/// while its command still runs, not only at release; `p3ctl lock` stops
/// renewing, warns once, and lets the command finish.
#[test]
fn a_holder_that_cannot_renew_is_told_it_lost_the_lock_while_its_command_runs() {
    let cluster = Cluster::start(3);
    cluster.wait_formed();
    let tmp: PathBuf = cluster.root.path().to_owned();
    let (token_file, go) = (tmp.join("token"), tmp.join("go"));
    let stderr_file = tmp.join("lock.stderr");
    let script = format!(
        "echo $P3_FENCING_TOKEN > {}; n=0; until [ -e {} ]; do n=$((n+1)); [ $n -gt 1200 ] && exit 1; sleep 0.05; done; echo finished",
        token_file.display(),
        go.display()
    );
    let holder = KillOnDrop(
        common::p3ctl_command(&cluster.nodes[0].dir, &hold_res(&script))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .expect("cannot run p3ctl"),
    );
    wait_token(&token_file);
    let first_token = read_token(&token_file);

    for node in &cluster.nodes[1..] {
        node.signal("STOP");
    }
    let warning = common::wait_for("p3ctl lock to warn that the lock is lost", DEADLINE, || {
        std::fs::read_to_string(&stderr_file)
            .ok()
            .filter(|e| e.contains("lost the lock on global/res"))
    });
    let mut holder = holder;
    assert!(
        holder.0.try_wait().unwrap().is_none(),
        "the warning comes while the command runs: {warning}"
    );
    for node in &cluster.nodes[1..] {
        node.signal("CONT");
    }

    std::fs::write(&go, "").unwrap();
    let (ok, out, _) = holder.finish();
    let err = std::fs::read_to_string(&stderr_file).unwrap();
    assert!(ok, "the command's own status is kept: {err}");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "finished");
    assert_eq!(err.matches("warning").count(), 1, "one warning: {err}");

    let token2 = next_token(&cluster.nodes[1].dir, &tmp.join("token2"));
    assert!(token2 > first_token, "tokens must grow");
}

/// A primary that crashes and comes back returns with its stale copy of the
/// key's lock state, at a later membership epoch. It must read its
/// successor's grants before it serves (peering): otherwise it grants a held
/// lock again and hands out a token the successor already used.
#[test]
fn a_returning_primary_serves_its_successors_grants_not_its_stale_copy() {
    let mut cluster = Cluster::start(5);
    cluster.wait_formed();
    let peers: Vec<String> = cluster.nodes.iter().map(|n| n.peer_id.clone()).collect();
    let mut key = blake3::Hasher::new();
    key.update(b"global\0returning");
    let owners = common::closest_by_xor(key.finalize().as_bytes(), &peers, 3);
    let primary = cluster.index_of(&owners[0]).unwrap();
    let others: Vec<usize> = (0..5).filter(|i| *i != primary).collect();
    let (holder_node, contender_node) = (others[0], others[1]);
    let tmp: PathBuf = cluster.root.path().to_owned();

    // The primary gets a state of its own: a lock taken and released.
    let first = tmp.join("first");
    let script = format!("echo $P3_FENCING_TOKEN > {}", first.display());
    p3ctl_ok(
        &cluster.nodes[contender_node].dir,
        &["lock", "global/returning", "--", "sh", "-c", &script],
    );
    let dir = cluster.nodes[primary].dir.clone();
    cluster.nodes[primary].stop("KILL");

    // Its successor grants the lock (once the group has removed the dead
    // primary, the next owner serves the key).
    let (held, release, token) = (tmp.join("held"), tmp.join("release"), tmp.join("token"));
    let script = format!(
        "echo $P3_FENCING_TOKEN > {}; touch {}; n=0; until [ -e {} ]; do n=$((n+1)); [ $n -gt 1800 ] && exit 1; sleep 0.05; done",
        token.display(),
        held.display(),
        release.display()
    );
    let holder = spawn(
        &cluster.nodes[holder_node].dir,
        &[
            "lock",
            "global/returning",
            "--timeout",
            "30s",
            "--lease",
            "10s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    wait_file(&held);
    let held_token = read_token(&token);
    assert!(held_token > read_token(&first), "tokens must grow");

    // A contender waits in the successor's line. When the old primary
    // returns, the successor is no longer the key's primary and cannot grant
    // it: the request must move to the new primary's line, and be granted
    // there once the holder releases, well inside its 60 s wait.
    let waited = tmp.join("waited");
    let script = format!("echo $P3_FENCING_TOKEN > {}", waited.display());
    let waiter = spawn(
        &cluster.nodes[contender_node].dir,
        &[
            "lock",
            "global/returning",
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    common::wait_for("the contender to wait for the lock", DEADLINE, || {
        (common::metric(&cluster.nodes[contender_node].dir, "p3_locks_waiting")? > 0.0)
            .then_some(())
    });

    // The old primary returns and, the closest to the key, is its primary again.
    let seed = cluster.nodes[holder_node].addr.clone();
    cluster.nodes[primary] = common::NodeProc::start(&dir, &[&seed]);
    common::wait_for("the returned node to be back in the map", DEADLINE, || {
        let status = cluster.nodes[contender_node].json(&["node", "status"])?;
        let members = status["membership"]["members"].as_array()?.len();
        (members == 5).then_some(())
    });

    let err = p3ctl_err(
        &cluster.nodes[contender_node].dir,
        &["lock", "global/returning", "--timeout", "3s", "--", "true"],
    );
    assert!(err.contains("still locked"), "granted twice: {err}");

    std::fs::write(&release, "").unwrap();
    let (ok, err) = finish(holder);
    assert!(
        ok && !err.contains("warning"),
        "the holder lost its lock: {err}"
    );
    let (ok, err) = finish(waiter);
    assert!(ok, "the contender waiting when the primary changed: {err}");
    let waited_token = read_token(&waited);
    assert!(waited_token > held_token, "tokens must grow");
    let last = tmp.join("last");
    let script = format!("echo $P3_FENCING_TOKEN > {}", last.display());
    p3ctl_ok(
        &cluster.nodes[contender_node].dir,
        &[
            "lock",
            "global/returning",
            "--timeout",
            "10s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert!(
        read_token(&last) > waited_token,
        "a token was handed out twice or went back"
    );
}
