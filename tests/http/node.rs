//! Namespaces, the node's status, metrics, and jobs.

use std::collections::BTreeSet;

use serde_json::json;

use crate::common::{objects::expected_owners, pseudo_random, wait_for, DEADLINE};

use super::client::*;

// ---------------------------------------------------------------------------
// Namespaces, the node, metrics.

#[test]
fn namespaces_node_status_and_metrics() {
    let cluster = formed(3);
    let http: Vec<Http> = cluster.nodes.iter().map(Http::of).collect();
    let all: Vec<String> = cluster.nodes.iter().map(|n| n.peer_id.clone()).collect();

    // The node, its peers, the owners of a key.
    let status = http[1].get("/api/v1/node").reply();
    status.expect(200, "GET /node");
    let status = status.json();
    assert_eq!(status["peer_id"], all[1].as_str(), "{status}");
    assert!(status["role"].is_string(), "{status}");
    let peers = http[1].get("/api/v1/peers").reply();
    peers.expect(200, "GET /peers");
    let peers = peers.json();
    let known: BTreeSet<String> = peers
        .as_array()
        .expect("a list of peers")
        .iter()
        .map(|p| p["peer_id"].as_str().expect("peer_id").to_owned())
        .collect();
    assert_eq!(
        known,
        cluster.others(1).into_iter().collect::<BTreeSet<_>>(),
        "{peers}"
    );
    let owners = http[2].get("/api/v1/owners/global/x").reply();
    owners.expect(200, "GET /owners/global/x");
    let owners = owners.json();
    assert_eq!(owners["path"], "global/x", "{owners}");
    let owners: Vec<String> = owners["owners"]
        .as_array()
        .expect("owners")
        .iter()
        .map(|o| o.as_str().expect("owner").to_owned())
        .collect();
    assert_eq!(
        owners,
        expected_owners("global", "x", &all, 3),
        "the 3 nodes nearest to the key, nearest (the primary) first"
    );

    // Namespaces.
    http[0]
        .put("/api/v1/namespaces/ns1")
        .empty()
        .expect(201, "create ns1");
    let error = http[1].put("/api/v1/namespaces/ns1").empty().expect_error(
        409,
        "conflict",
        "create ns1 again",
    );
    assert!(error.contains("ns1"), "{error}");
    let listed = http[2].get("/api/v1/namespaces").reply();
    listed.expect(200, "GET /namespaces");
    let listed = listed.json();
    assert_eq!(listed[0], "global", "global first: {listed}");
    assert!(
        listed.as_array().expect("list").contains(&json!("ns1")),
        "{listed}"
    );
    http[1].put_object("ns1/inside", b"in ns1");
    http[2]
        .get("/api/v1/objects/ns1/inside")
        .reply()
        .expect(200, "GET ns1/inside");
    http[2]
        .delete("/api/v1/namespaces/ns1")
        .reply()
        .expect(204, "remove ns1");
    http[0]
        .get("/api/v1/objects/ns1/inside")
        .reply()
        .expect_error(404, "not_found", "GET of an object of a removed namespace");
    let listed = http[0].get("/api/v1/namespaces").reply().json();
    assert!(
        !listed.as_array().expect("list").contains(&json!("ns1")),
        "{listed}"
    );
    http[0]
        .put("/api/v1/objects/ns1/again")
        .bytes(b"x")
        .expect_error(404, "not_found", "a write into a removed namespace");
    http[0]
        .delete("/api/v1/namespaces/global")
        .reply()
        .expect_error(400, "invalid", "removing global");

    // Metrics: connections, and counters that a PUT and a GET move.
    let before = wait_for("p3_peers_connected 2", DEADLINE, || {
        let text = scrape(&http[0]);
        (metric(&text, "p3_peers_connected", &[]) == 2.0).then_some(text)
    });
    let value = pseudo_random(100_000, 6);
    http[0].put_object("global/m/counted", &value);
    let got = http[0].get("/api/v1/objects/global/m/counted").reply();
    got.expect(200, "GET global/m/counted");
    assert!(got.body == value);
    let after = scrape(&http[0]);
    let count = |text: &str, op: &str| {
        metric(
            text,
            "p3_operations_total",
            &[("op", op), ("outcome", "ok")],
        )
    };
    for op in ["put", "get"] {
        assert!(
            count(&after, op) > count(&before, op),
            "p3_operations_total{{op={op:?},outcome=\"ok\"}}: {} before, {} after",
            count(&before, op),
            count(&after, op)
        );
    }
    let bytes_in = |text: &str| metric(text, "p3_bytes_in_total", &[]);
    assert!(
        bytes_in(&after) - bytes_in(&before) >= value.len() as f64,
        "p3_bytes_in_total: {} before, {} after a {}-byte put",
        bytes_in(&before),
        bytes_in(&after),
        value.len()
    );
    let bytes_out = |text: &str| metric(text, "p3_bytes_out_total", &[]);
    assert!(
        bytes_out(&after) - bytes_out(&before) >= value.len() as f64,
        "p3_bytes_out_total: {} before, {} after a {}-byte get",
        bytes_out(&before),
        bytes_out(&after),
        value.len()
    );
    assert!(
        metric(&after, "p3_http_requests_total", &[("method", "PUT")]) >= 1.0,
        "HTTP requests are counted"
    );
}

// ---------------------------------------------------------------------------
// Jobs.

#[test]
fn jobs_submit_poll_result_list_and_cancel() {
    let cluster = formed(1);
    let http = Http::of(&cluster.nodes[0]);

    let kinds = http.get("/api/v1/kinds").reply();
    kinds.expect(200, "GET /kinds");
    let kinds = kinds.json();
    let names: BTreeSet<&str> = kinds
        .as_array()
        .expect("a list of kinds")
        .iter()
        .map(|k| {
            assert!(k["about"].is_string(), "{k}");
            k["kind"].as_str().expect("kind")
        })
        .collect();
    for kind in ["sum", "nqueens", "matmul", "sleep"] {
        assert!(names.contains(kind), "{kind} is not in {kinds}");
    }

    let submitted = http
        .post("/api/v1/jobs")
        .json_body(&json!({"kind": "sum", "args": {"to": 1000}}));
    submitted.expect(201, "submit sum to=1000");
    let id = submitted.json()["id"].as_str().expect("job id").to_owned();
    let status = wait_for("the sum job to be done", DEADLINE, || {
        let status = http.get(&format!("/api/v1/jobs/{id}")).reply();
        status.expect(200, "job status");
        let status = status.json();
        assert_ne!(status["job"]["state"], "failed", "{status}");
        (status["job"]["state"] == "done").then_some(status)
    });
    assert_eq!(status["job"]["kind"], "sum", "{status}");
    assert_eq!(status["progress"], 1.0, "{status}");
    let result = http.get(&format!("/api/v1/jobs/{id}/result")).reply();
    result.expect(200, "the result");
    let result = result.json();
    assert_eq!(result["sum"], "500500", "1 + ... + 1000: {result}");
    // The node's worker ran the job: its slices are counted under its id,
    // and its store holds what the job wrote.
    let metrics = scrape(&http);
    assert!(
        metric(&metrics, "p3_job_slices_total", &[("job", &id)]) >= 1.0,
        "slices of job {id} in:\n{metrics}"
    );
    assert!(metric(&metrics, "p3_store_bytes", &[]) > 0.0, "{metrics}");
    assert!(
        metrics.contains("p3_operation_seconds_bucket{op=\"put\""),
        "a latency histogram of puts: {metrics}"
    );
    let listed = http.get("/api/v1/jobs").reply();
    listed.expect(200, "GET /jobs");
    let listed = listed.json();
    let record = listed
        .as_array()
        .expect("a list of jobs")
        .iter()
        .find(|j| j["id"] == id.as_str())
        .unwrap_or_else(|| panic!("job {id} is not listed: {listed}"));
    assert_eq!(record["state"], "done", "{record}");
    assert_eq!(record["kind"], "sum", "{record}");

    // A long job, cancelled.
    let submitted = http.post("/api/v1/jobs").json_body(&json!({
        "kind": "sleep",
        "args": {"total": "10m", "slice": "100ms"}
    }));
    submitted.expect(201, "submit sleep total=10m");
    let long = submitted.json()["id"].as_str().expect("job id").to_owned();
    http.get(&format!("/api/v1/jobs/{long}/result"))
        .reply()
        .expect_error(409, "conflict", "the result of a running job");
    let cancelled = http.delete(&format!("/api/v1/jobs/{long}")).reply();
    cancelled.expect(200, "cancel");
    let cancelled = cancelled.json();
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert!(cancelled["finished_ms"].as_u64().is_some(), "{cancelled}");
    let error = http
        .get(&format!("/api/v1/jobs/{long}/result"))
        .reply()
        .expect_error(409, "conflict", "the result of a cancelled job");
    assert!(error.contains("cancelled"), "{error}");

    // Refused submissions.
    for (body, what) in [
        (json!({"kind": "no-such-kind"}), "an unknown kind"),
        (
            json!({"kind": "sum", "args": {"bogus": 1}}),
            "an unknown argument",
        ),
        (
            json!({"kind": "sum", "args": {"to": "many"}}),
            "a non-number",
        ),
        (
            json!({"kind": "sum", "args": {"from": 10, "to": 1}}),
            "from > to",
        ),
        (
            json!({"kind": "sum", "args": {"to": [1, 2]}}),
            "a list argument",
        ),
    ] {
        http.post("/api/v1/jobs")
            .json_body(&body)
            .expect_error(400, "invalid", what);
    }
    http.get("/api/v1/jobs/0123456789ab").reply().expect_error(
        404,
        "not_found",
        "a job that does not exist",
    );
}
