//! `best_effort` counters: plain in-memory integers with an optional time to live.
//!
//! Not durable (a restart forgets them) and not idempotent (a retried add adds again); the
//! price of being the fastest type. Overflow is still refused, never wrapped.

use std::time::Duration;

use dashmap::DashMap;
use tally_core::{CounterKey, Namespace, Timestamp};

use crate::error::EngineError;

#[derive(Clone, Copy)]
struct Entry {
    value: i64,
    expires: Option<Timestamp>,
}

impl Entry {
    fn live_value(&self, now: Timestamp) -> i64 {
        if self.expires.is_some_and(|e| now >= e) { 0 } else { self.value }
    }
}

/// The in-memory table of `best_effort` counters.
#[derive(Default)]
pub struct BestEffortCounters {
    counters: DashMap<CounterKey, Entry>,
}

impl BestEffortCounters {
    /// Adds `delta` and returns the new value; the TTL restarts with every write.
    pub fn add(
        &self,
        key: &CounterKey,
        delta: i64,
        ttl: Option<Duration>,
        now: Timestamp,
    ) -> Result<i64, EngineError> {
        let mut entry = self.counters.entry(key.clone()).or_insert(Entry { value: 0, expires: None });
        let count = entry.live_value(now);
        let value = count.checked_add(delta).ok_or_else(|| EngineError::Overflow {
            key: key.clone(),
            count,
            delta,
        })?;
        *entry = Entry { value, expires: ttl.map(|t| now.saturating_add(t)) };
        Ok(value)
    }

    /// The current value; 0 for an unknown or expired counter.
    pub fn get(&self, key: &CounterKey, now: Timestamp) -> i64 {
        self.counters.get(key).map_or(0, |e| e.live_value(now))
    }

    /// Forgets the counter.
    pub fn clear(&self, key: &CounterKey) {
        self.counters.remove(key);
    }

    /// Forgets every counter of a namespace.
    pub fn clear_namespace(&self, namespace: &Namespace) {
        self.counters.retain(|k, _| &k.namespace != namespace);
    }

    /// Drops expired counters so that memory follows the live set; returns how many went.
    pub fn sweep(&self, now: Timestamp) -> usize {
        let before = self.counters.len();
        self.counters.retain(|_, e| e.expires.is_none_or(|x| now < x));
        before - self.counters.len()
    }

    /// How many counters are held.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_expire_and_overflow_is_refused_without_change() {
        let table = BestEffortCounters::default();
        let key = CounterKey::parse_joined("be:c").expect("key");
        let t0 = Timestamp::from_micros(0);
        let ttl = Some(Duration::from_micros(10));
        assert_eq!(table.add(&key, 5, ttl, t0), Ok(5));
        assert_eq!(table.add(&key, -7, ttl, t0), Ok(-2));
        assert!(matches!(table.add(&key, i64::MIN, ttl, t0), Err(EngineError::Overflow { count: -2, .. })));
        assert_eq!(table.get(&key, t0), -2);
        assert_eq!(table.get(&key, Timestamp::from_micros(10)), 0);
        assert_eq!(table.sweep(Timestamp::from_micros(10)), 1);
        assert!(table.is_empty());
    }
}
