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
    /// The store could not make the operation durable in time; it was not applied.
    DeadlineExceeded,
    /// The store failed or could not be reached: the operation **may have been written**.
    /// Retry it with the same idempotency token, which applies it at most once.
    Unavailable,
    /// A bug or an unexpected store failure; as with `Unavailable`, a mutation may have been
    /// written.
    Internal,
    /// Authentication is on and the request carries no token, or one that is not configured.
    Unauthenticated,
    /// The token is valid but its scopes do not cover this operation on this namespace.
    PermissionDenied,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 11] = [
        Self::InvalidArgument,
        Self::NotFound,
        Self::AlreadyExists,
        Self::FailedPrecondition,
        Self::OutOfRange,
        Self::ResourceExhausted,
        Self::DeadlineExceeded,
        Self::Unavailable,
        Self::Internal,
        Self::Unauthenticated,
        Self::PermissionDenied,
    ];

    /// Whether a request refused with this code is known to have written nothing. The whole
    /// idempotency story rests on this rule: every code but `UNAVAILABLE` and `INTERNAL`
    /// guarantees nothing was written; after those two a mutation may have been, and the
    /// client retries it with the same token.
    pub fn wrote_nothing(self) -> bool {
        !matches!(self, Self::Unavailable | Self::Internal)
    }

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

/// A code name that is not one of [`ErrorCode::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an error code (one of {names})", names = ErrorCode::ALL.map(ErrorCode::as_str).join(", "))]
pub struct UnknownCode(pub String);

impl std::str::FromStr for ErrorCode {
    type Err = UnknownCode;

    /// Parses a wire name (`OUT_OF_RANGE`), as every door and client prints it.
    fn from_str(s: &str) -> Result<Self, UnknownCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| UnknownCode(s.to_owned()))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_name() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
        }
        let err = "NOPE".parse::<ErrorCode>().expect_err("unknown");
        assert!(err.to_string().contains("OUT_OF_RANGE"), "{err}");
    }

    #[test]
    fn only_unavailable_and_internal_may_have_written() {
        let may: Vec<_> = ErrorCode::ALL.into_iter().filter(|c| !c.wrote_nothing()).collect();
        assert_eq!(may, [ErrorCode::Unavailable, ErrorCode::Internal]);
    }
}
