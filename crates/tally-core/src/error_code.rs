//! The error codes shared by every front door.
//!
//! The names are the gRPC status code names, so one enum maps to gRPC codes, HTTP statuses and
//! RESP error prefixes without a second vocabulary.

use std::fmt;

/// What kind of failure a request met. Every error Tally returns carries exactly one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed: a bad name, a bad field, a body that does not parse.
    InvalidArgument,
    /// The namespace (or another named thing) does not exist.
    NotFound,
    /// The thing to create exists already, or an idempotency token was used for another mutation.
    AlreadyExists,
    /// The request is well formed but the system is not in a state to accept it.
    FailedPrecondition,
    /// A value is outside its valid range: a token outside the write window, a count overflow.
    OutOfRange,
    /// The server sheds load or a limit was hit.
    ResourceExhausted,
    /// The operation could not complete in time; it was not applied.
    DeadlineExceeded,
    /// The store is not available; the operation was not applied and may be retried.
    Unavailable,
    /// A bug or an unexpected store failure.
    Internal,
    /// Authentication is on and the request carries no token, or one that is not configured.
    Unauthenticated,
    /// The token is valid but its scopes do not cover this operation on this namespace.
    PermissionDenied,
}

impl ErrorCode {
    /// The code's name as it appears on the wire (`INVALID_ARGUMENT`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
