//! `ApiError`: the one error shape of every front door, and its mapping to gRPC and HTTP.
//!
//! The code is an [`ErrorCode`]; gRPC gets the status code of the same name, HTTP gets the
//! status that fits (`status_of`) and a body `{"error": {"code": "...", "message": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tally_core::{ConfigError, ErrorCode, NameError, TokenError};
use tally_engine::EngineError;

/// A refused or failed request, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What failed and with what input.
    pub message: String,
    /// An HTTP status more precise than the code's, where one exists (413 for a body too large).
    http_status: Option<StatusCode>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), http_status: None }
    }

    /// A request body over the size limit: `OUT_OF_RANGE` (the code gRPC answers for an
    /// oversized message), HTTP 413.
    pub fn body_too_large(limit: usize) -> Self {
        Self {
            http_status: Some(StatusCode::PAYLOAD_TOO_LARGE),
            ..Self::new(
                ErrorCode::OutOfRange,
                format!("request body is larger than the limit of {limit} bytes"),
            )
        }
    }

    /// A request body that did not arrive whole within `body_read_timeout`: nothing was done.
    pub fn body_too_slow(timeout: std::time::Duration) -> Self {
        Self {
            http_status: Some(StatusCode::REQUEST_TIMEOUT),
            ..Self::new(
                ErrorCode::DeadlineExceeded,
                format!(
                    "the request body did not arrive whole within body_read_timeout ({}); nothing was done",
                    humantime::format_duration(timeout)
                ),
            )
        }
    }

    /// The `error` object of the HTTP error body (and of a refused batch item).
    pub fn body(&self) -> ErrorBody {
        ErrorBody { code: self.code.as_str(), message: self.message.clone() }
    }

    /// A malformed request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// The gRPC status.
    pub fn into_status(self) -> tonic::Status {
        tonic::Status::new(grpc_code(self.code), self.message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Error codes on gRPC, both ways, where every client of the protocol finds them too.
pub use tally_proto::codes::{error_code as code_of_grpc, grpc_code};

/// The HTTP status of an error code, as in Google's mapping of gRPC codes to HTTP.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidArgument | ErrorCode::FailedPrecondition | ErrorCode::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists => StatusCode::CONFLICT,
        ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.http_status.unwrap_or(status_of(self.code));
        (status, axum::Json(serde_json::json!({ "error": self.body() }))).into_response()
    }
}

/// `{"code": "INVALID_ARGUMENT", "message": "..."}`: what failed, in every HTTP error body.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorBody {
    /// The code's name, as gRPC spells it.
    pub code: &'static str,
    /// What failed and with what input.
    pub message: String,
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        Self::invalid(format!("invalid namespace configuration: {e}"))
    }
}
