//! What the driver's errors mean to the store, decided here and nowhere else: each becomes
//! a [`StoreError`] that keeps the driver's error as its cause, and the one condition the
//! store acts on (a table that does not exist) is read off the driver's typed error.

use scylla::client::pager::NextPageError;
use scylla::errors::{
    DbError, ExecutionError, PagerExecutionError, PrepareError, RequestAttemptError, RequestError,
};
use tally_core::Failure;
use tally_store::StoreError;

/// `context` failed because of `cause`: the operation may have been applied or not.
pub(crate) fn unavailable(
    context: &str,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Unavailable(Failure::caused_by(context, cause))
}

/// What the store read under `context` does not decode (`cause` says how).
pub(crate) fn corrupt(
    context: &str,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Corrupt(Failure::caused_by(context, cause))
}

/// Whether the driver said that a table does not exist. Only slices' event tables come and
/// go, and one that does not exist holds no events: `append` creates it before writing.
pub(crate) fn is_missing_table(e: &StoreError) -> bool {
    let StoreError::Unavailable(failure) = e else { return false };
    let Some(cause) = failure.cause() else { return false };
    let attempt = if let Some(e) = cause.downcast_ref::<ExecutionError>() {
        execution_attempt(e)
    } else if let Some(e) = cause.downcast_ref::<PrepareError>() {
        prepare_attempt(e)
    } else if let Some(e) = cause.downcast_ref::<PagerExecutionError>() {
        match e {
            PagerExecutionError::PrepareError(e) => prepare_attempt(e),
            PagerExecutionError::NextPageError(NextPageError::RequestFailure(
                RequestError::LastAttemptError(a),
            )) => Some(a),
            _ => None,
        }
    } else {
        None
    };
    // Cassandra answers `Invalid` with "unconfigured table X" when executing and "table X
    // does not exist" when preparing; the code alone also covers other invalid requests.
    matches!(attempt, Some(RequestAttemptError::DbError(DbError::Invalid, message))
        if message.contains("unconfigured table events_")
            || (message.contains("table events_") && message.contains("does not exist")))
}

fn execution_attempt(e: &ExecutionError) -> Option<&RequestAttemptError> {
    match e {
        ExecutionError::LastAttemptError(attempt) => Some(attempt),
        ExecutionError::PrepareError(e) => prepare_attempt(e),
        _ => None,
    }
}

fn prepare_attempt(e: &PrepareError) -> Option<&RequestAttemptError> {
    match e {
        PrepareError::AllAttemptsFailed { first_attempt } => Some(first_attempt),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(message: &str) -> RequestAttemptError {
        RequestAttemptError::DbError(DbError::Invalid, message.to_owned())
    }

    #[test]
    fn a_missing_events_table_is_recognised_from_the_drivers_error_when_executing_and_preparing() {
        let executing = ExecutionError::LastAttemptError(invalid("unconfigured table events_20261130"));
        assert!(is_missing_table(&unavailable("reading events of a:b", executing)));
        let preparing = PrepareError::AllAttemptsFailed {
            first_attempt: invalid("table events_20261130 does not exist"),
        };
        assert!(is_missing_table(&unavailable("preparing", preparing)));
    }

    #[test]
    fn other_failures_and_prose_that_only_looks_alike_are_not_a_missing_table() {
        let other = ExecutionError::LastAttemptError(invalid("unconfigured table namespaces"));
        assert!(!is_missing_table(&unavailable("reading", other)));
        let prose = StoreError::Unavailable("unconfigured table events_20261130".into());
        assert!(!is_missing_table(&prose), "our own words are not the driver's answer");
        assert!(!is_missing_table(&StoreError::Corrupt("x".into())));
    }
}
