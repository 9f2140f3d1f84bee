//! [`MemcachedBestEffort`]: `best_effort` counters in memcached, shared by every instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_memcached::{Client, MetaProtocol, Status};
use async_trait::async_trait;
use tally_core::{CounterKey, Namespace, Timestamp};
use tally_engine::{BestEffortTable, EngineError};

use crate::pool::{Failure, Generation, MemcachedPool, hashed_key, ttl_flag};

/// Attempts an add makes when the key vanishes or is created by someone else in between.
const ROUNDS: usize = 8;
/// The stored form of 0: values are kept as `value + 2^63` so that memcached's unsigned,
/// wrapping arithmetic is exactly two's-complement `i64` addition.
const ZERO: u64 = 1 << 63;

/// `best_effort` counters in memcached.
///
/// An add is one atomic memcached arithmetic command (`ma`): no read-modify-write, so a hot
/// counter takes concurrent adds from every instance without retries. Values are stored offset
/// by 2^63, which makes memcached's unsigned wrapping increment a signed addition; an add that
/// overflows `i64` is detected from the result and undone by the opposite increment, then
/// refused (a read racing with it may glimpse the wrapped value). Expiry is memcached's own TTL
/// (whole seconds, restarted by every add). `clear_namespace` advances the namespace's key
/// generation.
pub struct MemcachedBestEffort {
    pool: Arc<MemcachedPool>,
    generations: Mutex<HashMap<Namespace, Arc<Generation>>>,
}

impl MemcachedBestEffort {
    /// A table over `pool`.
    pub fn new(pool: Arc<MemcachedPool>) -> Arc<Self> {
        Arc::new(Self { pool, generations: Mutex::new(HashMap::new()) })
    }

    fn generation(&self, namespace: &Namespace) -> Arc<Generation> {
        let mut all = self.generations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(namespace.clone())
            .or_insert_with(|| Arc::new(Generation::new(format!("tally:be:generation:{namespace}"))))
            .clone()
    }

    async fn key(&self, key: &CounterKey) -> String {
        let generation = self.generation(&key.namespace).current(&self.pool).await;
        hashed_key("tally:be", generation, key.namespace.as_str(), key.counter.as_str())
    }
}

fn unavailable(key: &CounterKey, failure: Failure) -> EngineError {
    EngineError::Unavailable(tally_core::Failure::caused_by(format!("best_effort counter {key}"), failure))
}

fn decode(stored: &[u8]) -> Option<i64> {
    let raw: u64 = std::str::from_utf8(stored).ok()?.trim().parse().ok()?;
    Some((raw ^ ZERO) as i64)
}

fn ttl_seconds(ttl: Option<Duration>) -> String {
    // 0 is "never expires" to memcached; a TTL rounds up to whole seconds.
    ttl.map_or_else(|| "0".to_owned(), |t| ttl_flag(t).trim_start_matches('T').to_owned())
}

#[async_trait]
impl BestEffortTable for MemcachedBestEffort {
    async fn add(
        &self,
        key: &CounterKey,
        delta: i64,
        ttl: Option<Duration>,
        _now: Timestamp,
    ) -> Result<i64, EngineError> {
        let mkey = self.key(key).await;
        let ttl = ttl_seconds(ttl);
        let (create, expiry) = (format!("N{ttl}"), format!("T{ttl}"));
        // Created on a miss with the delta already applied (memcached does not apply D then).
        let initial = format!("J{}", (delta as u64) ^ ZERO);
        for _ in 0..ROUNDS {
            let flags = [create.as_str(), initial.as_str(), expiry.as_str(), "v"];
            let op = async |c: &mut Client| {
                c.meta_increment(&mkey, false, None, Some(delta as u64), Some(&flags)).await
            };
            let value = match self.pool.run("best_effort_add", op).await {
                Ok(Some(value)) => value,
                // Created by another add between our miss and our create: go again.
                Ok(None) | Err(Failure::Status(Status::NotStored | Status::NotFound | Status::Exists)) => {
                    continue;
                }
                Err(f) => return Err(unavailable(key, f)),
            };
            let new = value.data.as_deref().and_then(decode).ok_or_else(|| {
                EngineError::Unavailable(
                    format!("best_effort counter {key}: memcached holds a value that is not a number").into(),
                )
            })?;
            let old = new.wrapping_sub(delta);
            if old.checked_add(delta).is_some() {
                return Ok(new);
            }
            let undo = async |c: &mut Client| {
                c.meta_increment(&mkey, false, None, Some(delta.wrapping_neg() as u64), None).await
            };
            self.pool.run("best_effort_add", undo).await.map_err(|f| unavailable(key, f))?;
            return Err(EngineError::Overflow { key: key.clone(), count: old, delta });
        }
        Err(EngineError::Unavailable(
            format!("best_effort counter {key}: kept vanishing under the add; it was not applied").into(),
        ))
    }

    async fn get(&self, key: &CounterKey, _now: Timestamp) -> Result<i64, EngineError> {
        let mkey = self.key(key).await;
        let read = async |c: &mut Client| c.meta_get(&mkey, false, None, Some(&["v"])).await;
        let value = self.pool.run("best_effort_get", read).await.map_err(|f| unavailable(key, f))?;
        Ok(value.and_then(|v| v.data).and_then(|d| decode(&d)).unwrap_or(0))
    }

    async fn clear(&self, key: &CounterKey) -> Result<(), EngineError> {
        let mkey = self.key(key).await;
        let delete = async |c: &mut Client| c.meta_delete(&mkey, false, None, None).await;
        match self.pool.run("best_effort_clear", delete).await {
            Ok(_) | Err(Failure::Status(Status::NotFound)) => Ok(()),
            Err(f) => Err(unavailable(key, f)),
        }
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<(), EngineError> {
        self.generation(namespace).advance(&self.pool).await.map_err(|f| {
            EngineError::Unavailable(tally_core::Failure::caused_by(
                format!("clearing best_effort counters of {namespace}"),
                f,
            ))
        })
    }

    fn sweep(&self, _now: Timestamp) -> usize {
        // memcached expires entries itself.
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_encoding_is_signed_addition() {
        let stored = |v: i64| ((v as u64) ^ ZERO).to_string();
        for v in [0, 1, -1, i64::MIN, i64::MAX] {
            assert_eq!(decode(stored(v).as_bytes()), Some(v));
        }
        // memcached adds the two's complement and wraps at 2^64.
        let raw = ((-5i64 as u64) ^ ZERO).wrapping_add(3i64 as u64);
        assert_eq!(decode(raw.to_string().as_bytes()), Some(-2));
        assert_eq!(decode(b"not a number"), None);
        assert_eq!(ttl_seconds(None), "0");
        assert_eq!(ttl_seconds(Some(Duration::from_millis(1500))), "2");
    }
}
