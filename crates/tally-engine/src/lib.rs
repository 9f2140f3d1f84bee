//! The counter engine: what every front door calls.
//!
//! - [`Engine`] ([`engine`]) holds the four operations, `add_count`, `add_and_get_count`,
//!   `get_count` and `clear_count`, plus the namespace control plane;
//! - [`rollup`] folds events into checkpoints in the background: triggers are hashed onto
//!   coalescing queues, taken in batches, and re-queued until a counter has caught up;
//! - `tail` keeps the unfolded events of a store only this process writes in memory, so
//!   rollups, reads and retries need no store reads there;
//! - [`cache`] keeps checkpoints close ([`CheckpointCache`]) on stores several instances share;
//!   it is never the source of truth;
//! - [`best_effort`] holds `best_effort` counters (the `BestEffortTable` seam; in memory by default);
//! - [`namespaces`] caches namespace configurations read from the store;
//! - [`retention`] deletes events past their namespace's retention once they are folded;
//! - [`routing`] sends rollup triggers to one owner per counter among peers (rendezvous hashing).
//!
//! The engine owns no threads until [`Engine::start_background`] is called, and reads time
//! only through the injected [`tally_core::Clock`], so tests drive it step by step (only
//! [`LogLimit`], which spaces repeated warnings, reads the monotonic clock).
//! [`log_limit`] keeps an outage from flooding the log.

pub mod best_effort;
pub mod cache;
mod engine;
mod error;
pub mod log_limit;
pub mod namespaces;
mod options;
pub mod retention;
pub mod rollup;
pub mod routing;
mod tail;
mod timed;

pub use best_effort::{BestEffortTable, LocalBestEffort};
pub use cache::{CheckpointCache, LocalCache};
pub use engine::{
    Background, BatchAdd, Bucket, Count, CounterPage, Engine, EventPage, LIST_SCAN_BUDGET, ListedEvent,
    MAX_EVENTS_PAGE, MAX_LIST_LIMIT, MAX_SERIES_BUCKETS, MAX_SERIES_EVENTS, Mutated, Recount, Series,
    SeriesRange,
};
pub use error::{EngineError, EngineResult};
pub use log_limit::LogLimit;
pub use options::{AutoCreate, EngineOptions};
pub use routing::{LocalTrigger, Rendezvous, RollupRouter};
