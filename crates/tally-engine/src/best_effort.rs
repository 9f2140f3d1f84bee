//! `best_effort` counters: plain integers with an optional time to live, in this process
//! ([`LocalBestEffort`]) or in a table every instance shares (memcached).
//!
//! Not durable (a restart of their home forgets them) and not idempotent (a retried add adds
//! again); the price of being the fastest type. Overflow is still refused, never wrapped.

use std::time::Duration;

use async_trait::async_trait;
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

/// Where `best_effort` counters live.
///
/// Contract:
/// - `add` adds `delta` atomically (concurrent adds never lose one another) and returns the new
///   value; the TTL restarts with every add. An add that would overflow `i64` is refused with
///   `EngineError::Overflow` and changes nothing.
/// - `get` returns 0 for an unknown or expired counter.
/// - A table that cannot be reached answers `EngineError::Unavailable`; the add may or may not
///   have happened.
#[async_trait]
pub trait BestEffortTable: Send + Sync {
    /// Adds `delta` and returns the new value.
    async fn add(
        &self,
        key: &CounterKey,
        delta: i64,
        ttl: Option<Duration>,
        now: Timestamp,
    ) -> Result<i64, EngineError>;
    /// The current value.
    async fn get(&self, key: &CounterKey, now: Timestamp) -> Result<i64, EngineError>;
    /// Forgets the counter.
    async fn clear(&self, key: &CounterKey) -> Result<(), EngineError>;
    /// Forgets every counter of a namespace.
    async fn clear_namespace(&self, namespace: &Namespace) -> Result<(), EngineError>;
    /// Drops expired counters held in this process; returns how many went.
    fn sweep(&self, now: Timestamp) -> usize;
}

#[async_trait]
impl BestEffortTable for LocalBestEffort {
    async fn add(
        &self,
        key: &CounterKey,
        delta: i64,
        ttl: Option<Duration>,
        now: Timestamp,
    ) -> Result<i64, EngineError> {
        LocalBestEffort::add(self, key, delta, ttl, now)
    }

    async fn get(&self, key: &CounterKey, now: Timestamp) -> Result<i64, EngineError> {
        Ok(LocalBestEffort::get(self, key, now))
    }

    async fn clear(&self, key: &CounterKey) -> Result<(), EngineError> {
        LocalBestEffort::clear(self, key);
        Ok(())
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<(), EngineError> {
        LocalBestEffort::clear_namespace(self, namespace);
        Ok(())
    }

    fn sweep(&self, now: Timestamp) -> usize {
        LocalBestEffort::sweep(self, now)
    }
}

/// The in-process table of `best_effort` counters.
#[derive(Default)]
pub struct LocalBestEffort {
    counters: DashMap<CounterKey, Entry>,
}

impl LocalBestEffort {
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
        let table = LocalBestEffort::default();
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
