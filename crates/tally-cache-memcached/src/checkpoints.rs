//! [`MemcachedCache`]: checkpoints in memcached.

use std::sync::Arc;
use std::time::Duration;

use async_memcached::{Client, MetaProtocol};
use async_trait::async_trait;
use tally_core::{Checkpoint, CounterKey, Timestamp};
use tally_engine::cache::CheckpointCache;

use crate::pool::{Generation, MemcachedPool, hashed_key, ttl_flag};

/// Checkpoints in memcached.
///
/// Entries hold the counter's key, so a hash collision reads as a miss; they carry their own
/// expiry (judged by Tally's clock) besides memcached's TTL. `put` compares and swaps, so an
/// older checkpoint never replaces a newer one, even between instances. `clear` moves every
/// instance to a new key generation within `generation_refresh`. Any failure is a miss.
pub struct MemcachedCache {
    pool: Arc<MemcachedPool>,
    generation: Generation,
}

impl MemcachedCache {
    /// A checkpoint cache over `pool`.
    pub fn new(pool: Arc<MemcachedPool>) -> Arc<Self> {
        Arc::new(Self { pool, generation: Generation::new("tally:cp:generation".to_owned()) })
    }

    async fn key(&self, key: &CounterKey) -> String {
        let generation = self.generation.current(&self.pool).await;
        hashed_key("tally:cp", generation, key.namespace.as_str(), key.counter.as_str())
    }
}

/// `count, until, expires` (big-endian i64s), then the counter key as `namespace\0counter`.
fn encode(key: &CounterKey, checkpoint: Checkpoint, expires: Timestamp) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(24 + key.namespace.as_str().len() + key.counter.as_str().len() + 1);
    bytes.extend_from_slice(&checkpoint.count.to_be_bytes());
    bytes.extend_from_slice(&checkpoint.until.as_micros().to_be_bytes());
    bytes.extend_from_slice(&expires.as_micros().to_be_bytes());
    crate::push_key(&mut bytes, key);
    bytes
}

fn decode(key: &CounterKey, bytes: &[u8]) -> Option<(Checkpoint, Timestamp)> {
    let word = |i: usize| Some(i64::from_be_bytes(bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?));
    let (count, until, expires) = (word(0)?, word(1)?, word(2)?);
    crate::is_key(bytes.get(24..)?, key).then_some((
        Checkpoint { count, until: Timestamp::from_micros(until) },
        Timestamp::from_micros(expires),
    ))
}

#[async_trait]
impl CheckpointCache for MemcachedCache {
    async fn get(&self, key: &CounterKey, now: Timestamp) -> Option<Checkpoint> {
        let mkey = self.key(key).await;
        let value = self
            .pool
            .run("checkpoint_get", async |c: &mut Client| c.meta_get(&mkey, false, None, Some(&["v"])).await)
            .await
            .ok()??;
        let (checkpoint, expires) = decode(key, value.data.as_deref()?)?;
        (now < expires).then_some(checkpoint)
    }

    async fn put(&self, key: &CounterKey, checkpoint: Checkpoint, now: Timestamp, ttl: Duration) {
        let mkey = self.key(key).await;
        let bytes = encode(key, checkpoint, now.saturating_add(ttl));
        let ttl = ttl_flag(ttl);
        // Compare and swap: read the entry with its CAS id, keep it if it is newer and fresh,
        // otherwise replace exactly that version (or add if there is none). A lost race is
        // retried once; after that the other writer's value stands, which the contract allows.
        for _ in 0..2 {
            let read = async |c: &mut Client| c.meta_get(&mkey, false, None, Some(&["v", "c"])).await;
            let Ok(current) = self.pool.run("checkpoint_get", read).await else { return };
            let flags: Vec<String> = match &current {
                Some(entry) => {
                    let cached = entry.data.as_deref().and_then(|d| decode(key, d));
                    if cached.is_some_and(|(cp, exp)| cp.until > checkpoint.until && now < exp) {
                        return;
                    }
                    match entry.cas {
                        Some(cas) => vec![ttl.clone(), format!("C{cas}")],
                        None => return,
                    }
                }
                None => vec![ttl.clone(), "ME".to_owned()],
            };
            let write = async |c: &mut Client| {
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                c.meta_set(&mkey, bytes.as_slice(), false, None, Some(&flags)).await
            };
            if self.pool.run("checkpoint_put", write).await.is_ok() {
                return;
            }
        }
    }

    async fn clear(&self) {
        if let Err(e) = self.generation.advance(&self.pool).await {
            tracing::warn!(error = %e, "could not clear the memcached checkpoint cache; entries expire by their TTL");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::{CounterName, Namespace};

    fn key(ns: &str, c: &str) -> CounterKey {
        CounterKey::new(Namespace::new(ns).expect("ns"), CounterName::new(c).expect("name"))
    }

    #[test]
    fn entries_round_trip_and_never_answer_for_another_key() {
        let cp = Checkpoint { count: -7, until: Timestamp::from_micros(99) };
        let bytes = encode(&key("ab", "c"), cp, Timestamp::from_micros(1000));
        assert_eq!(decode(&key("ab", "c"), &bytes), Some((cp, Timestamp::from_micros(1000))));
        assert_eq!(decode(&key("a", "bc"), &bytes), None);
        assert_eq!(decode(&key("ab", "c"), &bytes[..20]), None);
    }
}
