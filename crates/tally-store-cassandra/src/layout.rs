//! Where an event or a counter lives: time slices (one table each), time buckets and event
//! buckets (parts of the events' partition key), and counter shards (the counters table's
//! partition key).
//!
//! Every function here is deterministic: any instance, at any time, computes the same place
//! for the same event, which is what makes a retried write land on the row it already wrote.

use std::time::Duration;

use tally_core::Timestamp;
use xxhash_rust::xxh3::xxh3_64;

/// How many partitions the counters table spreads one namespace over. Part of the schema
/// version: changing it moves every counter.
pub const COUNTER_SHARDS: i32 = 16;

/// The partitioning parameters of one keyspace. Fixed when the keyspace is created and read
/// back from it on open, so every instance uses the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Width of one events table, in microseconds.
    pub slice_micros: i64,
    /// Width of one time bucket inside a slice, in microseconds; divides `slice_micros`.
    pub time_bucket_micros: i64,
    /// How many partitions the events of one counter in one time bucket are spread over.
    pub event_buckets: i32,
}

impl Default for Layout {
    /// One table per day, so that a 7-day retention keeps about 8 tables; hour-wide time
    /// buckets so that a busy counter's partitions stay small; four event buckets so that a
    /// hot counter's writes spread over four partitions.
    fn default() -> Self {
        Self { slice_micros: 86_400_000_000, time_bucket_micros: 3_600_000_000, event_buckets: 4 }
    }
}

impl Layout {
    /// A layout from durations, checked.
    pub fn new(slice: Duration, time_bucket: Duration, event_buckets: u32) -> Result<Self, String> {
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let layout = Self {
            slice_micros: micros(slice),
            time_bucket_micros: micros(time_bucket),
            event_buckets: i32::try_from(event_buckets).unwrap_or(i32::MAX),
        };
        layout.validate()?;
        Ok(layout)
    }

    /// Checks the invariants the partitioning relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.time_bucket_micros < 1_000_000 {
            return Err(format!("time bucket must be at least 1s, got {}µs", self.time_bucket_micros));
        }
        if self.slice_micros < self.time_bucket_micros || self.slice_micros % self.time_bucket_micros != 0 {
            return Err(format!(
                "slice width ({}µs) must be a multiple of the time bucket width ({}µs)",
                self.slice_micros, self.time_bucket_micros
            ));
        }
        if self.slice_micros / self.time_bucket_micros > 1024 {
            return Err("a slice may hold at most 1024 time buckets".to_owned());
        }
        if !(1..=64).contains(&self.event_buckets) {
            return Err(format!("event buckets must be 1 to 64, got {}", self.event_buckets));
        }
        Ok(())
    }

    /// The slice holding events generated at `t`.
    pub fn slice_of(&self, t: Timestamp) -> i64 {
        t.as_micros().div_euclid(self.slice_micros)
    }

    /// The half-open time range `[start, end)` of a slice, saturating at the ends of time.
    pub fn slice_range(&self, slice: i64) -> (Timestamp, Timestamp) {
        let start = slice.saturating_mul(self.slice_micros);
        (Timestamp::from_micros(start), Timestamp::from_micros(start.saturating_add(self.slice_micros)))
    }

    /// The time bucket of an event generated at `t`.
    pub fn time_bucket(&self, t: Timestamp) -> i64 {
        t.as_micros().div_euclid(self.time_bucket_micros)
    }

    /// The time buckets of `slice` that overlap `[from, until)`, in order.
    pub fn time_buckets(&self, slice: i64, from: Timestamp, until: Timestamp) -> Vec<i64> {
        let (start, end) = self.slice_range(slice);
        let (from, until) = (from.max(start), until.min(end));
        if from >= until {
            return Vec::new();
        }
        let last = Timestamp::from_micros(until.as_micros() - 1);
        (self.time_bucket(from)..=self.time_bucket(last)).collect()
    }

    /// The event bucket of an idempotency token: a hash of the token string alone, so a retry
    /// of the same event always targets the same partition.
    pub fn event_bucket(&self, token: &str) -> i32 {
        let buckets = u64::try_from(self.event_buckets).unwrap_or(1).max(1);
        i32::try_from(xxh3_64(token.as_bytes()) % buckets).unwrap_or(0)
    }

    /// Every event bucket.
    pub fn all_event_buckets(&self) -> Vec<i32> {
        (0..self.event_buckets).collect()
    }
}

/// The counters-table partition of a counter within its namespace.
pub fn counter_shard(counter: &str) -> i32 {
    i32::try_from(xxh3_64(counter.as_bytes()) % COUNTER_SHARDS as u64).unwrap_or(0)
}

/// The name of a slice's events table. Negative slices (events before 1970) get an `m`.
pub fn events_table(slice: i64) -> String {
    if slice < 0 { format!("events_m{}", slice.unsigned_abs()) } else { format!("events_{slice}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_buckets_cover_exactly_the_overlap() {
        let layout = Layout { slice_micros: 100, time_bucket_micros: 10, event_buckets: 2 };
        assert_eq!(
            layout.time_buckets(1, Timestamp::from_micros(95), Timestamp::from_micros(121)),
            vec![10, 11, 12]
        );
        assert_eq!(
            layout.time_buckets(1, Timestamp::from_micros(120), Timestamp::from_micros(120)),
            Vec::<i64>::new()
        );
        assert_eq!(layout.time_buckets(1, Timestamp::MIN, Timestamp::MAX).len(), 10);
        assert_eq!(layout.time_buckets(0, Timestamp::from_micros(200), Timestamp::MAX), Vec::<i64>::new());
    }

    #[test]
    fn slices_of_negative_times_round_down() {
        let layout = Layout { slice_micros: 100, time_bucket_micros: 10, event_buckets: 2 };
        assert_eq!(layout.slice_of(Timestamp::from_micros(-1)), -1);
        assert_eq!(layout.slice_of(Timestamp::MIN), i64::MIN.div_euclid(100));
        assert_eq!(events_table(-3), "events_m3");
        assert_eq!(events_table(20_000), "events_20000");
    }

    #[test]
    fn event_bucket_depends_on_the_token_only() {
        let layout = Layout::default();
        let b = layout.event_bucket("retry-me");
        assert!((0..4).contains(&b));
        assert_eq!(layout.event_bucket("retry-me"), b);
    }

    #[test]
    fn layouts_that_break_the_partitioning_are_refused() {
        let s = Duration::from_secs;
        assert!(Layout::new(s(86_400), s(3_600), 4).is_ok());
        assert!(Layout::new(s(86_400), s(7_000), 4).is_err());
        assert!(Layout::new(s(86_400), s(60), 4).is_err(), "1440 buckets per slice");
        assert!(Layout::new(s(3_600), s(3_600), 0).is_err());
    }
}
