//! Locks by handle and watches as Server-Sent Events.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::common::{objects::blake3_hex, DEADLINE};

use super::client::*;

// ---------------------------------------------------------------------------
// Locks.

#[test]
fn locks_by_handle_wait_renew_release_expire_and_fence() {
    let cluster = formed(3);
    let http: Vec<Http> = cluster.nodes.iter().map(Http::of).collect();

    let first = http[0].lock(json!({"path": "global/l", "lease_ms": 2000}));
    first.expect(201, "the first acquire");
    let first = first.json();
    let id = first["id"].as_str().expect("lock id").to_owned();
    let old_token = first["token"].as_u64().expect("lock token");
    assert_eq!(first["path"], "global/l", "{first}");
    assert_eq!(first["mode"], "write", "write is the default mode: {first}");
    assert!(first["valid_ms"].as_u64() > Some(0), "{first}");

    // Held: another client (through another node) waits in vain.
    let start = Instant::now();
    http[1]
        .lock(json!({"path": "global/l", "timeout_ms": 300}))
        .expect_error(408, "timed_out", "acquiring a held lock, timeout 300 ms");
    assert!(start.elapsed() >= Duration::from_millis(250));

    // The handle lists, renews and releases.
    let listed = http[0].get("/api/v1/locks").reply();
    listed.expect(200, "GET /locks");
    let listed = listed.json();
    assert!(
        listed
            .as_array()
            .expect("a list")
            .iter()
            .any(|l| l["id"] == id.as_str()),
        "{listed}"
    );
    let renewed = http[0].post(&format!("/api/v1/locks/{id}/renew")).empty();
    renewed.expect(200, "renew");
    let renewed = renewed.json();
    assert!(renewed["valid_ms"].as_u64() > Some(0), "{renewed}");
    assert_eq!(renewed["token"], old_token, "{renewed}");
    http[0]
        .delete(&format!("/api/v1/locks/{id}"))
        .reply()
        .expect(204, "release");

    // Released: the next client gets it, with a higher fencing token.
    let second = http[1].lock(json!({"path": "global/l", "timeout_ms": 10000}));
    second.expect(201, "acquire after the release");
    let second = second.json();
    let second_id = second["id"].as_str().expect("id").to_owned();
    let new_token = second["token"].as_u64().expect("token");
    assert!(
        new_token > old_token,
        "fencing tokens grow: {old_token} then {new_token}"
    );

    // The released handle is gone; so is one that never was.
    for unknown in [id.as_str(), "00000000000000aa"] {
        http[0]
            .post(&format!("/api/v1/locks/{unknown}/renew"))
            .empty()
            .expect_error(404, "not_found", "renew of an unknown handle");
        http[0]
            .delete(&format!("/api/v1/locks/{unknown}"))
            .reply()
            .expect_error(404, "not_found", "release of an unknown handle");
    }

    // The token fences: the old holder's token is refused, the holder's is
    // taken, and a write without a token waits its turn.
    let error = http[0]
        .put("/api/v1/objects/global/l")
        .query("token", old_token.to_string())
        .bytes(b"stale writer")
        .expect_error(423, "locked", "a write with the token of a lock moved on");
    assert!(error.contains(&old_token.to_string()), "{error}");
    http[2]
        .put("/api/v1/objects/global/l")
        .bytes(b"no token")
        .expect_error(423, "locked", "a write without the token of a held lock");
    let put = http[2]
        .put("/api/v1/objects/global/l")
        .query("token", new_token.to_string())
        .bytes(b"under the lock");
    put.expect(201, "a write with the holder's token");
    http[1]
        .delete(&format!("/api/v1/locks/{second_id}"))
        .reply()
        .expect(204, "release");

    // A handle not renewed is released after its lease.
    let lapsing = http[2].lock(json!({"path": "global/l2", "lease_ms": 1000}));
    lapsing.expect(201, "acquire with lease 1 s");
    let granted = Instant::now();
    let lapsing_id = lapsing.json()["id"].as_str().expect("id").to_owned();
    let next = http[0].lock(json!({"path": "global/l2", "timeout_ms": 10000}));
    let waited = granted.elapsed();
    next.expect(201, "acquire after the lapsed lease");
    assert!(
        waited >= Duration::from_millis(800),
        "granted after {waited:?}, before the 1 s lease of the unrenewed handle ran out"
    );
    assert!(waited < Duration::from_secs(10), "granted after {waited:?}");
    http[2]
        .post(&format!("/api/v1/locks/{lapsing_id}/renew"))
        .empty()
        .expect_error(404, "not_found", "renew of a lapsed handle");
    let next_id = next.json()["id"].as_str().expect("id").to_owned();
    http[0]
        .delete(&format!("/api/v1/locks/{next_id}"))
        .reply()
        .expect(204, "release");
}

// ---------------------------------------------------------------------------
// Watch.

#[test]
fn watch_streams_changes_as_server_sent_events() {
    let cluster = formed(3);
    let http: Vec<Http> = cluster.nodes.iter().map(Http::of).collect();
    let lines = sse_lines(&http[0], "/api/v1/watch/global?prefix=w/");
    let until = Instant::now() + DEADLINE;
    while next_line(&lines, until, "event: watching") != "event: watching" {}

    // Writes through the other nodes, and one outside the prefix.
    let puts = [
        (1, "w/1", b"one".as_slice()),
        (2, "w/1", b"one, again".as_slice()),
        (1, "w/2", b"two".as_slice()),
    ];
    http[2].put_object("global/x/unwatched", b"not under w/");
    for (node, name, value) in puts {
        http[node].put_object(&format!("global/{name}"), value);
    }

    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut events = Vec::new();
    while seen.values().map(Vec::len).sum::<usize>() < puts.len() {
        let line = next_line(&lines, until, "the watch's events");
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data.is_empty() {
            continue; // the `watching` event's empty data
        }
        let event: Value = serde_json::from_str(data)
            .unwrap_or_else(|e| panic!("a data line that is not JSON ({e}): {data}"));
        let name = event["name"].as_str().expect("event name").to_owned();
        assert!(
            name.starts_with("w/"),
            "an event outside the prefix: {event}"
        );
        assert_eq!(event["kind"], "put", "{event}");
        assert_eq!(event["namespace"], "global", "{event}");
        seen.entry(name)
            .or_default()
            .push(event["version"].as_u64().expect("event version"));
        events.push(event);
    }
    assert_eq!(
        seen,
        BTreeMap::from([("w/1".to_owned(), vec![1, 2]), ("w/2".to_owned(), vec![1])]),
        "each name's versions, in order: {events:#?}"
    );
    for (event, (_, _, value)) in events
        .iter()
        .filter(|e| e["name"] == "w/1")
        .zip(puts.iter().filter(|p| p.1 == "w/1"))
    {
        assert_eq!(event["hash"], blake3_hex(value).as_str(), "{event}");
        assert_eq!(event["size"], value.len(), "{event}");
    }
}
