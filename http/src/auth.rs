//! The bearer token: the node's API token from `api.json`, compared in time
//! independent of where the first difference is.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header::AUTHORIZATION, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{ApiError, HttpState};

/// Lets a request through only with `Authorization: Bearer TOKEN`.
pub async fn bearer(State(state): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if same(token.trim().as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => refuse("wrong token; use the token of this node's api.json"),
        None => refuse(
            "missing token: send `Authorization: Bearer TOKEN` (the token of this node's api.json)",
        ),
    }
}

fn refuse(reason: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason).into_response()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
