//! Engine-wide settings; per-namespace ones live in `NamespaceConfig`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tally_core::CounterType;

/// Settings of the engine as a whole. Every default says why it has its value. The config
/// file's `[engine]` table is this struct, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineOptions {
    /// Rollup queues, each drained by its own worker. Default 8, Netflix's value: enough to
    /// keep two cores busy while one queue waits on the store.
    pub rollup_queues: usize,
    /// Counters one worker takes in one batch. Where memory holds their events (the embedded
    /// store) their checkpoints go to the store in one request; the others roll up through
    /// the store, this many at once. Default 32, Netflix's `rollup_batch_count`.
    pub rollup_batch: usize,
    /// Distinct counters one queue holds. Default 65,536 (about 6 MiB per queue). A trigger
    /// for a full queue is dropped and counted; the pending scan finds the counter later.
    pub rollup_queue_capacity: usize,
    /// How long a rollup batch may take before the worker slows down. Default 50 ms.
    #[serde(with = "humantime_serde")]
    pub rollup_target_batch_time: Duration,
    /// How often the store is scanned for counters whose events are not yet folded, which
    /// re-arms triggers lost to a crash, a full queue or another instance's crash. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub pending_scan_interval: Duration,
    /// How often retention runs. Default 10 min: retention is measured in days.
    #[serde(with = "humantime_serde")]
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
    /// Namespaces made on their first write (a Redis user's `INCR user:1000:visits` makes
    /// `user`), with the counter type they get; `off` (or unset): a write to a missing
    /// namespace is refused `NOT_FOUND`. A read of a missing namespace answers 0 when they are
    /// made, and makes nothing. Unset here; `tally serve` makes them `eventual` on the
    /// embedded store when the config leaves it unset (on Cassandra namespaces are usually an
    /// operator's decision).
    pub auto_create_namespaces: Option<AutoCreate>,
}

/// `auto_create_namespaces`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoCreate {
    /// Writes to a missing namespace are refused `NOT_FOUND`.
    Off,
    /// New namespaces are `best_effort`.
    BestEffort,
    /// New namespaces are `eventual`.
    Eventual,
    /// New namespaces are `accurate`.
    Accurate,
}

impl EngineOptions {
    /// The counter type namespaces made on their first write get, if they are made.
    pub fn auto_create_type(&self) -> Option<CounterType> {
        match self.auto_create_namespaces? {
            AutoCreate::Off => None,
            AutoCreate::BestEffort => Some(CounterType::BestEffort),
            AutoCreate::Eventual => Some(CounterType::Eventual),
            AutoCreate::Accurate => Some(CounterType::Accurate),
        }
    }

    /// Refuses bounds the engine cannot work with, naming the setting.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("rollup_queues", self.rollup_queues),
            ("rollup_batch", self.rollup_batch),
            ("rollup_queue_capacity", self.rollup_queue_capacity),
            ("max_in_flight", self.max_in_flight),
            ("local_tail_max_events", self.local_tail_max_events),
        ];
        match positive.iter().find(|(_, value)| *value == 0) {
            Some((name, _)) => Err(format!("{name} = 0: it must be at least 1")),
            None => Ok(()),
        }
    }
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
