//! The checkpoint cache: a copy of recent checkpoints close to the read path.
//!
//! The cache is never the source of truth. A miss reads the store; a stale entry is bounded
//! by the namespace's `cache_ttl`; a lost cache loses nothing.

use std::time::Duration;

use async_trait::async_trait;
use moka::ops::compute::Op;
use tally_core::{Checkpoint, CounterKey, Timestamp};

/// Where checkpoints are cached.
///
/// Contract:
/// - `get` returns a checkpoint that was `put` for the key and has not expired, or `None`;
///   it may return `None` at any time (eviction, restart, a remote cache that is down).
/// - `put` never replaces a cached checkpoint with an older one (smaller `until`).
/// - Neither call fails: a cache that cannot answer behaves as a miss.
#[async_trait]
pub trait CheckpointCache: Send + Sync {
    /// The cached checkpoint of `key`, if any and not expired at `now`.
    async fn get(&self, key: &CounterKey, now: Timestamp) -> Option<Checkpoint>;
    /// Caches `checkpoint` until `now + ttl`, unless a newer one is cached.
    async fn put(&self, key: &CounterKey, checkpoint: Checkpoint, now: Timestamp, ttl: Duration);
    /// Drops every entry (after a namespace is deleted, say).
    async fn clear(&self);
}

#[derive(Clone, Copy)]
struct Entry {
    checkpoint: Checkpoint,
    expires: Timestamp,
}

/// The in-process cache: bounded by entry count, least-recently-used entries evicted first.
pub struct LocalCache {
    entries: moka::sync::Cache<CounterKey, Entry>,
}

impl LocalCache {
    /// A cache holding at most `capacity` checkpoints.
    pub fn new(capacity: u64) -> Self {
        Self { entries: moka::sync::Cache::new(capacity) }
    }
}

#[async_trait]
impl CheckpointCache for LocalCache {
    async fn get(&self, key: &CounterKey, now: Timestamp) -> Option<Checkpoint> {
        self.entries.get(key).filter(|e| now < e.expires).map(|e| e.checkpoint)
    }

    async fn put(&self, key: &CounterKey, checkpoint: Checkpoint, now: Timestamp, ttl: Duration) {
        let fresh = Entry { checkpoint, expires: now.saturating_add(ttl) };
        self.entries.entry_by_ref(key).and_compute_with(|cached| match cached {
            Some(e) if e.value().checkpoint.until > checkpoint.until && now < e.value().expires => Op::Nop,
            _ => Op::Put(fresh),
        });
    }

    async fn clear(&self) {
        self.entries.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CounterKey {
        CounterKey::parse_joined("ns:c").expect("key")
    }

    fn cp(count: i64, until: i64) -> Checkpoint {
        Checkpoint { count, until: Timestamp::from_micros(until) }
    }

    #[tokio::test]
    async fn keeps_the_newer_checkpoint_and_expires_entries() {
        let cache = LocalCache::new(10);
        let now = Timestamp::from_micros(1_000);
        let ttl = Duration::from_micros(500);
        cache.put(&key(), cp(5, 200), now, ttl).await;
        cache.put(&key(), cp(3, 100), now, ttl).await;
        assert_eq!(cache.get(&key(), now).await, Some(cp(5, 200)));
        cache.put(&key(), cp(6, 300), now, ttl).await;
        assert_eq!(cache.get(&key(), now).await, Some(cp(6, 300)));
        assert_eq!(cache.get(&key(), Timestamp::from_micros(1_500)).await, None);
        cache.clear().await;
        assert_eq!(cache.get(&key(), now).await, None);
    }
}
