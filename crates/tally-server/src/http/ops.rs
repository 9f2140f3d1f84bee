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
    metrics::gauge!("tally_operations_in_flight").set(state.engine.operations_in_flight() as f64);
    state.metrics.run_upkeep();
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// `GET /healthz`: the process is up.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the server takes traffic; 503 once it is shutting down, or once its store
/// can no longer write until a restart.
pub async fn ready(State(state): State<HttpState>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting down"}))).into_response();
    }
    match state.engine.stopped() {
        Some(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not writable", "reason": reason})))
                .into_response()
        }
        None => Json(json!({"status": "ready"})).into_response(),
    }
}

/// Most connections the ops listener holds open at once: probes and scrapers, not clients.
const OPS_MAX_CONNECTIONS: usize = 256;

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` from a thread with a runtime of
/// its own, so that load on the counter doors (whose tasks share the main runtime's workers)
/// cannot delay a liveness probe into a restart. The same authentication applies. The thread
/// ends once `shutdown` fires.
pub(crate) fn serve_on_own_thread(
    state: HttpState,
    listener: std::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("tally-ops".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let admission = crate::connections::Admission {
                max_connections: OPS_MAX_CONNECTIONS,
                idle_timeout: Some(std::time::Duration::from_secs(60)),
                progress: crate::connections::Progress::Bytes,
            };
            let door = crate::connections::Doorkeeper::new(listener, "ops", admission);
            let router = axum::Router::new()
                .route("/healthz", axum::routing::get(health))
                .route("/readyz", axum::routing::get(ready))
                .route("/metrics", axum::routing::get(metrics))
                .fallback(no_route)
                .layer(axum::middleware::from_fn_with_state((state.auth.clone(), "ops"), super::authenticate))
                .with_state(state);
            let router = router.into_make_service_with_connect_info::<crate::connections::ClientAddr>();
            axum::serve(door, router).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
            Ok(())
        })
    })
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
