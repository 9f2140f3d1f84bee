//! [`MemcachedCache`]: checkpoints in memcached, behind a small connection pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_memcached::{Client, MetaProtocol};
use async_trait::async_trait;
use tally_core::{Checkpoint, CounterKey, Timestamp};
use tally_engine::cache::CheckpointCache;
use tokio::sync::Mutex;
use xxhash_rust::xxh3::xxh3_128;

/// Where memcached is and how patient to be with it.
#[derive(Debug, Clone)]
pub struct MemcachedOptions {
    /// `host:port` of the server.
    pub address: String,
    /// Connections kept open; requests beyond them wait for one.
    pub connections: usize,
    /// Longest wait for one cache operation (connecting included) before it counts as a miss.
    pub timeout: Duration,
    /// How long the cache is skipped after a connection fails.
    pub backoff: Duration,
    /// How long an instance trusts its copy of the key generation that `clear` advances.
    pub generation_refresh: Duration,
}

impl Default for MemcachedOptions {
    /// Short timeouts: a cache answer that takes longer than a store read is worthless.
    fn default() -> Self {
        Self {
            address: "127.0.0.1:11211".to_owned(),
            connections: 8,
            timeout: Duration::from_millis(50),
            backoff: Duration::from_secs(1),
            generation_refresh: Duration::from_secs(1),
        }
    }
}

impl MemcachedOptions {
    /// Parses `memcached://host[:port]`; the port defaults to 11211.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let host = url
            .strip_prefix("memcached://")
            .ok_or_else(|| format!("cache URL {url:?} must start with memcached://"))?
            .trim_end_matches('/');
        if host.is_empty() || host.contains('/') || host.contains(',') {
            return Err(format!("cache URL {url:?} must name exactly one host[:port]"));
        }
        let address = if host.contains(':') { host.to_owned() } else { format!("{host}:11211") };
        Ok(Self { address, ..Self::default() })
    }
}

/// Checkpoints in memcached.
///
/// Entries hold the counter's key, so a hash collision reads as a miss; they carry their own
/// expiry (judged by Tally's clock) besides memcached's TTL. `put` compares and swaps, so an
/// older checkpoint never replaces a newer one, even between instances. `clear` moves every
/// instance to a new key generation within `generation_refresh`.
pub struct MemcachedCache {
    options: MemcachedOptions,
    pool: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
    /// Until when the cache is skipped, as milliseconds since `epoch`.
    down_until_ms: AtomicU64,
    epoch: Instant,
    generation: Mutex<(u64, Option<Instant>)>,
}

const GENERATION_KEY: &str = "tally:cp:generation";

impl MemcachedCache {
    /// A cache on `options.address`. Connects lazily: memcached need not be up yet.
    pub fn new(options: MemcachedOptions) -> Arc<Self> {
        let pool = (0..options.connections.max(1)).map(|_| Mutex::new(None)).collect();
        Arc::new(Self {
            options,
            pool,
            next: AtomicUsize::new(0),
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            generation: Mutex::new((0, None)),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `op` on a pooled connection within the timeout; `None` on any failure.
    async fn with_client<T, F>(&self, what: &'static str, op: F) -> Option<T>
    where
        F: for<'c> AsyncFnOnce(&'c mut Client) -> Result<T, async_memcached::Error>,
    {
        if self.now_ms() < self.down_until_ms.load(Ordering::Relaxed) {
            metrics::counter!("tally_cache_skipped_total", "cache" => "memcached").increment(1);
            return None;
        }
        let slot = &self.pool[self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len()];
        let attempt = async {
            let mut guard = slot.lock().await;
            if guard.as_ref().is_none_or(Client::is_closed) {
                match Client::new(format!("tcp://{}", self.options.address)).await {
                    Ok(client) => *guard = Some(client),
                    Err(e) => {
                        let until =
                            self.now_ms() + u64::try_from(self.options.backoff.as_millis()).unwrap_or(1000);
                        self.down_until_ms.store(until, Ordering::Relaxed);
                        tracing::warn!(address = %self.options.address, error = %e, "memcached unreachable; skipping the cache for a moment");
                        return None;
                    }
                }
            }
            let client = guard.as_mut()?;
            match op(client).await {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::debug!(address = %self.options.address, operation = what, error = %e, "memcached operation failed");
                    if !matches!(e, async_memcached::Error::Protocol(_)) {
                        *guard = None;
                    }
                    None
                }
            }
        };
        match tokio::time::timeout(self.options.timeout, attempt).await {
            Ok(result) => {
                if result.is_none() {
                    metrics::counter!("tally_cache_errors_total", "cache" => "memcached", "operation" => what)
                        .increment(1);
                }
                result
            }
            Err(_) => {
                // The connection may be mid-reply; it is closed by the client on next use.
                metrics::counter!("tally_cache_timeouts_total", "cache" => "memcached", "operation" => what)
                    .increment(1);
                None
            }
        }
    }

    /// The current key generation, refreshed from memcached at most once a second.
    async fn generation(&self) -> u64 {
        let mut cached = self.generation.lock().await;
        if cached.1.is_some_and(|at| at.elapsed() < self.options.generation_refresh) {
            return cached.0;
        }
        let read = self
            .with_client("generation", async |c: &mut Client| {
                c.meta_get(GENERATION_KEY, false, None, Some(&["v"])).await
            })
            .await;
        if let Some(value) = read {
            cached.0 = value
                .and_then(|v| v.data)
                .and_then(|d| String::from_utf8(d).ok()?.trim().parse().ok())
                .unwrap_or(0);
            cached.1 = Some(Instant::now());
        }
        cached.0
    }

    fn key(generation: u64, key: &CounterKey) -> String {
        let mut id = Vec::with_capacity(key.namespace.as_str().len() + key.counter.as_str().len() + 1);
        id.extend_from_slice(key.namespace.as_str().as_bytes());
        id.push(0);
        id.extend_from_slice(key.counter.as_str().as_bytes());
        format!("tally:cp:{generation}:{:032x}", xxh3_128(&id))
    }
}

/// `count, until, expires` (big-endian i64s), then the counter key as `namespace\0counter`.
fn encode(key: &CounterKey, checkpoint: Checkpoint, expires: Timestamp) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(24 + key.namespace.as_str().len() + key.counter.as_str().len() + 1);
    bytes.extend_from_slice(&checkpoint.count.to_be_bytes());
    bytes.extend_from_slice(&checkpoint.until.as_micros().to_be_bytes());
    bytes.extend_from_slice(&expires.as_micros().to_be_bytes());
    bytes.extend_from_slice(key.namespace.as_str().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.counter.as_str().as_bytes());
    bytes
}

fn decode(key: &CounterKey, bytes: &[u8]) -> Option<(Checkpoint, Timestamp)> {
    let word = |i: usize| Some(i64::from_be_bytes(bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?));
    let (count, until, expires) = (word(0)?, word(1)?, word(2)?);
    let rest = bytes.get(24..)?;
    let ns = key.namespace.as_str().as_bytes();
    let counter = key.counter.as_str().as_bytes();
    let same = rest.len() == ns.len() + 1 + counter.len()
        && rest.starts_with(ns)
        && rest.get(ns.len()) == Some(&0)
        && rest.ends_with(counter);
    same.then_some((
        Checkpoint { count, until: Timestamp::from_micros(until) },
        Timestamp::from_micros(expires),
    ))
}

fn ttl_flag(ttl: Duration) -> String {
    // memcached counts whole seconds; round up so an entry never expires early there.
    format!("T{}", ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
}

#[async_trait]
impl CheckpointCache for MemcachedCache {
    async fn get(&self, key: &CounterKey, now: Timestamp) -> Option<Checkpoint> {
        let mkey = Self::key(self.generation().await, key);
        let value = self
            .with_client("get", async |c: &mut Client| c.meta_get(&mkey, false, None, Some(&["v"])).await)
            .await??;
        let (checkpoint, expires) = decode(key, value.data.as_deref()?)?;
        (now < expires).then_some(checkpoint)
    }

    async fn put(&self, key: &CounterKey, checkpoint: Checkpoint, now: Timestamp, ttl: Duration) {
        let mkey = Self::key(self.generation().await, key);
        let expires = now.saturating_add(ttl);
        let bytes = encode(key, checkpoint, expires);
        let ttl = ttl_flag(ttl);
        // Compare and swap: read the entry with its CAS id, keep it if it is newer and fresh,
        // otherwise replace exactly that version (or add if there is none). A lost race is
        // retried once; after that the other writer's value stands, which the contract allows.
        for _ in 0..2 {
            let current = self
                .with_client("get", async |c: &mut Client| {
                    c.meta_get(&mkey, false, None, Some(&["v", "c"])).await
                })
                .await;
            let Some(current) = current else { return };
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
            let stored = self
                .with_client("put", async |c: &mut Client| {
                    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                    c.meta_set(&mkey, bytes.as_slice(), false, None, Some(&flags)).await
                })
                .await;
            if stored.is_some() {
                return;
            }
        }
    }

    async fn clear(&self) {
        let mut cached = self.generation.lock().await;
        let next = cached.0 + 1;
        let written = self
            .with_client("clear", async |c: &mut Client| {
                let value = next.to_string();
                c.meta_set(GENERATION_KEY, value.as_str(), false, None, Some(&["T0"])).await
            })
            .await;
        if written.is_some() {
            *cached = (next, Some(Instant::now()));
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

    #[test]
    fn keys_fit_memcached_whatever_the_counter_name() {
        let long = "é ".repeat(85);
        let k = MemcachedCache::key(3, &key("ns", &long));
        assert!(k.len() <= 250 && !k.contains(' '), "{k}");
        assert_ne!(k, MemcachedCache::key(4, &key("ns", &long)));
    }

    #[test]
    fn urls_parse() {
        assert_eq!(
            MemcachedOptions::from_url("memcached://10.0.0.5").expect("url").address,
            "10.0.0.5:11211"
        );
        assert_eq!(MemcachedOptions::from_url("memcached://h:1234/").expect("url").address, "h:1234");
        assert!(MemcachedOptions::from_url("redis://h").is_err());
        assert!(MemcachedOptions::from_url("memcached://a,b").is_err());
        assert_eq!(ttl_flag(Duration::from_millis(1500)), "T2");
    }
}
