//! What docs/http.md promises in detail.

use std::time::Instant;

use serde_json::Value;
use ureq::SendBody;

use crate::common::DEADLINE;

use super::{client::*, errors::node_with_limit};

// ---------------------------------------------------------------------------
// What docs/http.md promises in detail: each of these shows one place where
// the server and the guide disagree (see the test's comment).

/// docs/http.md: "400 `invalid`: a bad name, query, option, JSON body or
/// header". Well-formed JSON of the wrong shape (a field of the wrong type,
/// an unknown field, a missing one) is a bad JSON body too; axum's `Json`
/// extractor answers those 422 (only syntax errors 400), and
/// `http/src/error.rs` (`as_json`) keeps that status.
#[test]
fn a_json_body_of_the_wrong_shape_is_a_400() {
    let cluster = formed(1);
    let http = Http::of(&cluster.nodes[0]);
    let mut wrong = Vec::new();
    for (path, body) in [
        ("/api/v1/locks", "{\"path\": 7}"),
        ("/api/v1/locks", "{\"path\": \"global/l\", \"bogus\": 1}"),
        ("/api/v1/locks", "{\"lease_ms\": 1000}"),
        ("/api/v1/jobs", "{\"args\": {}}"),
        ("/api/v1/jobs", "{\"kind\": 7}"),
    ] {
        let reply = http
            .post(path)
            .header("Content-Type", "application/json")
            .bytes(body.as_bytes());
        // Whatever the status, the body is the JSON error with one line.
        let status = reply.status;
        reply.expect_error(status, "invalid", &format!("POST {path} {body}"));
        if status != 400 {
            wrong.push(format!("POST {path} {body} -> {status}: {}", reply.text()));
        }
    }
    assert!(
        wrong.is_empty(),
        "bad JSON bodies answered other than 400:\n{}",
        wrong.join("\n")
    );
}

/// docs/http.md: each change a watch streams is `{kind, namespace, name,
/// version, hash, size, at_ms, meta, type}`, `type` as in a stat and a
/// search result.
#[test]
fn watch_events_carry_the_fields_docs_http_md_lists() {
    let cluster = formed(1);
    let http = Http::of(&cluster.nodes[0]);
    let lines = sse_lines(&http, "/api/v1/watch/global?prefix=f/&exact=false");
    let until = Instant::now() + DEADLINE;
    while next_line(&lines, until, "event: watching") != "event: watching" {}
    http.put("/api/v1/objects/global/f/1")
        .header("Content-Type", "text/plain")
        .header("X-P3-Meta-owner", "ana")
        .bytes(b"typed")
        .expect(201, "PUT global/f/1");
    let event: Value = loop {
        let line = next_line(&lines, until, "the watch's event");
        match line.strip_prefix("data:").map(str::trim) {
            Some(data) if !data.is_empty() => break serde_json::from_str(data).expect("JSON"),
            _ => {}
        }
    };
    assert_eq!(event["name"], "f/1", "{event}");
    assert_eq!(event["meta"]["owner"], "ana", "{event}");
    for field in [
        "kind",
        "namespace",
        "name",
        "version",
        "hash",
        "size",
        "at_ms",
        "meta",
        "type",
    ] {
        assert!(
            event.get(field).is_some(),
            "docs/http.md says each change carries `{field}`; this one does not: {event}"
        );
    }
    assert_eq!(event["type"], "text/plain", "{event}");
}

/// docs/http.md: "413 `too_large`: a value over `max_object_bytes` (or a
/// volatile one over 64 KiB)".
#[test]
fn a_volatile_value_over_64_kib_is_a_413() {
    let cluster = formed(1);
    let http = Http::of(&cluster.nodes[0]);
    let small = http
        .put("/api/v1/objects/global/v/small")
        .query("volatile", "true")
        .bytes(&[1u8; 1000]);
    small.expect(201, "a volatile PUT of 1000 bytes");
    let stat = http.get("/api/v1/stat/global/v/small").reply().json();
    assert_eq!(stat["volatile"], true, "{stat}");
    let big = vec![2u8; 65 << 10];
    let announced = http
        .put("/api/v1/objects/global/v/big")
        .query("volatile", "true")
        .bytes(&big);
    let mut chunked: &[u8] = &big;
    let streamed = reply(
        http.put("/api/v1/objects/global/v/big")
            .query("volatile", "true")
            .send(SendBody::from_reader(&mut chunked)),
        "a chunked volatile PUT",
    );
    http.get("/api/v1/objects/global/v/big")
        .reply()
        .expect_error(404, "not_found", "a volatile value refused as too large");
    announced.expect_error(
        413,
        "too_large",
        "a volatile PUT of 65 KiB (Content-Length)",
    );
    streamed.expect_error(413, "too_large", "a volatile PUT of 65 KiB (chunked)");
}

/// docs/http.md: "413 `too_large`: a value over `max_object_bytes`". A
/// client that sends its whole body before it reads the answer (as ureq,
/// and many simple clients, do) must get that 413 too, not a connection
/// cut while it sends: the node refuses the value after its first bytes
/// (or before any, when Content-Length announces the size) and closes the
/// connection with the rest unread, so the client's writes fail with a
/// broken pipe (or a reset) and the answer is lost. (curl, which reads
/// while it sends, does see the 413.)
#[test]
fn a_body_far_over_the_limit_gets_its_413() {
    let root = tempfile::tempdir().unwrap();
    let node = node_with_limit(root.path(), 1000);
    let http = Http::of(&node);
    let big = vec![7u8; 4 << 20];
    let mut chunked: &[u8] = &big;
    let streamed = http
        .put("/api/v1/objects/global/big")
        .send(SendBody::from_reader(&mut chunked));
    let announced = http.put("/api/v1/objects/global/big").send(&big[..]);
    let mut lost = Vec::new();
    for (result, what) in [
        (streamed, "4 MiB, chunked"),
        (announced, "4 MiB with Content-Length"),
    ] {
        match result {
            Ok(_) => reply(result, what).expect_error(413, "too_large", what),
            Err(e) => {
                lost.push(format!("{what}: {e}"));
                String::new()
            }
        };
    }
    assert!(
        lost.is_empty(),
        "PUTs over max_object_bytes = 1000 got no answer:\n{}",
        lost.join("\n")
    );
    let got = http.get("/api/v1/objects/global/big").reply();
    got.expect_error(404, "not_found", "the refused value");
}
