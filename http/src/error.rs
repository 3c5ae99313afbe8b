//! Errors as HTTP answers: a status and a JSON body with the one-line reason
//! the CLI prints and a kind a program can branch on.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use p3_objectspace::SpaceError;
use p3_scheduler::JobError;
use serde::Serialize;

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// Machine-readable kind (`not_found`, `version_conflict`, ...).
    pub kind: &'static str,
    /// One line for people.
    pub reason: String,
}

impl ApiError {
    /// An error with this status, kind and reason.
    pub fn new(status: StatusCode, kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            reason: reason.into(),
        }
    }

    /// A request that makes no sense (bad header, query or body).
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", reason)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    kind: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.reason,
            kind: self.kind,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<SpaceError> for ApiError {
    fn from(e: SpaceError) -> Self {
        use StatusCode as S;
        let (status, kind) = match &e {
            SpaceError::InvalidName(_) | SpaceError::Invalid(_) => (S::BAD_REQUEST, "invalid"),
            SpaceError::NoSuchNamespace(_) | SpaceError::NotFound(_) => (S::NOT_FOUND, "not_found"),
            SpaceError::NamespaceExists(_) => (S::CONFLICT, "conflict"),
            SpaceError::VersionConflict { .. } => (S::PRECONDITION_FAILED, "version_conflict"),
            SpaceError::TooLarge { .. } | SpaceError::VolatileTooLarge { .. } => {
                (S::PAYLOAD_TOO_LARGE, "too_large")
            }
            SpaceError::Fenced(_) => (S::LOCKED, "locked"),
            SpaceError::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
            SpaceError::TimedOut(_) | SpaceError::Locked { .. } => {
                (S::REQUEST_TIMEOUT, "timed_out")
            }
            SpaceError::NotEnoughOwners { .. }
            | SpaceError::Unavailable(_)
            | SpaceError::OutcomeUnknown(_)
            | SpaceError::Stopped => (S::SERVICE_UNAVAILABLE, "unavailable"),
            SpaceError::Corrupt(_) | SpaceError::Storage(_) => {
                (S::INTERNAL_SERVER_ERROR, "storage")
            }
        };
        Self::new(status, kind, e.to_string())
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Space(e) => e.into(),
            JobError::Arg(_) | JobError::UnknownKind(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid", e.to_string())
            }
            JobError::NoSuchJob(_) => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            JobError::Cancelled => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            JobError::Codec(_) | JobError::Failed(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "failed", e.to_string())
            }
        }
    }
}

impl From<p3_objectspace::NameError> for ApiError {
    fn from(e: p3_objectspace::NameError) -> Self {
        SpaceError::from(e).into()
    }
}

/// A path under `/api/v1` that is no route.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {}", uri.path()),
    )
}

/// Makes every error answer under `/api` JSON with one line: axum's own
/// rejections (a malformed JSON body, a bad query string, a method the
/// route lacks) come as plain text otherwise.
pub async fn as_json(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 << 10).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    // axum answers a JSON body of the wrong shape with 422 and one without
    // its content type with 415; to a client both are a bad request.
    let status = match status {
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            StatusCode::BAD_REQUEST
        }
        other => other,
    };
    let (kind, reason) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method", "this endpoint has no such method".to_owned()),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", line),
        s if s.is_client_error() => ("invalid", line),
        _ => ("failed", line),
    };
    let reason = if reason.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        reason
    };
    ApiError::new(status, kind, reason).into_response()
}

/// What handlers return.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_errors_get_the_statuses_docs_http_md_promises() {
        let cases = [
            (SpaceError::NotFound("global/x".into()), 404, "not_found"),
            (SpaceError::NamespaceExists("a".into()), 409, "conflict"),
            (
                SpaceError::VersionConflict {
                    path: "global/x".into(),
                    expected: 1,
                    current: 2,
                },
                412,
                "version_conflict",
            ),
            (SpaceError::TooLarge { size: 2, max: 1 }, 413, "too_large"),
            (SpaceError::Fenced("stale token".into()), 423, "locked"),
            (SpaceError::TimedOut("waited".into()), 408, "timed_out"),
            (
                SpaceError::Unavailable("no owner".into()),
                503,
                "unavailable",
            ),
            (SpaceError::InvalidName("bad".into()), 400, "invalid"),
        ];
        for (error, status, kind) in cases {
            let reason = error.to_string();
            let api = ApiError::from(error);
            assert_eq!((api.status.as_u16(), api.kind), (status, kind), "{reason}");
            assert_eq!(api.reason, reason, "the CLI's text, unchanged");
        }
    }
}
