//! What a store can fail with.

use tally_core::{CounterKey, EventKind, Failure, IdempotencyToken, Namespace, Timestamp};

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A store failure. Every variant except `Unavailable` and `Corrupt` is a definite answer:
/// the operation changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The idempotency token was already used for a different mutation of the counter.
    #[error(
        "idempotency token {token:?} was already used on counter {key} for {stored:?}; this request asks for {given:?}"
    )]
    Conflict {
        /// The counter.
        key: CounterKey,
        /// The token that was reused.
        token: IdempotencyToken,
        /// What the stored event does.
        stored: EventKind,
        /// What the refused event would have done.
        given: EventKind,
    },
    /// The event could not be committed before its deadline, so it was not written.
    #[error("the event for {key} could not be committed before {deadline}; it was not written")]
    DeadlinePassed {
        /// The counter.
        key: CounterKey,
        /// The deadline that passed.
        deadline: Timestamp,
    },
    /// `create_namespace` on a name that exists.
    #[error("namespace {0} already exists")]
    NamespaceExists(Namespace),
    /// `update_namespace` on a name that does not exist, or a write to a namespace deleted
    /// meanwhile.
    #[error("namespace {0} does not exist")]
    NamespaceNotFound(Namespace),
    /// `create_namespace` on a name deleted so recently that another process sharing the store
    /// may still write into the deleted namespace; the same call succeeds from `until` on.
    #[error(
        "namespace {name} was deleted moments ago; it can be created again from {until}, once every instance has forgotten the deleted one"
    )]
    NamespaceRecentlyDeleted {
        /// The namespace.
        name: Namespace,
        /// From when (on the store's clock) it can be created again.
        until: Timestamp,
    },
    /// The request waited longer than the store allows for it to be taken up (the store is
    /// behind its load), so it was shed without being written.
    #[error(
        "the store is overloaded: the request waited {waited:?} to be written, longer than it may; it was not written: retry with backoff"
    )]
    Overloaded {
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// The store cannot serve the request now; it may have been applied or not.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Failure),
    /// Stored bytes that cannot be decoded.
    #[error("corrupt data in store: {0}")]
    Corrupt(#[source] Failure),
}
