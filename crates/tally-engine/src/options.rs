//! Engine-wide settings; per-namespace ones live in `NamespaceConfig`.

use std::time::Duration;

use tally_core::CounterType;

/// Settings of the engine as a whole. Every default says why it has its value.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Rollup queues, each drained by its own worker. Default 8, Netflix's value: enough to
    /// keep two cores busy while one queue waits on the store.
    pub rollup_queues: usize,
    /// Counters one worker rolls up concurrently in one batch. Default 32, Netflix's
    /// `rollup_batch_count`.
    pub rollup_batch: usize,
    /// Distinct counters one queue holds. Default 65,536 (about 6 MiB per queue). A trigger
    /// for a full queue is dropped and counted; the pending scan finds the counter later.
    pub rollup_queue_capacity: usize,
    /// How long a rollup batch may take before the worker slows down. Default 50 ms.
    pub rollup_target_batch_time: Duration,
    /// How often the store is scanned for counters whose events are not yet folded, which
    /// re-arms triggers lost to a crash, a full queue or another instance's crash. Default 60 s.
    pub pending_scan_interval: Duration,
    /// How often retention runs. Default 10 min: retention is measured in days.
    pub retention_interval: Duration,
    /// Checkpoints kept in the in-process cache. Default 200,000 (about 40 MiB).
    pub cache_capacity: u64,
    /// Counter operations that may wait on the store at once; more are refused at once with
    /// `RESOURCE_EXHAUSTED` instead of queueing without bound when the store is slower than
    /// the load. Default 16,384: well above the 512–4,096 in flight the embedded store's
    /// group commit needs for full speed, and a few MiB of waiting requests at most.
    pub max_in_flight: usize,
    /// Events the local tail holds in memory at most (on a store only this process writes).
    /// Default 2,000,000, about 200 MiB: four times what 75,000 adds a second leave unfolded
    /// with the default windows. Past it (a burst, or a namespace with a long `accept_limit`)
    /// new events are left to the store, and their counters are read and folded through it
    /// until a rollup passes them.
    pub local_tail_max_events: usize,
    /// The counter type of namespaces made on their first write (a Redis user's
    /// `INCR user:1000:visits` makes `user`); `None`: a write to a missing namespace is refused
    /// `NOT_FOUND`. A read of a missing namespace answers 0 when this is set, and makes nothing.
    /// Default `None` here; `tally serve` turns it on (`eventual`) for the embedded store.
    pub auto_create_namespaces: Option<CounterType>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            rollup_queues: 8,
            rollup_batch: 32,
            rollup_queue_capacity: 65_536,
            rollup_target_batch_time: Duration::from_millis(50),
            pending_scan_interval: Duration::from_secs(60),
            retention_interval: Duration::from_secs(600),
            cache_capacity: 200_000,
            max_in_flight: 16_384,
            local_tail_max_events: 2_000_000,
            auto_create_namespaces: None,
        }
    }
}
