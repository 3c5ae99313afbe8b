//! Prometheus metrics. Library crates record into the `metrics` facade
//! (names below, and `p3_objectspace::metrics`, `p3_scheduler` job counters);
//! the node installs one recorder per process and `/metrics` renders it.
//! Gauges of state that has one owner (peers, routing table, store size) are
//! read when scraped rather than pushed on every change.

use std::{path::Path, time::Instant};

use axum::{
    extract::Request,
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

use crate::{error::ApiError, State};

/// The process's metrics, as `/metrics` renders them.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

/// Latency buckets, seconds: from a cached read (0.1 ms) to a blocking call.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

impl Metrics {
    /// Installs the process-wide recorder. Once per process: a second call
    /// fails (the facade has one recorder).
    pub fn install() -> Result<Self, BuildError> {
        let handle = PrometheusBuilder::new()
            .set_buckets(BUCKETS)?
            .install_recorder()?;
        describe();
        Ok(Self { handle })
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "p3_operations_total",
        "Object-space operations by kind (op) and outcome"
    );
    describe_histogram!(
        "p3_operation_seconds",
        Unit::Seconds,
        "Latency of object-space operations by kind (op)"
    );
    describe_counter!(
        "p3_bytes_in_total",
        Unit::Bytes,
        "Value bytes written by clients of this node"
    );
    describe_counter!(
        "p3_bytes_out_total",
        Unit::Bytes,
        "Value bytes read by clients of this node"
    );
    describe_counter!(
        "p3_replica_stores_total",
        "Replica copies stored on behalf of primaries, by outcome"
    );
    describe_counter!(
        "p3_repair_pushed_total",
        "Records pushed to owners that lacked them by repair rounds"
    );
    describe_counter!("p3_repair_rounds_total", "Repair rounds run");
    describe_counter!(
        "p3_repair_handed_off_total",
        "Records handed to new owners by repair rounds"
    );
    describe_gauge!(
        "p3_locks_held",
        "Locks this node holds for its clients (API connections, workers, HTTP handles)"
    );
    describe_gauge!(
        "p3_locks_waiting",
        "Lock acquisitions of this node's clients waiting in line"
    );
    describe_gauge!(
        "p3_http_lock_handles",
        "Locks held for HTTP clients by handle"
    );
    describe_counter!(
        "p3_job_slices_total",
        "Slices computed by this node's worker, by job"
    );
    describe_counter!(
        "p3_job_steals_total",
        "Tasks this node's worker stole, by job"
    );
    describe_counter!(
        "p3_job_divides_total",
        "Times this node's worker divided a task for a thief, by job"
    );
    describe_counter!(
        "p3_job_restarts_total",
        "Tasks this node's worker resumed from a checkpoint, by job"
    );
    describe_gauge!("p3_peers_connected", "Peers with an open connection");
    describe_gauge!(
        "p3_routing_table_size",
        "Peers in the Kademlia routing table"
    );
    describe_gauge!(
        "p3_store_bytes",
        Unit::Bytes,
        "Size of this node's database on disk"
    );
    describe_gauge!(
        "p3_volatile_bytes",
        Unit::Bytes,
        "Bytes of volatile objects held in memory"
    );
    describe_counter!(
        "p3_http_requests_total",
        "HTTP requests by method and status class"
    );
    describe_histogram!(
        "p3_http_request_seconds",
        Unit::Seconds,
        "Time to the HTTP answer's headers"
    );
}

/// Bytes of the files under `dir` (the RocksDB directory), not following
/// links; a file that vanishes while counted (compaction) counts as 0.
fn size_of_dir(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => size_of_dir(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `GET /metrics`.
pub async fn scrape(state: State) -> Response {
    let Some(metrics) = &state.metrics else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are off on this node",
        )
        .into_response();
    };
    if let Ok(status) = state.space.node().status().await {
        metrics::gauge!("p3_peers_connected").set(status.connected_peers as f64);
        metrics::gauge!("p3_routing_table_size").set(status.routing_table_size as f64);
    }
    metrics::gauge!("p3_volatile_bytes").set(state.space.store().volatile_bytes() as f64);
    let db = state.data_dir.join("db");
    let bytes = tokio::task::spawn_blocking(move || size_of_dir(&db))
        .await
        .unwrap_or(0);
    metrics::gauge!("p3_store_bytes").set(bytes as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.handle.render(),
    )
        .into_response()
}

/// Counts every HTTP request by method and status class.
pub async fn count_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("p3_http_requests_total", "method" => method, "status" => class).increment(1);
    metrics::histogram!("p3_http_request_seconds").record(started.elapsed().as_secs_f64());
    response
}
