//! Operational routes: metrics, liveness, readiness, and the answers for unknown routes.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tally_core::ErrorCode;

use super::HttpState;
use crate::error::ApiError;

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<HttpState>) -> Response {
    state.metrics.run_upkeep();
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// `GET /healthz`: the process is up.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the server takes traffic; 503 once it is shutting down.
pub async fn ready(State(state): State<HttpState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting down"}))).into_response()
    }
}

/// Any path not in the route table.
pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {method} {}; see /openapi.json", uri.path()))
}

/// A known path with a method it does not serve.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!("{} does not accept {method}; see /openapi.json", uri.path());
    let body = json!({"error": {"code": ErrorCode::InvalidArgument.as_str(), "message": message}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}
