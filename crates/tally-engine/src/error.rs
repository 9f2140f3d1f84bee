//! What the engine answers when it refuses or fails a request.

use std::time::Duration;

use tally_core::{
    ConfigError, CounterKey, CounterType, ErrorCode, EventKind, Failure, IdempotencyToken, Namespace,
    Timestamp,
};
use tally_store::StoreError;

/// Result of an engine operation.
pub type EngineResult<T> = Result<T, EngineError>;

/// A refused or failed request. Each variant has one [`ErrorCode`]; each message says what
/// failed and with what input. Every refusal changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The namespace does not exist.
    #[error("namespace {0} does not exist")]
    NamespaceNotFound(Namespace),
    /// The namespace to create exists.
    #[error("namespace {0} already exists")]
    NamespaceExists(Namespace),
    /// See [`StoreError::NamespaceRecentlyDeleted`].
    #[error("{0}")]
    NamespaceRecentlyDeleted(String),
    /// Too many operations are waiting for the store; this one was refused before it started.
    #[error(
        "too many operations are waiting for the store ({limit} in flight); this one was not started: retry with backoff"
    )]
    Overloaded {
        /// The engine's `max_in_flight`.
        limit: usize,
    },
    /// The store shed the operation unwritten: it had waited too long to be taken up.
    #[error("{0}")]
    StoreOverloaded(String),
    /// The built-in namespace cannot be deleted.
    #[error("namespace default is built in and cannot be deleted")]
    DefaultNamespaceIsPermanent,
    /// A namespace's counter type cannot change once created.
    #[error("namespace {namespace} holds {from} counters; the counter type cannot change to {to}")]
    CounterTypeIsFixed {
        /// The namespace.
        namespace: Namespace,
        /// Its type.
        from: CounterType,
        /// The type asked for.
        to: CounterType,
    },
    /// The namespace's counters keep no events (`best_effort`), so there is no history to
    /// read or recount.
    #[error("namespace {0} holds best_effort counters, which keep no events to recount")]
    NoEvents(Namespace),
    /// A time range or step that cannot be read (empty, too fine, too many buckets).
    #[error("{0}")]
    InvalidRange(String),
    /// The range holds more events than one request may read.
    #[error("counter {key} has more than {limit} events in the range; ask for a shorter one")]
    RangeTooLarge {
        /// The counter.
        key: CounterKey,
        /// The most events one request reads.
        limit: u64,
    },
    /// A namespace configuration breaks a rule.
    #[error("invalid namespace configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// The mutation was generated before the write window.
    #[error(
        "token {token:?} is too old: its generation_time is before {oldest}, the start of the write window of namespace {namespace} (accept_limit {}); nothing was written",
        humantime::format_duration(*.accept_limit)
    )]
    TokenTooOld {
        /// The namespace.
        namespace: Namespace,
        /// The refused token.
        token: IdempotencyToken,
        /// The oldest accepted generation time.
        oldest: Timestamp,
        /// The namespace's accept limit.
        accept_limit: Duration,
    },
    /// The mutation was generated further ahead of the server's clock than allowed.
    #[error(
        "token {token:?} is too far in the future: its generation_time is after {latest}, the end of the write window of namespace {namespace} (clock_skew {}); nothing was written",
        humantime::format_duration(*.clock_skew)
    )]
    TokenInFuture {
        /// The namespace.
        namespace: Namespace,
        /// The refused token.
        token: IdempotencyToken,
        /// The latest accepted generation time.
        latest: Timestamp,
        /// The namespace's clock skew allowance.
        clock_skew: Duration,
    },
    /// The token was already used for a different mutation of the counter.
    #[error(
        "idempotency token {token:?} was already used on counter {key} for {}; a retry must repeat the original request, and a new mutation needs a new token",
        describe(*stored)
    )]
    TokenReused {
        /// The counter.
        key: CounterKey,
        /// The reused token.
        token: IdempotencyToken,
        /// What the token was used for.
        stored: EventKind,
    },
    /// The add would take the count outside the signed 64-bit range.
    #[error(
        "adding {delta} to counter {key} (count {count}) would overflow the signed 64-bit range; nothing was written"
    )]
    Overflow {
        /// The counter.
        key: CounterKey,
        /// The count the add was checked against.
        count: i64,
        /// The refused delta.
        delta: i64,
    },
    /// The store could not commit the mutation in time; it was not written.
    #[error("{0}")]
    CommitTooLate(String),
    /// The store is unavailable; the mutation may or may not have been applied, so retry it
    /// with the same token.
    #[error("{0}")]
    Unavailable(#[source] Failure),
    /// Stored data could not be read, or a bug: as with `Unavailable`, a mutation may have
    /// been written.
    #[error("{0}")]
    Internal(#[source] Failure),
}

fn describe(kind: EventKind) -> String {
    match kind {
        EventKind::Add(delta) => format!("an add of {delta}"),
        EventKind::Clear => "a clear".to_owned(),
    }
}

impl EngineError {
    /// The error's code, shared by every front door.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NamespaceNotFound(_) => ErrorCode::NotFound,
            Self::NamespaceExists(_) | Self::TokenReused { .. } => ErrorCode::AlreadyExists,
            Self::DefaultNamespaceIsPermanent
            | Self::CounterTypeIsFixed { .. }
            | Self::NoEvents(_)
            | Self::NamespaceRecentlyDeleted(_) => ErrorCode::FailedPrecondition,
            Self::InvalidConfig(_) | Self::InvalidRange(_) => ErrorCode::InvalidArgument,
            Self::RangeTooLarge { .. } => ErrorCode::OutOfRange,
            Self::TokenTooOld { .. } | Self::TokenInFuture { .. } | Self::Overflow { .. } => {
                ErrorCode::OutOfRange
            }
            Self::CommitTooLate(_) => ErrorCode::DeadlineExceeded,
            Self::Overloaded { .. } | Self::StoreOverloaded(_) => ErrorCode::ResourceExhausted,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { key, token, stored, .. } => Self::TokenReused { key, token, stored },
            StoreError::DeadlinePassed { .. } => Self::CommitTooLate(e.to_string()),
            StoreError::NamespaceExists(ns) => Self::NamespaceExists(ns),
            StoreError::NamespaceNotFound(ns) => Self::NamespaceNotFound(ns),
            StoreError::NamespaceRecentlyDeleted { .. } => Self::NamespaceRecentlyDeleted(e.to_string()),
            StoreError::Overloaded { .. } => Self::StoreOverloaded(e.to_string()),
            StoreError::Unavailable(failure) => Self::Unavailable(failure.within("store unavailable")),
            StoreError::Corrupt(failure) => Self::Internal(failure.within("corrupt data in store")),
        }
    }
}
