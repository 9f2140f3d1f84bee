//! A [`CheckpointCache`](tally_engine::cache::CheckpointCache) on memcached, shared by every
//! Tally instance, in the role EVCache plays at Netflix.
//!
//! The cache is never the source of truth and never fails a request: every operation has a
//! short timeout, and an error, a timeout or a server that is down counts as a miss (or a
//! skipped write). After a failed connection the cache is skipped for a short back-off, so a
//! dead memcached costs one refused connection per second, not one per request.

mod memcached;

pub use memcached::{MemcachedCache, MemcachedOptions};
