//! Locks held by the node for HTTP clients. An HTTP client has no connection
//! whose end releases its lock (as the CBOR API's has), so it gets a handle:
//! the node holds the lock (renewing its lease with the owners) while the
//! client renews the handle, and releases it when the client does or when
//! the handle goes `lease_ms` without a renewal.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{extract::Path, http::StatusCode, Json};
use p3_objectspace::{
    lock::{Held, LockMode},
    Local, LocalLock,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{
    error::{ApiError, Result},
    HttpState, State,
};

/// Most handles one node keeps for HTTP clients: each is a lease the node
/// renews, so a client cannot make it hold without bound.
const MAX_HANDLES: usize = 10_000;
/// Longest lease a handle may ask for.
const MAX_LEASE: Duration = Duration::from_secs(3600);

/// The handles, by id.
#[derive(Default)]
pub struct Table(Mutex<HashMap<u64, Arc<Handle>>>);

struct Handle {
    path: String,
    mode: LockMode,
    lease: Duration,
    lock: Mutex<Option<LocalLock>>,
    /// When the client must renew by.
    due: Mutex<Instant>,
    renewed: Notify,
}

impl Table {
    fn get(&self, id: u64) -> Option<Arc<Handle>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn remove(&self, id: u64) -> Option<Arc<Handle>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
    }
}

/// What `POST /api/v1/locks` asks for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acquire {
    path: String,
    #[serde(default = "write")]
    mode: LockMode,
    #[serde(default = "default_lease")]
    lease_ms: u64,
    timeout_ms: Option<u64>,
}

fn write() -> LockMode {
    LockMode::Write
}

fn default_lease() -> u64 {
    10_000
}

/// A handle as the client sees it.
#[derive(Serialize)]
pub struct Granted {
    id: String,
    path: String,
    mode: LockMode,
    token: u64,
    valid_ms: u64,
}

fn granted(id: u64, handle: &Handle) -> Result<Granted> {
    let lock = handle.lock.lock().unwrap_or_else(PoisonError::into_inner);
    let lock = lock.as_ref().ok_or_else(|| gone(id))?;
    let valid_ms = match lock.held() {
        Held::Until(until) => until.saturating_duration_since(Instant::now()).as_millis() as u64,
        Held::Lost(e) => {
            return Err(ApiError::new(
                StatusCode::LOCKED,
                "locked",
                format!("lock lost: {e}"),
            ))
        }
    };
    Ok(Granted {
        id: format!("{id:016x}"),
        path: handle.path.clone(),
        mode: handle.mode,
        token: lock.token(),
        valid_ms,
    })
}

fn gone(id: u64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no lock handle {id:016x} (released, or not renewed within its lease)"),
    )
}

fn parse_id(id: &str) -> Result<u64> {
    u64::from_str_radix(id, 16)
        .map_err(|_| ApiError::invalid(format!("{id:?} is not a lock handle")))
}

/// `POST /api/v1/locks`: acquires, waiting up to `timeout_ms` (default: as
/// long as it takes).
pub async fn acquire(
    state: State,
    Json(ask): Json<Acquire>,
) -> Result<(StatusCode, Json<Granted>)> {
    let lease = Duration::from_millis(ask.lease_ms);
    if lease > MAX_LEASE {
        return Err(ApiError::invalid(format!(
            "lease_ms={}: at most {} ms",
            ask.lease_ms,
            MAX_LEASE.as_millis()
        )));
    }
    if state
        .locks
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len()
        >= MAX_HANDLES
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("this node holds {MAX_HANDLES} locks for HTTP clients; release some first"),
        ));
    }
    // "As long as it takes" is a year; the acquirer retries with each primary.
    let wait = ask
        .timeout_ms
        .map_or(Duration::from_secs(365 * 24 * 3600), Duration::from_millis);
    let lock = Local::new(state.space.clone())
        .lock(&ask.path, ask.mode, lease, wait)
        .await?;
    let lease = lease.max(p3_objectspace::local::MIN_LEASE);
    let id = rand::random::<u64>();
    let handle = Arc::new(Handle {
        path: ask.path,
        mode: ask.mode,
        lease,
        lock: Mutex::new(Some(lock)),
        due: Mutex::new(Instant::now() + lease),
        renewed: Notify::new(),
    });
    state
        .locks
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, handle.clone());
    tokio::spawn(expire(state.0.clone(), id, handle.clone()));
    metrics::gauge!("p3_http_lock_handles").increment(1.0);
    Ok((StatusCode::CREATED, Json(granted(id, &handle)?)))
}

/// Releases a handle the client stopped renewing.
async fn expire(state: Arc<HttpState>, id: u64, handle: Arc<Handle>) {
    loop {
        let due = *handle.due.lock().unwrap_or_else(PoisonError::into_inner);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {
                let late = *handle.due.lock().unwrap_or_else(PoisonError::into_inner) <= Instant::now();
                if late {
                    break;
                }
            }
            _ = handle.renewed.notified() => {}
        }
    }
    if state.locks.remove(id).is_some() {
        tracing::info!(path = %handle.path, "HTTP lock handle not renewed within its lease; releasing");
        release_now(&handle).await;
    }
}

async fn release_now(handle: &Handle) -> Option<p3_objectspace::SpaceError> {
    metrics::gauge!("p3_http_lock_handles").decrement(1.0);
    let lock = handle
        .lock
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()?;
    lock.release().await.err()
}

/// `POST /api/v1/locks/{id}/renew`.
pub async fn renew(state: State, Path(id): Path<String>) -> Result<Json<Granted>> {
    let id = parse_id(&id)?;
    let handle = state.locks.get(id).ok_or_else(|| gone(id))?;
    match granted(id, &handle) {
        Ok(granted) => {
            *handle.due.lock().unwrap_or_else(PoisonError::into_inner) =
                Instant::now() + handle.lease;
            handle.renewed.notify_one();
            Ok(Json(granted))
        }
        Err(e) => {
            // A lost lock's handle is of no more use.
            if state.locks.remove(id).is_some() {
                release_now(&handle).await;
            }
            Err(e)
        }
    }
}

/// `DELETE /api/v1/locks/{id}`.
pub async fn release(state: State, Path(id): Path<String>) -> Result<StatusCode> {
    let id = parse_id(&id)?;
    let handle = state.locks.remove(id).ok_or_else(|| gone(id))?;
    match release_now(&handle).await {
        None => Ok(StatusCode::NO_CONTENT),
        Some(e) => Err(e.into()),
    }
}

/// `GET /api/v1/locks`.
pub async fn list(state: State) -> Json<Vec<Granted>> {
    let handles: Vec<(u64, Arc<Handle>)> = state
        .locks
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(id, h)| (*id, h.clone()))
        .collect();
    Json(
        handles
            .iter()
            .filter_map(|(id, h)| granted(*id, h).ok())
            .collect(),
    )
}
