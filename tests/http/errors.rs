//! Bad input gets the right status and one line of JSON; every route the
//! OpenAPI document lists exists.

use std::fs;

use serde_json::json;
use ureq::SendBody;

use crate::common::NodeProc;

use super::client::*;

// ---------------------------------------------------------------------------
// Bad input.

/// A one-node cluster under `root` whose `config.toml` says
/// `max_object_bytes = limit`.
pub fn node_with_limit(root: &std::path::Path, limit: u64) -> NodeProc {
    let dir = root.join("node");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("config.toml"),
        format!("[space]\nmax_object_bytes = {limit}\n"),
    )
    .unwrap();
    NodeProc::start(&dir, &[])
}

#[test]
fn bad_input_gets_the_right_status_and_one_line_of_json() {
    let root = tempfile::tempdir().unwrap();
    let node = node_with_limit(root.path(), 1000);
    let http = Http::of(&node);
    http.put_object("global/ok", b"fine");

    // Tokens.
    let bare = |path: &str| http.agent.get(http.url(path));
    bare("/api/v1/node")
        .reply()
        .expect_error(401, "unauthorized", "no token");
    bare("/api/v1/node")
        .header("Authorization", "Bearer not-the-token")
        .reply()
        .expect_error(401, "unauthorized", "a wrong token");
    bare("/api/v1/node")
        .header("Authorization", format!("Basic {}", http.token))
        .reply()
        .expect_error(401, "unauthorized", "the token, not as a bearer token");
    bare("/metrics")
        .reply()
        .expect_error(401, "unauthorized", "/metrics without token");
    bare("/api/v1/objects/global/ok").reply().expect_error(
        401,
        "unauthorized",
        "an object without token",
    );
    let head = http
        .agent
        .head(http.url("/api/v1/objects/global/ok"))
        .reply();
    head.expect(401, "HEAD without token");
    assert!(head.body.is_empty());

    // Routes and methods.
    let error = http.get("/api/v1/no-such-thing").reply().expect_error(
        404,
        "not_found",
        "an unknown route",
    );
    assert!(error.starts_with("no such endpoint"), "{error}");
    http.post("/api/v1/node")
        .empty()
        .expect_error(405, "method", "POST to a GET-only route");

    // Names.
    for (path, what) in [
        ("/api/v1/objects/BAD%20NS/x", "a namespace with a space"),
        ("/api/v1/objects/Global/x", "an upper-case namespace"),
        ("/api/v1/objects/%2E%2E/x", "namespace `..`"),
        (
            "/api/v1/objects/.hidden/x",
            "a namespace starting with a dot",
        ),
        ("/api/v1/objects/global/a%00b", "a name with NUL"),
    ] {
        http.put(path)
            .bytes(b"x")
            .expect_error(400, "invalid", &format!("PUT {what}"));
        http.get(path)
            .reply()
            .expect_error(400, "invalid", &format!("GET {what}"));
    }
    let long = format!("/api/v1/objects/global/{}", "n".repeat(1025));
    http.put(&long)
        .bytes(b"x")
        .expect_error(400, "invalid", "a 1025-byte name");
    http.put("/api/v1/namespaces/No_Caps").empty().expect_error(
        400,
        "invalid",
        "creating an invalid namespace",
    );
    // `..` inside an object name is no path traversal: names are opaque
    // text (objectspace/src/name.rs), so it names an object like any other.
    let dots = http.put("/api/v1/objects/global/a/%2E%2E/b").bytes(b"dots");
    dots.expect(201, "PUT global/a/../b");
    assert_eq!(dots.json()["path"], "global/a/../b");
    assert_eq!(
        http.get("/api/v1/objects/global/a/%2E%2E/b").reply().body,
        b"dots"
    );
    http.get("/api/v1/objects/global/b").reply().expect_error(
        404,
        "not_found",
        "global/b (`a/../b` is not `b`)",
    );

    // Malformed JSON bodies (for well-formed JSON of the wrong shape, see
    // `a_json_body_of_the_wrong_shape_is_a_400`).
    for (path, body) in [
        ("/api/v1/locks", "{\"path\": \"global/l\","),
        ("/api/v1/locks", ""),
        ("/api/v1/jobs", "not json"),
        ("/api/v1/jobs", "{\"kind\": \"sum\"} trailing"),
    ] {
        http.post(path)
            .header("Content-Type", "application/json")
            .bytes(body.as_bytes())
            .expect_error(400, "invalid", &format!("POST {path} {body}"));
    }
    http.lock(json!({"path": "no-slash"})).expect_error(
        400,
        "invalid",
        "a lock on a path without a namespace",
    );

    // Query strings.
    for (path, what) in [
        ("/api/v1/objects/global/ok?bogus=1", "GET"),
        ("/api/v1/objects/global?bogus=1", "list"),
        ("/api/v1/watch/global?bogus=1", "watch"),
        ("/api/v1/search/global?q=*&bogus=1", "search"),
        (
            "/api/v1/objects/global/ok?wait_ms=soon",
            "wait_ms not a number",
        ),
        (
            "/api/v1/search/global?q=color%20is%20red",
            "a query that does not parse",
        ),
    ] {
        http.get(path)
            .reply()
            .expect_error(400, "invalid", &format!("{what}: {path}"));
    }
    http.put("/api/v1/objects/global/q?bogus=1")
        .bytes(b"x")
        .expect_error(400, "invalid", "PUT with an unknown parameter");
    http.post("/api/v1/take/global/ok?bogus=1")
        .empty()
        .expect_error(400, "invalid", "take with an unknown parameter");

    // Headers.
    http.put("/api/v1/objects/global/ok")
        .header("If-Match", "abc")
        .bytes(b"x")
        .expect_error(400, "invalid", "If-Match: abc");
    http.put("/api/v1/objects/global/ok")
        .header("If-None-Match", "\"3\"")
        .bytes(b"x")
        .expect_error(400, "invalid", "If-None-Match other than *");
    http.get("/api/v1/objects/global/ok")
        .header("Range", "lines=1-2")
        .reply()
        .expect_error(400, "invalid", "a Range not in bytes");

    // Too large for this node's max_object_bytes = 1000: announced, and not.
    let error = http
        .put("/api/v1/objects/global/big")
        .bytes(&[7u8; 2000])
        .expect_error(413, "too_large", "2000 bytes with Content-Length");
    assert!(error.contains("1000"), "{error}");
    let mut chunked: &[u8] = &[7u8; 5000];
    let reply = reply(
        http.put("/api/v1/objects/global/big")
            .send(SendBody::from_reader(&mut chunked)),
        "a chunked PUT",
    );
    reply.expect_error(413, "too_large", "5000 bytes, chunked");
    http.get("/api/v1/objects/global/big").reply().expect_error(
        404,
        "not_found",
        "an object refused as too large",
    );

    // After all of that, the node still serves.
    let got = http.get("/api/v1/objects/global/ok").reply();
    got.expect(200, "a normal GET after the bad input");
    assert_eq!(got.body, b"fine");
}

// ---------------------------------------------------------------------------
// OpenAPI.

#[test]
fn every_route_the_openapi_document_lists_exists() {
    let cluster = formed(1);
    let http = Http::of(&cluster.nodes[0]);

    // No token needed.
    let document = reply(
        http.agent.get(http.url("/api/openapi.json")).call(),
        "GET /api/openapi.json",
    );
    document.expect(200, "GET /api/openapi.json without token");
    let document = document.json();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{} paths", paths.len());

    let mut probed = 0;
    for (template, item) in paths {
        let path = template
            .replace("{ns}", "global")
            .replace("{name}", "openapi-probe")
            .replace("{id}", "0000000000000000");
        assert!(!path.contains('{'), "an unknown parameter in {template}");
        let methods = item.as_object().expect("a path item");
        // A path item's other fields (OpenAPI 3.1, 4.8.9) are no methods.
        let fields = ["summary", "description", "parameters", "servers", "$ref"];
        for method in methods.keys().filter(|k| !fields.contains(&k.as_str())) {
            let what = format!("{} {path}", method.to_uppercase());
            let reply = match method.as_str() {
                "get" if path.starts_with("/api/v1/watch/") => {
                    // An endless stream: its headers are the answer.
                    let response = http.get(&path).call().expect(&what);
                    Reply {
                        status: response.status().as_u16(),
                        headers: response.headers().clone(),
                        body: Vec::new(),
                    }
                }
                "get" => http.get(&path).reply(),
                "head" => {
                    // A HEAD has no body to tell a missing object from a
                    // missing route: make sure the object exists.
                    http.put_object("global/openapi-probe", b"probe");
                    http.head(&path).reply()
                }
                "delete" => http.delete(&path).reply(),
                "put" => http.put(&path).bytes(b"probe"),
                "post" => match path.as_str() {
                    "/api/v1/locks" => http.lock(json!({
                        "path": "global/openapi-lock",
                        "lease_ms": 1000,
                        "timeout_ms": 100
                    })),
                    "/api/v1/jobs" => http
                        .post(&path)
                        .json_body(&json!({"kind": "sum", "args": {"to": 10}})),
                    _ => http.post(&path).empty(),
                },
                other => panic!("{template}: unexpected method {other}"),
            };
            assert_ne!(
                reply.status, 405,
                "{what}: the document lists a method the route lacks"
            );
            if method == "head" {
                reply.expect(200, &format!("{what} of an object that exists"));
            }
            if reply.status == 404 && method != "head" {
                let body = reply.json();
                let error = body["error"].as_str().unwrap_or("");
                assert!(
                    !error.starts_with("no such endpoint"),
                    "{what}: the document lists a route the server lacks: {body}"
                );
            }
            assert!(
                reply.status < 500,
                "{what}: {} {:.300}",
                reply.status,
                reply.text()
            );
            probed += 1;
        }
    }
    assert!(probed >= 25, "{probed} (path, method) pairs probed");
}
