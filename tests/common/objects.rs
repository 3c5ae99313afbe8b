//! Helpers for tests of objects through `p3ctl`: writing, reading, comparing,
//! and where an object should live.

use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use super::{p3ctl, p3ctl_ok};

/// One kibibyte.
pub const KIB: u64 = 1 << 10;
/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// `p3ctl put PATH FILE --json ARGS...` against `dir`; the parsed answer.
pub fn put(dir: &Path, path: &str, file: &Path, extra: &[&str]) -> Value {
    let file = file.to_str().expect("non-UTF-8 temp path");
    let mut args = vec!["put", path, file];
    args.extend_from_slice(extra);
    args.push("--json");
    let out = p3ctl_ok(dir, &args);
    serde_json::from_slice(&out.stdout).expect("put printed invalid JSON")
}

/// `p3ctl stat PATH --json` against `dir`, failing the test if it fails.
pub fn stat(dir: &Path, path: &str) -> Value {
    let out = p3ctl_ok(dir, &["stat", path, "--json"]);
    serde_json::from_slice(&out.stdout).expect("stat printed invalid JSON")
}

/// The value of `path` read through `dir`'s node to stdout.
pub fn get(dir: &Path, path: &str) -> Vec<u8> {
    p3ctl_ok(dir, &["get", path]).stdout
}

/// Asserts that `path` reads through `dir`'s node as `want`; `what` names
/// the read in a failure.
pub fn assert_reads(dir: &Path, path: &str, want: &[u8], what: &str) {
    let out = p3ctl(dir, &["get", path]);
    assert!(
        out.status.success(),
        "{what}: get failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_bytes(&out.stdout, want, what);
}

/// Asserts `got == want` without dumping megabytes on failure.
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}; first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

/// blake3 of `bytes`, as hex.
pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The `count` PeerIds of `peers` nearest to the DHT key of `ns/name`
/// (`blake3(ns ‖ 0 ‖ name)`), computed here independently of the nodes.
pub fn expected_owners(ns: &str, name: &str, peers: &[String], count: usize) -> Vec<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(ns.as_bytes());
    hasher.update(&[0]);
    hasher.update(name.as_bytes());
    super::closest_by_xor(hasher.finalize().as_bytes(), peers, count)
}

/// `p3ctl take PATH` on every node of `cluster` at once. Asserts exactly one
/// taker got it and every other was told it does not exist; returns the
/// winner's stdout (the value) and stderr.
pub fn take_once_everywhere(cluster: &super::Cluster, path: &str) -> (Vec<u8>, String) {
    use super::{p3ctl_spawn, KillOnDrop};
    let takers: Vec<KillOnDrop> = cluster
        .nodes
        .iter()
        .map(|node| KillOnDrop(p3ctl_spawn(&node.dir, &["take", path])))
        .collect();
    let results: Vec<_> = takers.into_iter().map(KillOnDrop::finish).collect();
    let mut winners: Vec<_> = results.iter().filter(|(ok, _, _)| *ok).collect();
    assert_eq!(
        winners.len(),
        1,
        "{path}: {} takers got it: {results:?}",
        winners.len()
    );
    for (ok, _, err) in &results {
        assert!(
            *ok || err.contains("does not exist"),
            "{path}: a loser said {err}"
        );
    }
    let (_, out, err) = winners.remove(0);
    (out.clone(), err.clone())
}

/// Names `p3ctl search NS QUERY` prints through `dir`'s node.
pub fn search(dir: &Path, ns: &str, query: &str) -> std::collections::BTreeSet<String> {
    let out = p3ctl_ok(dir, &["search", ns, query]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
