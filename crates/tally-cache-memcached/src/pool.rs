//! The connection pool every memcached user shares: timeouts, back-off after a failed
//! connection, and key generations that let one instance invalidate a family of keys for all.
//!
//! Why not `deadpool-memcached` (deadpool's manager for `async-memcached`): what this pool
//! must do is less pooling than failing fast. After a failed connection every call is skipped
//! for `backoff`, a cache miss at once; deadpool creates a connection on demand, so while
//! memcached is down each request would wait out a connection attempt. The few connections
//! it keeps and the key generations are the rest of this file.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_memcached::{Client, MetaProtocol, Status};
use tokio::sync::Mutex;

/// Where memcached is and how patient to be with it.
#[derive(Debug, Clone)]
pub struct MemcachedOptions {
    /// `host:port` of the server.
    pub address: String,
    /// Connections kept open; requests beyond them wait for one.
    pub connections: usize,
    /// Longest wait for one operation (connecting included) before it counts as failed.
    pub timeout: Duration,
    /// How long memcached is skipped after a connection fails.
    pub backoff: Duration,
    /// How long an instance trusts its copy of a key generation that another instance may
    /// advance (see [`Generation`]).
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

/// Why a memcached operation gave no answer.
#[derive(Debug)]
pub enum Failure {
    /// Skipped: a connection failed less than `backoff` ago.
    Skipped,
    /// No connection could be made.
    Unreachable(String),
    /// No answer within `timeout`.
    Timeout,
    /// memcached answered with a status that is not success (`EXISTS` after a lost
    /// compare-and-swap, `NOT_STORED` after a lost add, …).
    Status(Status),
    /// The connection broke.
    Io(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Skipped => write!(f, "memcached skipped after a recent connection failure"),
            Self::Unreachable(e) => write!(f, "memcached unreachable: {e}"),
            Self::Timeout => write!(f, "memcached did not answer in time"),
            Self::Status(s) => write!(f, "memcached answered {s}"),
            Self::Io(e) => write!(f, "memcached connection failed: {e}"),
        }
    }
}

impl std::error::Error for Failure {}

/// A fixed set of lazily opened connections to one memcached.
pub struct MemcachedPool {
    options: MemcachedOptions,
    slots: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
    /// Until when memcached is skipped, as milliseconds since `epoch`.
    down_until_ms: AtomicU64,
    epoch: Instant,
}

impl MemcachedPool {
    /// A pool for `options.address`. Connects lazily: memcached need not be up yet.
    pub fn new(options: MemcachedOptions) -> Self {
        let slots = (0..options.connections.max(1)).map(|_| Mutex::new(None)).collect();
        Self {
            options,
            slots,
            next: AtomicUsize::new(0),
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The options the pool was made with.
    pub fn options(&self) -> &MemcachedOptions {
        &self.options
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `op` on a pooled connection within the timeout. `what` labels the metrics.
    pub async fn run<T, F>(&self, what: &'static str, op: F) -> Result<T, Failure>
    where
        F: for<'c> AsyncFnOnce(&'c mut Client) -> Result<T, async_memcached::Error>,
    {
        if self.now_ms() < self.down_until_ms.load(Ordering::Relaxed) {
            metrics::counter!("tally_memcached_skipped_total", "operation" => what).increment(1);
            return Err(Failure::Skipped);
        }
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let attempt = async {
            let mut guard = slot.lock().await;
            let client = match guard.take() {
                Some(client) if !client.is_closed() => guard.insert(client),
                _ => match Client::new(format!("tcp://{}", self.options.address)).await {
                    Ok(client) => guard.insert(client),
                    Err(e) => {
                        let backoff = u64::try_from(self.options.backoff.as_millis()).unwrap_or(1000);
                        self.down_until_ms.store(self.now_ms() + backoff, Ordering::Relaxed);
                        tracing::warn!(address = %self.options.address, error = %e, "memcached unreachable; skipping it for a moment");
                        return Err(Failure::Unreachable(e.to_string()));
                    }
                },
            };
            match op(client).await {
                Ok(v) => Ok(v),
                Err(async_memcached::Error::Protocol(status)) => Err(Failure::Status(status)),
                Err(e) => {
                    // The connection's state is unknown: drop it, the next call reconnects.
                    *guard = None;
                    Err(Failure::Io(e.to_string()))
                }
            }
        };
        let result = match tokio::time::timeout(self.options.timeout, attempt).await {
            Ok(result) => result,
            // A cancelled operation leaves its client marked closed; it reconnects on next use.
            Err(_) => Err(Failure::Timeout),
        };
        if let Err(failure) = &result
            && !matches!(failure, Failure::Status(_))
        {
            metrics::counter!("tally_memcached_failures_total", "operation" => what).increment(1);
            tracing::debug!(address = %self.options.address, operation = what, %failure, "memcached operation failed");
        }
        result
    }
}

/// A number that prefixes a family of keys. Advancing it orphans every key of the old
/// generation at once (memcached evicts them in time), for every instance: each re-reads the
/// generation at most `generation_refresh` after using it.
pub struct Generation {
    key: String,
    cached: Mutex<(u64, Option<Instant>)>,
}

impl Generation {
    /// The generation stored under `key`.
    pub fn new(key: String) -> Self {
        Self { key, cached: Mutex::new((0, None)) }
    }

    /// The current generation; the last known one if memcached cannot say.
    pub async fn current(&self, pool: &MemcachedPool) -> u64 {
        let mut cached = self.cached.lock().await;
        if cached.1.is_some_and(|at| at.elapsed() < pool.options.generation_refresh) {
            return cached.0;
        }
        let key = self.key.as_str();
        if let Ok(value) = pool
            .run("generation", async |c: &mut Client| c.meta_get(key, false, None, Some(&["v"])).await)
            .await
        {
            cached.0 = value
                .and_then(|v| v.data)
                .and_then(|d| String::from_utf8(d).ok()?.trim().parse().ok())
                .unwrap_or(0);
            cached.1 = Some(Instant::now());
        }
        cached.0
    }

    /// Moves to the next generation.
    pub async fn advance(&self, pool: &MemcachedPool) -> Result<(), Failure> {
        let mut cached = self.cached.lock().await;
        cached.1 = None;
        drop(cached);
        let next = self.current(pool).await + 1;
        let key = self.key.as_str();
        let value = next.to_string();
        pool.run("generation", async |c: &mut Client| {
            c.meta_set(key, value.as_str(), false, None, Some(&["T0"])).await
        })
        .await?;
        *self.cached.lock().await = (next, Some(Instant::now()));
        Ok(())
    }
}

/// A memcached key for `namespace\0counter` under a prefix and generation: the 128-bit hash
/// keeps keys short and free of the spaces and control characters memcached refuses.
pub fn hashed_key(prefix: &str, generation: u64, namespace: &str, counter: &str) -> String {
    let mut id = Vec::with_capacity(namespace.len() + counter.len() + 1);
    id.extend_from_slice(namespace.as_bytes());
    id.push(0);
    id.extend_from_slice(counter.as_bytes());
    format!("{prefix}:{generation}:{:032x}", xxhash_rust::xxh3::xxh3_128(&id))
}

/// memcached's TTL flag: whole seconds, rounded up so an entry never expires early there.
pub fn ttl_flag(ttl: Duration) -> String {
    format!("T{}", ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn keys_fit_memcached_whatever_the_counter_name() {
        let long = "é ".repeat(85);
        let k = hashed_key("tally:cp", 3, "ns", &long);
        assert!(k.len() <= 250 && !k.contains(' '), "{k}");
        assert_ne!(k, hashed_key("tally:cp", 4, "ns", &long));
        assert_ne!(hashed_key("p", 0, "ab", "c"), hashed_key("p", 0, "a", "bc"));
    }
}
