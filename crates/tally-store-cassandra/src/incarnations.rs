//! Namespace incarnations: each creation of a namespace gets a number of its own, part of the
//! name every row of its counters is stored under, so that nothing of a deleted namespace shows
//! through in one created again under the same name.
//!
//! Why: deleting a namespace writes tombstones stamped with the time of the deletion, while
//! `last_write` and checkpoints are written `USING TIMESTAMP` of the time they carry. Under the
//! same partition keys, a write to the new namespace carrying a time before the deletion (a
//! token generated just before it, within `accept_limit`) would be hidden by a tombstone, and
//! the old namespace's taken tokens would answer the new one's mutations as duplicates. Under
//! new partition keys there is no tombstone to hide behind and no old token to find.
//!
//! Every instance must then write under the current incarnation. Each one resolves a
//! namespace's incarnation from the `namespaces` table at most [`RESOLVED_FOR`] before using
//! it, and the deleting instance stamps the namespace with the earliest time it may be created
//! again: the deletion plus [`RESOLVED_FOR`] plus the namespace's `clock_skew` (the clocks of
//! the deleting and the creating instance may differ by that much). So once it is created
//! again, every instance has re-read it, and no write lands in the deleted incarnation. Writes
//! racing the deletion itself may land there, as they may be deleted in any store; writes to a
//! namespace known deleted are refused `NamespaceNotFound`.
//!
//! Incarnation 0 is a namespace created before incarnations existed (or with no row at all,
//! as in the store's own tests): its rows keep the bare name.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use tally_core::{Namespace, NamespaceConfig, Timestamp};
use tally_store::{StoreError, StoreResult};

use crate::codec::decode_config;
use crate::driver;
use crate::store::CassandraStore;

/// How long an instance uses an incarnation it read before reading it again.
pub const RESOLVED_FOR: Duration = Duration::from_secs(2);

/// A namespace's row in the `namespaces` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamespaceRow {
    /// `None` once deleted (the row stays, as a marker).
    pub config: Option<NamespaceConfig>,
    /// 0 where the row predates incarnations.
    pub incarnation: i64,
    /// Set by a deletion: the earliest time the namespace may be created again.
    pub recreate_after: Option<Timestamp>,
}

/// What an instance knows of a namespace's incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incarnation {
    /// Its rows are stored under this incarnation.
    Live(i64),
    /// Deleted: its rows (being deleted) are under this incarnation; writes are refused.
    Deleted(i64),
}

/// What a lookup is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A write: refused for a deleted namespace.
    Write,
    /// A read or a deletion: a deleted namespace's rows are still found.
    Read,
}

/// The incarnations this instance resolved lately, with when (store's clock).
#[derive(Debug, Default)]
pub(crate) struct Incarnations {
    known: RwLock<HashMap<Namespace, (Incarnation, Timestamp)>>,
}

impl Incarnations {
    fn fresh(&self, name: &Namespace, now: Timestamp) -> Option<Incarnation> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        let (incarnation, read_at) = known.get(name)?;
        (now < read_at.saturating_add(RESOLVED_FOR) && now >= *read_at).then_some(*incarnation)
    }

    /// Notes what this instance read or wrote itself.
    pub(crate) fn remember(&self, name: &Namespace, incarnation: Incarnation, now: Timestamp) {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known.insert(name.clone(), (incarnation, now));
    }
}

/// The name a namespace's rows are stored under in its incarnation. `#` is never part of a
/// namespace name, so no two (name, incarnation) pairs share one.
pub(crate) fn stored_name(name: &Namespace, incarnation: i64) -> String {
    if incarnation == 0 { name.as_str().to_owned() } else { format!("{name}#{incarnation}") }
}

/// The namespace and incarnation of a stored name; `None` if it is not one.
pub(crate) fn parse_stored_name(stored: &str) -> Option<(Namespace, i64)> {
    let (name, incarnation) = match stored.split_once('#') {
        Some((name, n)) => (name, n.parse().ok().filter(|n| *n != 0)?),
        None => (stored, 0),
    };
    Some((Namespace::new(name).ok()?, incarnation))
}

impl CassandraStore {
    /// The name `namespace`'s rows are stored under now, for `purpose`.
    pub(crate) async fn stored_namespace(
        &self,
        namespace: &Namespace,
        purpose: Purpose,
    ) -> StoreResult<String> {
        let mut incarnation = self.incarnation(namespace).await?;
        if purpose == Purpose::Write && matches!(incarnation, Incarnation::Deleted(_)) {
            // It may have been created again since: a write is refused on a fresh read only.
            incarnation = self.read_incarnation(namespace, self.clock.now()).await?;
        }
        match (incarnation, purpose) {
            (Incarnation::Deleted(_), Purpose::Write) => {
                Err(StoreError::NamespaceNotFound(namespace.clone()))
            }
            (Incarnation::Live(n) | Incarnation::Deleted(n), _) => Ok(stored_name(namespace, n)),
        }
    }

    /// The namespace's incarnation, read again once [`RESOLVED_FOR`] has passed.
    pub(crate) async fn incarnation(&self, namespace: &Namespace) -> StoreResult<Incarnation> {
        let now = self.clock.now();
        match self.incarnations.fresh(namespace, now) {
            Some(known) => Ok(known),
            None => self.read_incarnation(namespace, now).await,
        }
    }

    /// The namespace's incarnation as the store holds it now, remembered as read at `now`.
    async fn read_incarnation(&self, namespace: &Namespace, now: Timestamp) -> StoreResult<Incarnation> {
        let incarnation = match self.namespace_row(namespace).await? {
            None => Incarnation::Live(0),
            Some(row) if row.config.is_some() => Incarnation::Live(row.incarnation),
            Some(row) => Incarnation::Deleted(row.incarnation),
        };
        self.incarnations.remember(namespace, incarnation, now);
        Ok(incarnation)
    }

    /// The namespace's row, read with serial consistency (every completed change is seen).
    pub(crate) async fn namespace_row(&self, name: &Namespace) -> StoreResult<Option<NamespaceRow>> {
        let context = format!("reading namespace {name}");
        let result = self
            .session
            .execute_unpaged(&self.fixed.ns_get, (name.as_str(),))
            .await
            .map_err(|e| driver::unavailable(&context, e))?;
        let rows = result.into_rows_result().map_err(|e| driver::unavailable(&context, e))?;
        let Some((json, incarnation, recreate_after)) = rows
            .maybe_first_row::<(Option<String>, Option<i64>, Option<i64>)>()
            .map_err(|e| driver::corrupt("namespaces", e))?
        else {
            return Ok(None);
        };
        let config = json.map(|json| decode_config(name.as_str(), &json)).transpose()?;
        Ok(Some(NamespaceRow {
            config,
            incarnation: incarnation.unwrap_or(0),
            recreate_after: recreate_after.map(Timestamp::from_micros),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_parse_back_and_never_collide() {
        let ns = Namespace::new("orders.eu-1").expect("ns");
        assert_eq!(stored_name(&ns, 0), "orders.eu-1");
        assert_eq!(parse_stored_name(&stored_name(&ns, 0)), Some((ns.clone(), 0)));
        let stored = stored_name(&ns, 1_764_000_000_123_456);
        assert_eq!(stored, "orders.eu-1#1764000000123456");
        assert_eq!(parse_stored_name(&stored), Some((ns, 1_764_000_000_123_456)));
        for odd in ["a#", "a#x", "a#0", "#5", "a b#5"] {
            assert_eq!(parse_stored_name(odd), None, "{odd}");
        }
    }
}
