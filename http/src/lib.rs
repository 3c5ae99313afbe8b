//! P³'s HTTP face: the JSON API, Prometheus metrics and the dashboard that a
//! node serves on a local address (`docs/http.md` is the user's guide).
//!
//! It is a second door to the engine the CBOR API (`p3ctl`) uses, never a
//! second engine: every handler calls the operation `p3ctl`'s request calls
//! (`p3_objectspace::api::server`, `p3_scheduler::control`), so checks, rules
//! and error texts are the same. It must never implement an object-space or
//! job operation itself, never serve `/api` or `/metrics` without the node's
//! token, and never hold a whole value in memory that it can stream.

mod auth;
mod dashboard;
mod error;
mod jobs;
mod locks;
pub mod metrics;
mod node;
mod objects;
mod openapi;
mod watch;

use std::{path::PathBuf, sync::Arc};

use axum::{
    middleware,
    routing::{get, post, put},
    Router,
};
use p3_objectspace::ObjectSpace;
use p3_scheduler::Registry;
use tokio::net::TcpListener;

pub use error::ApiError;
pub use metrics::Metrics;

/// What the handlers share.
pub struct HttpState {
    space: ObjectSpace,
    token: String,
    data_dir: PathBuf,
    registry: Registry,
    locks: locks::Table,
    metrics: Option<Metrics>,
}

impl HttpState {
    /// The state of a node's HTTP server: its engine, its API token, its data
    /// dir (jobs are submitted through it, as `p3ctl` does), the job kinds
    /// its binary knows, and its metrics (`None`: `/metrics` answers 404).
    pub fn new(
        space: ObjectSpace,
        token: String,
        data_dir: PathBuf,
        registry: Registry,
        metrics: Option<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            space,
            token,
            data_dir,
            registry,
            locks: locks::Table::default(),
            metrics,
        })
    }
}

/// The shared state as handlers extract it.
type State = axum::extract::State<Arc<HttpState>>;

/// Every route; `/api/v1` and `/metrics` behind the token.
pub fn router(state: Arc<HttpState>) -> Router {
    let api = Router::new()
        .route("/node", get(node::status))
        .route("/peers", get(node::peers))
        .route("/owners/{ns}/{*name}", get(node::owners))
        .route("/namespaces", get(node::namespaces))
        .route(
            "/namespaces/{ns}",
            put(node::create_namespace).delete(node::remove_namespace),
        )
        .route("/objects/{ns}", get(objects::list))
        .route(
            "/objects/{ns}/{*name}",
            get(objects::get)
                .head(objects::head)
                .put(objects::put)
                .delete(objects::remove),
        )
        .route("/stat/{ns}/{*name}", get(objects::stat))
        .route("/search/{ns}", get(objects::search))
        .route("/take/{ns}", post(objects::take_match))
        .route("/take/{ns}/{*name}", post(objects::take))
        .route("/locks", get(locks::list).post(locks::acquire))
        .route("/locks/{id}", axum::routing::delete(locks::release))
        .route("/locks/{id}/renew", post(locks::renew))
        .route("/watch/{ns}", get(watch::watch))
        .route("/jobs", get(jobs::list).post(jobs::submit))
        .route("/jobs/{id}", get(jobs::status).delete(jobs::cancel))
        .route("/jobs/{id}/result", get(jobs::result))
        .route("/kinds", get(jobs::kinds))
        .fallback(error::no_route);
    let guarded = Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics::scrape))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::bearer))
        .layer(middleware::from_fn(error::as_json));
    Router::new()
        .merge(guarded)
        .route("/api/openapi.json", get(openapi::document))
        .merge(dashboard::routes())
        .layer(middleware::from_fn(metrics::count_request))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}
