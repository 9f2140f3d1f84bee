//! Request bodies read whole, within `body_read_timeout` and `max_body_bytes`, before any
//! handler runs.
//!
//! hyper bounds how long a request head may take (`header_read_timeout`), not its body: a
//! client announcing a body and sending it a byte at a time would hold its connection, and its
//! place under `max_connections`, as long as it kept sending. Reading the body here, with a
//! deadline, refuses it instead, in the JSON error shape, before anything was done: a body
//! that did not arrive in time is `DEADLINE_EXCEEDED` (HTTP 408), one over the limit
//! `OUT_OF_RANGE` (HTTP 413).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// How a request's body is read.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    /// The whole body must arrive within this long of the handler being chosen.
    pub timeout: Duration,
    /// At most this many bytes.
    pub limit: usize,
}

/// Reads the body whole, then hands the request on with it.
pub async fn read_whole_body(State(rules): State<BodyRules>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(rules.timeout, axum::body::to_bytes(body, rules.limit)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(e)) => refusal(&e, rules).into_response(),
        Err(_) => ApiError::body_too_slow(rules.timeout).into_response(),
    }
}

/// A body that could not be read: over the limit, or cut off by the client.
fn refusal(e: &axum::Error, rules: BodyRules) -> ApiError {
    let over_limit = std::error::Error::source(e)
        .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
    if over_limit {
        ApiError::body_too_large(rules.limit)
    } else {
        ApiError::invalid(format!("cannot read the request body: {e}"))
    }
}
