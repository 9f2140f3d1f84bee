//! What a call can fail with, sorted by what it says about the write.

use std::time::Duration;

use tally_core::ErrorCode;

use crate::Door;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with one of Tally's codes.
    #[error("{code}: {message}")]
    Refused {
        code: ErrorCode,
        message: String,
        /// The HTTP status, on the HTTP door.
        http_status: Option<u16>,
    },
    /// The door refused the request itself as malformed, before any counter was touched (the
    /// Redis protocol's `-ERR`: an unknown command, a wrong number of arguments).
    #[error("{door} door refused the request: {message}")]
    Protocol { door: Door, message: String },
    /// No answer from Tally: the connection failed or broke, or what answered is not a Tally
    /// door (another port, a proxy's error page).
    #[error("{door} door: no answer: {message}")]
    NoAnswer { door: Door, message: String },
    /// No answer within [`ConnectOptions::timeout`](crate::ConnectOptions::timeout).
    #[error("{door} door: no answer within {after:?}")]
    TimedOut { door: Door, after: Duration },
    /// The door has no such call.
    #[error("the {door} door cannot {what}")]
    Unsupported { door: Door, what: &'static str },
    /// The address or an option is unusable; nothing was sent.
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The server's code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this says that the call wrote nothing: a refusal whose code says so
    /// ([`ErrorCode::wrote_nothing`]), or a call that was never sent. `false`: it may have been
    /// written, so a mutation must be retried with the same token to be applied exactly once.
    pub fn wrote_nothing(&self) -> bool {
        match self {
            ClientError::Refused { code, .. } => code.wrote_nothing(),
            ClientError::Protocol { .. } | ClientError::Unsupported { .. } | ClientError::Config(_) => true,
            ClientError::NoAnswer { .. } | ClientError::TimedOut { .. } => false,
        }
    }

    /// Whether trying again later may succeed: the server was unreachable, busy or failing
    /// (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`, `INTERNAL`), or did not
    /// answer. Retry mutations with their token.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Refused { code, .. } => matches!(
                code,
                ErrorCode::Unavailable
                    | ErrorCode::ResourceExhausted
                    | ErrorCode::DeadlineExceeded
                    | ErrorCode::Internal
            ),
            ClientError::NoAnswer { .. } | ClientError::TimedOut { .. } => true,
            ClientError::Protocol { .. } | ClientError::Unsupported { .. } | ClientError::Config(_) => false,
        }
    }

    /// A short name for the kind of failure, for counting them: the code's name for a
    /// refusal (`NOT_FOUND`, ...), else `PROTOCOL_ERROR`, `NO_ANSWER`, `TIMED_OUT`,
    /// `UNSUPPORTED` or `CONFIG`.
    pub fn name(&self) -> &'static str {
        match self {
            ClientError::Refused { code, .. } => code.as_str(),
            ClientError::Protocol { .. } => "PROTOCOL_ERROR",
            ClientError::NoAnswer { .. } => "NO_ANSWER",
            ClientError::TimedOut { .. } => "TIMED_OUT",
            ClientError::Unsupported { .. } => "UNSUPPORTED",
            ClientError::Config(_) => "CONFIG",
        }
    }

    /// A gRPC status as an error: one of Tally's codes is a refusal; any other (`CANCELLED`,
    /// `UNKNOWN`, ...) comes from the transport, or from something that is not a Tally door.
    pub fn from_grpc(status: &tonic::Status) -> Self {
        match tally_proto::codes::error_code(status.code()) {
            Some(code) => {
                ClientError::Refused { code, message: status.message().to_owned(), http_status: None }
            }
            None => ClientError::NoAnswer {
                door: Door::Grpc,
                message: format!("{:?}: {}", status.code(), status.message()),
            },
        }
    }

    /// The message alone, without the code.
    pub fn message(&self) -> String {
        match self {
            ClientError::Refused { message, .. }
            | ClientError::Protocol { message, .. }
            | ClientError::NoAnswer { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: ErrorCode) -> ClientError {
        ClientError::Refused { code, message: "m".into(), http_status: None }
    }

    #[test]
    fn only_an_answer_that_says_so_means_nothing_was_written() {
        for code in ErrorCode::ALL {
            assert_eq!(refused(code).wrote_nothing(), code.wrote_nothing(), "{code}");
        }
        assert!(!ClientError::NoAnswer { door: Door::Grpc, message: "reset".into() }.wrote_nothing());
        assert!(!ClientError::TimedOut { door: Door::Resp, after: Duration::from_secs(1) }.wrote_nothing());
        assert!(
            ClientError::Protocol { door: Door::Resp, message: "unknown command".into() }.wrote_nothing()
        );
    }

    #[test]
    fn whatever_may_have_been_written_is_retriable_except_nothing_else() {
        assert!(refused(ErrorCode::Unavailable).is_retriable());
        assert!(refused(ErrorCode::Internal).is_retriable());
        assert!(!refused(ErrorCode::InvalidArgument).is_retriable());
        assert!(!refused(ErrorCode::NotFound).is_retriable());
        // Every error that may have written something can be retried: a client is never left
        // with a write it can neither confirm nor repeat.
        for code in ErrorCode::ALL {
            let e = refused(code);
            assert!(e.wrote_nothing() || e.is_retriable(), "{code}");
        }
    }
}
