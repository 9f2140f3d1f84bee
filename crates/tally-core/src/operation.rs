//! The operations the front doors serve, named once.

use std::fmt;

/// One operation of Tally's API, whichever door it arrives through. Its name (`as_str`) is
/// the gRPC method's, and the `operation` label of the request metrics; HTTP routes, Redis
/// commands and `tally bench` name their operations through this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// Add a delta to a counter.
    AddCount,
    /// Add a delta and read the count after it.
    AddAndGetCount,
    /// Read a counter.
    GetCount,
    /// Set a counter to zero.
    ClearCount,
    /// Adds to many counters in one request.
    BatchAddCount,
    /// Reads of many counters in one request.
    BatchGetCount,
    /// The counters of a namespace, a page at a time.
    ListCounters,
    /// A counter's events (its history), a page at a time.
    ListEvents,
    /// A counter's checkpoint checked against its kept events.
    Recount,
    /// A counter's adds per time bucket.
    GetCountSeries,
    /// Create a namespace.
    CreateNamespace,
    /// Read a namespace's settings.
    GetNamespace,
    /// Every namespace.
    ListNamespaces,
    /// Change a namespace's settings.
    UpdateNamespace,
    /// Create or change a namespace (HTTP's `PUT`).
    PutNamespace,
    /// Delete a namespace and its counters.
    DeleteNamespace,
    /// Whether counters exist (Redis `EXISTS`).
    Exists,
    /// Ask the instance that owns some counters to roll them up (between instances).
    TriggerRollups,
    /// Liveness.
    Health,
    /// Readiness.
    Ready,
    /// The Prometheus metrics.
    Metrics,
    /// The OpenAPI document.
    OpenApi,
    /// The dashboard's page.
    Ui,
    /// The dashboard's script.
    UiScript,
}

impl Operation {
    /// Every operation, in declaration order.
    pub const ALL: [Operation; 24] = [
        Self::AddCount,
        Self::AddAndGetCount,
        Self::GetCount,
        Self::ClearCount,
        Self::BatchAddCount,
        Self::BatchGetCount,
        Self::ListCounters,
        Self::ListEvents,
        Self::Recount,
        Self::GetCountSeries,
        Self::CreateNamespace,
        Self::GetNamespace,
        Self::ListNamespaces,
        Self::UpdateNamespace,
        Self::PutNamespace,
        Self::DeleteNamespace,
        Self::Exists,
        Self::TriggerRollups,
        Self::Health,
        Self::Ready,
        Self::Metrics,
        Self::OpenApi,
        Self::Ui,
        Self::UiScript,
    ];

    /// The operation's name: the gRPC method's, where it has one.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AddCount => "AddCount",
            Self::AddAndGetCount => "AddAndGetCount",
            Self::GetCount => "GetCount",
            Self::ClearCount => "ClearCount",
            Self::BatchAddCount => "BatchAddCount",
            Self::BatchGetCount => "BatchGetCount",
            Self::ListCounters => "ListCounters",
            Self::ListEvents => "ListEvents",
            Self::Recount => "Recount",
            Self::GetCountSeries => "GetCountSeries",
            Self::CreateNamespace => "CreateNamespace",
            Self::GetNamespace => "GetNamespace",
            Self::ListNamespaces => "ListNamespaces",
            Self::UpdateNamespace => "UpdateNamespace",
            Self::PutNamespace => "PutNamespace",
            Self::DeleteNamespace => "DeleteNamespace",
            Self::Exists => "Exists",
            Self::TriggerRollups => "TriggerRollups",
            Self::Health => "Health",
            Self::Ready => "Ready",
            Self::Metrics => "Metrics",
            Self::OpenApi => "OpenApi",
            Self::Ui => "Ui",
            Self::UiScript => "UiScript",
        }
    }
}

/// A name that is not one of [`Operation::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an operation (one of {names})", names = Operation::ALL.map(Operation::as_str).join(", "))]
pub struct UnknownOperation(pub String);

impl std::str::FromStr for Operation {
    type Err = UnknownOperation;

    fn from_str(s: &str) -> Result<Self, UnknownOperation> {
        Self::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| UnknownOperation(s.to_owned()))
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_parses_back_from_its_name_and_names_are_distinct() {
        let mut names = std::collections::HashSet::new();
        for op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
            assert!(names.insert(op.as_str()), "{op} named twice");
        }
        assert!("Incr".parse::<Operation>().is_err());
    }
}
