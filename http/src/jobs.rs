//! Jobs: submit, list, status, result, cancel, and the kinds this node runs.

use std::collections::BTreeMap;

use axum::{extract::Path, http::StatusCode, Json};
use p3_objectspace::Local;
use p3_scheduler::{
    control,
    records::{JobId, JobRecord, JobState},
    spread::Spread,
    Args,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    error::{ApiError, Result},
    State,
};

/// A job's state as one word, with the reason of a failure beside it, so a
/// client reads `state` the same way whatever happened.
fn plain(record: &JobRecord) -> Value {
    let mut json = serde_json::to_value(record).unwrap_or_default();
    if let Value::Object(map) = &mut json {
        map.insert("state".into(), record.state.word().into());
        if let JobState::Failed(reason) = &record.state {
            map.insert("reason".into(), reason.clone().into());
        }
    }
    json
}

/// `GET /api/v1/jobs`: every job's record.
pub async fn list(state: State) -> Result<Json<Vec<Value>>> {
    let mut space = Local::new(state.space.clone());
    let records = control::list(&mut space).await?;
    Ok(Json(records.iter().map(plain).collect()))
}

/// What `POST /api/v1/jobs` asks for: a kind and its arguments (text or
/// numbers).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    kind: String,
    #[serde(default)]
    args: BTreeMap<String, Value>,
}

/// A submitted job.
#[derive(Serialize)]
pub struct Submitted {
    id: String,
}

/// `POST /api/v1/jobs`: runs the job's `main` and publishes it, as
/// `p3ctl job run` does (through this node).
pub async fn submit(
    state: State,
    Json(ask): Json<Submit>,
) -> Result<(StatusCode, Json<Submitted>)> {
    let mut pairs = Vec::new();
    for (key, value) in ask.args {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ApiError::invalid(format!(
                    "argument {key}: give text or a number, not {other}"
                )))
            }
        };
        pairs.push(format!("{key}={text}"));
    }
    let args = Args::from_pairs(pairs)?;
    let id = control::submit(
        &state.data_dir,
        &state.registry,
        &ask.kind,
        args,
        Spread::OverWorkers,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(Submitted { id: id.to_string() })))
}

/// `GET /api/v1/jobs/{id}`: what `p3ctl job status` shows.
pub async fn status(state: State, Path(id): Path<String>) -> Result<Json<Value>> {
    let id = JobId::parse(&id)?;
    let mut space = Local::new(state.space.clone());
    let status = control::status(&mut space, &state.registry, &id).await?;
    let mut json = serde_json::to_value(&status).unwrap_or_default();
    if let Value::Object(map) = &mut json {
        map.insert("job".into(), plain(&status.job));
    }
    Ok(Json(json))
}

/// `GET /api/v1/jobs/{id}/result`: the result once the job is done.
pub async fn result(state: State, Path(id): Path<String>) -> Result<Json<Value>> {
    let id = JobId::parse(&id)?;
    let mut space = Local::new(state.space.clone());
    let (record, _) = control::record(&mut space, &id).await?;
    let unfinished = |why: String| ApiError::new(StatusCode::CONFLICT, "conflict", why);
    match (&record.state, &record.result) {
        (JobState::Done, Some(result)) => serde_json::from_str(result).map(Json).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed",
                format!("the job's result is not JSON: {e}"),
            )
        }),
        (JobState::Failed(reason), _) => Err(unfinished(format!("job {id} failed: {reason}"))),
        (JobState::Cancelled, _) => Err(unfinished(format!("job {id} was cancelled"))),
        _ => Err(unfinished(format!("job {id} is still running"))),
    }
}

/// `DELETE /api/v1/jobs/{id}`: cancels it; its final record.
pub async fn cancel(state: State, Path(id): Path<String>) -> Result<Json<Value>> {
    let id = JobId::parse(&id)?;
    let mut space = Local::new(state.space.clone());
    Ok(Json(plain(&control::cancel(&mut space, &id).await?)))
}

/// A job kind.
#[derive(Serialize)]
pub struct Kind {
    kind: &'static str,
    about: &'static str,
}

/// `GET /api/v1/kinds`.
pub async fn kinds(state: State) -> Json<Vec<Kind>> {
    Json(
        state
            .registry
            .kinds()
            .map(|(kind, about)| Kind { kind, about })
            .collect(),
    )
}
