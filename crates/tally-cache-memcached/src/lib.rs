//! Tally on memcached, shared by every instance, in the role EVCache plays at Netflix:
//!
//! - [`MemcachedCache`]: the checkpoint cache. Never the source of truth and never fails a
//!   request: an error, a timeout or a server that is down counts as a miss.
//! - [`MemcachedBestEffort`]: `best_effort` counters, which live only here when configured, so
//!   every instance sees the same values. When memcached is down they answer `UNAVAILABLE`.
//! - [`MemcachedPool`]: the connections both share, with short timeouts and a back-off after a
//!   failed connection, so a dead memcached costs one refused connection per second, not one
//!   per request.

mod best_effort;
mod checkpoints;
mod pool;

pub use best_effort::MemcachedBestEffort;
pub use checkpoints::MemcachedCache;
pub use pool::{Failure, MemcachedOptions, MemcachedPool};

use tally_core::CounterKey;

/// Appends `namespace\0counter`: stored in every value so that a hash collision is detected.
fn push_key(bytes: &mut Vec<u8>, key: &CounterKey) {
    bytes.extend_from_slice(key.namespace.as_str().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.counter.as_str().as_bytes());
}

/// Whether `bytes` is exactly `namespace\0counter` of `key`.
fn is_key(bytes: &[u8], key: &CounterKey) -> bool {
    let (ns, counter) = (key.namespace.as_str().as_bytes(), key.counter.as_str().as_bytes());
    bytes.len() == ns.len() + 1 + counter.len()
        && bytes.starts_with(ns)
        && bytes.get(ns.len()) == Some(&0)
        && bytes.ends_with(counter)
}
