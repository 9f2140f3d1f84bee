//! The HTTP/JSON front door.
//!
//! [`ROUTES`] lists every route; the router serves exactly those, and `/openapi.json`
//! describes them (a test holds the three together). Unknown paths and methods answer the
//! same JSON error shape as every other failure.

mod body;
mod counters;
mod events;
mod namespaces;
pub mod openapi;
pub(crate) mod ops;
mod parse_refusals;
mod series;
mod serve;
mod ui;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tally_core::Operation;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use tally_core::ErrorCode;
use tally_engine::Engine;

use crate::auth::{Authenticator, Principal};
use crate::error::ApiError;

/// One HTTP route: method, path (axum syntax) and the operation it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// The path, with `{ns}` and `{counter}` placeholders.
    pub path: &'static str,
    /// The operation it serves.
    pub operation: Operation,
}

const COUNTER: &str = "/v1/namespaces/{ns}/counters/{counter}";

/// `BatchAddCount`: the colon is a custom method on the `counters` collection (as Google's
/// API style writes them), not a path parameter.
const BATCH_ADD: &str = "/v1/counters:batchAdd";
/// `BatchGetCount`.
const BATCH_GET: &str = "/v1/counters:batchGet";

/// Every route the HTTP front door serves.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/v1/namespaces/{ns}/counters/{counter}/add",
        operation: Operation::AddCount,
    },
    Route {
        method: "POST",
        path: "/v1/namespaces/{ns}/counters/{counter}/add-and-get",
        operation: Operation::AddAndGetCount,
    },
    Route { method: "GET", path: COUNTER, operation: Operation::GetCount },
    Route { method: "GET", path: "/v1/namespaces/{ns}/counters", operation: Operation::ListCounters },
    Route {
        method: "GET",
        path: "/v1/namespaces/{ns}/counters/{counter}/events",
        operation: Operation::ListEvents,
    },
    Route {
        method: "GET",
        path: "/v1/namespaces/{ns}/counters/{counter}/series",
        operation: Operation::GetCountSeries,
    },
    Route {
        method: "POST",
        path: "/v1/namespaces/{ns}/counters/{counter}/clear",
        operation: Operation::ClearCount,
    },
    Route { method: "POST", path: BATCH_ADD, operation: Operation::BatchAddCount },
    Route { method: "POST", path: BATCH_GET, operation: Operation::BatchGetCount },
    Route { method: "PUT", path: "/v1/namespaces/{ns}", operation: Operation::PutNamespace },
    Route { method: "GET", path: "/v1/namespaces/{ns}", operation: Operation::GetNamespace },
    Route { method: "DELETE", path: "/v1/namespaces/{ns}", operation: Operation::DeleteNamespace },
    Route { method: "GET", path: "/v1/namespaces", operation: Operation::ListNamespaces },
    Route { method: "GET", path: "/ui", operation: Operation::Ui },
    Route { method: "GET", path: "/ui/app.js", operation: Operation::UiScript },
    Route { method: "GET", path: "/metrics", operation: Operation::Metrics },
    Route { method: "GET", path: "/healthz", operation: Operation::Health },
    Route { method: "GET", path: "/readyz", operation: Operation::Ready },
    Route { method: "GET", path: "/openapi.json", operation: Operation::OpenApi },
];

/// What every handler shares.
#[derive(Clone)]
pub struct HttpState {
    /// The engine.
    pub engine: Engine,
    /// Cleared when the server starts shutting down; `/readyz` reports it.
    pub ready: Arc<AtomicBool>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The request body limit, in bytes.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive whole.
    pub body_read_timeout: std::time::Duration,
    /// Who may do what.
    pub auth: Arc<Authenticator>,
    /// The CORS answers, when `cors_origins` names any.
    pub cors: Option<tower_http::cors::CorsLayer>,
}

/// The CORS answers for `origins` (see `cors_origins`); `None` when the list is empty. An
/// origin that is not `*` or a `scheme://host[:port]` is refused, naming it.
pub fn cors_layer(origins: &[String]) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use axum::http::{HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let parsed = origins
            .iter()
            .map(|o| {
                let uri: axum::http::Uri =
                    o.parse().map_err(|e| anyhow::anyhow!("cors_origins: {o:?}: {e}"))?;
                anyhow::ensure!(
                    uri.scheme().is_some() && uri.host().is_some() && uri.path() == "/" && !o.ends_with('/'),
                    "cors_origins: {o:?} is not an origin such as https://dash.example.com"
                );
                HeaderValue::from_str(o).map_err(|e| anyhow::anyhow!("cors_origins: {o:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(parsed)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
            .max_age(std::time::Duration::from_secs(600)),
    ))
}

/// The router over every route in [`ROUTES`].
pub fn router(state: HttpState) -> Router {
    let limit = state.max_body_bytes;
    let cors = state.cors.clone();
    let router = Router::new()
        .route("/v1/namespaces/{ns}/counters/{counter}/add", post(counters::add_count))
        .route("/v1/namespaces/{ns}/counters/{counter}/add-and-get", post(counters::add_and_get_count))
        .route(COUNTER, get(counters::get_count))
        .route("/v1/namespaces/{ns}/counters", get(counters::list_counters))
        .route("/v1/namespaces/{ns}/counters/{counter}/events", get(events::list_events))
        .route("/v1/namespaces/{ns}/counters/{counter}/series", get(series::get_count_series))
        .route("/v1/namespaces/{ns}/counters/{counter}/clear", post(counters::clear_count))
        .route(BATCH_ADD, post(counters::batch_add))
        .route(BATCH_GET, post(counters::batch_get))
        .route(
            "/v1/namespaces/{ns}",
            get(namespaces::get_namespace)
                .put(namespaces::put_namespace)
                .delete(namespaces::delete_namespace),
        )
        .route("/v1/namespaces", get(namespaces::list_namespaces))
        .route("/ui", get(ui::page))
        .route("/ui/app.js", get(ui::script))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::health))
        .route("/readyz", get(ops::ready))
        .route("/openapi.json", get(openapi::document))
        .fallback(ops::no_route)
        .method_not_allowed_fallback(ops::method_not_allowed)
        // Bodies are read whole, in time and within the limit, before a handler is called.
        .layer(axum::middleware::from_fn_with_state(
            body::BodyRules { timeout: state.body_read_timeout, limit },
            body::read_whole_body,
        ))
        // Runs before every handler: a request that fails authentication reaches none.
        .layer(axum::middleware::from_fn_with_state((state.auth.clone(), "http"), authenticate))
        // `body.rs` read every body whole, within the limit, refusing larger ones in the JSON
        // error shape; the extractors have nothing left to limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    // Outermost, so that a browser's preflight is answered before authentication.
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Authenticates every request but `/healthz` and the dashboard's page from its
/// `Authorization` header and attaches the [`Principal`] that handlers check scopes against.
async fn authenticate(
    State((auth, door)): State<(Arc<Authenticator>, &'static str)>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Health, and the dashboard's static files (which hold no data; its API calls carry the
    // token), need none.
    let principal = if matches!(request.uri().path(), "/healthz" | "/ui" | "/ui/app.js") {
        Ok(Principal::unrestricted())
    } else {
        let header =
            request.headers().get(axum::http::header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
        // Set by the connection-info service every door is served with.
        let address = request
            .extensions()
            .get::<axum::extract::ConnectInfo<crate::connections::ClientAddr>>()
            .map(|info| info.0.0.ip());
        auth.authenticate_header(header, crate::auth::Caller { address, door })
    };
    match principal {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

/// Serves HTTP (HTTPS with `tls`) on `listener` until `shutdown` completes, then finishes
/// in-flight requests.
pub async fn serve(
    state: HttpState,
    listener: crate::connections::Doorkeeper,
    header_read_timeout: std::time::Duration,
    tls: Option<crate::tls::Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        let listener = tls.http_listener(listener)?;
        return serve::serve_connections(listener, router(state), header_read_timeout, shutdown).await;
    }
    #[cfg(not(feature = "tls"))]
    let _ = tls; // `Tls::load` never yields one without the feature.
    serve::serve_connections(listener, router(state), header_read_timeout, shutdown).await
}

/// Path parameters, refused with the JSON error shape (`INVALID_ARGUMENT`) when they do not
/// decode, e.g. percent-encoding that is not UTF-8.
pub struct WirePath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for WirePath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid(format!("invalid path: {}", rejection.body_text()))),
        }
    }
}

/// A query parameter that is a time, RFC 3339 (`2026-11-30T12:00:00Z`); refused naming the
/// parameter.
fn query_time(field: &str, text: Option<&str>) -> Result<Option<tally_core::Timestamp>, ApiError> {
    text.map(|t| {
        tally_core::Timestamp::parse_rfc3339(t).map_err(|e| ApiError::invalid(format!("{field} {t:?}: {e}")))
    })
    .transpose()
}

/// A query parameter that is a duration (`1h`, `30s`); refused naming the parameter.
fn query_duration(field: &str, text: Option<&str>) -> Result<Option<std::time::Duration>, ApiError> {
    text.map(|t| humantime::parse_duration(t).map_err(|e| ApiError::invalid(format!("{field} {t:?}: {e}"))))
        .transpose()
}

/// Parses a JSON body; an empty body is `{}`. The content type is not checked, so
/// `curl -d '{...}'` works without `-H`. The body was read whole by `body.rs`, within
/// `max_body_bytes`.
fn json_body<T: DeserializeOwned + Default>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body =
        body.map_err(|rejection| ApiError::invalid(format!("cannot read the request body: {rejection}")))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let invalid =
        |e: serde_json::Error| ApiError::new(ErrorCode::InvalidArgument, format!("invalid JSON body: {e}"));
    // Objects only: serde would also read a struct from an array, so `[5]` would be an add of 5.
    // Parsed straight into the request type, not through a `Value`, which would keep the last
    // of two equal keys: `{"delta": 1, "delta": 2}` is refused as a duplicate field.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        let other = serde_json::from_slice::<serde_json::Value>(&body).map_err(invalid)?;
        return Err(ApiError::invalid(format!(
            "invalid JSON body: expected an object, found {}",
            kind(&other)
        )));
    }
    serde_json::from_slice(&body).map_err(invalid)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
