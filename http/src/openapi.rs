//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the routes,
//! kept as a document beside the code (a test checks that every route is in
//! it and that it lists no route the server lacks).

use axum::http::header;
use axum::response::IntoResponse;

/// The document.
pub const DOCUMENT: &str = include_str!("../assets/openapi.json");

/// `GET /api/openapi.json`.
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
