//! `Engine::series`: a counter's adds summed per time bucket, read from its event log.
//!
//! The series is the history of adds: a bucket sums the deltas of the adds generated in it,
//! and a clear in it is counted, not subtracted, so a bucket before a clear still shows what
//! happened then. The count is the current value; the series is how it got there.
//!
//! It is computed when asked, from the events still kept (the namespace's `retention`), not
//! kept as per-bucket sums by the rollups: adds and rollups pay nothing for it, it is exact by
//! construction (the same events the checkpoints fold), and every step works on the same data.
//! What it costs is a read of the range's events per request, bounded by
//! [`MAX_SERIES_EVENTS`].

use std::time::Duration;

use tally_core::{CounterKey, EventKind, NamespaceConfig, Timestamp};
use tally_store::EventCursor;

use super::{Count, Engine};
use crate::error::{EngineError, EngineResult};

/// Most buckets one series holds.
pub const MAX_SERIES_BUCKETS: usize = 10_000;
/// Most events one series reads; a range that holds more is refused (ask for a shorter one).
pub const MAX_SERIES_EVENTS: u64 = 5_000_000;
/// Events read from the store at a time. Large: a page of the Cassandra store reads its
/// whole range from the cursor on (its event tables are partitioned by time slice, not
/// ordered by counter), so each extra page re-reads the rest of the range.
const PAGE: usize = 16_384;

/// A checked time range cut into buckets of `step`: `[from, to)`, `to - from` a whole number
/// of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesRange {
    from: Timestamp,
    to: Timestamp,
    step_micros: i64,
}

impl SeriesRange {
    /// The buckets of `step` from `from` that cover `[from, to)` (the last one may reach past
    /// `to`). Refused: an empty range, a step under a millisecond, more than
    /// [`MAX_SERIES_BUCKETS`] buckets.
    pub fn new(from: Timestamp, to: Timestamp, step: Duration) -> EngineResult<Self> {
        let bad = |why: String| Err(EngineError::InvalidRange(why));
        if to <= from {
            return bad(format!("the range [{from}, {to}) is empty: from must be before to"));
        }
        let step_micros = i64::try_from(step.as_micros()).unwrap_or(i64::MAX);
        if step_micros < 1_000 {
            return bad(format!("step {step:?} is under the smallest of 1ms"));
        }
        let span = i128::from(to.as_micros()) - i128::from(from.as_micros());
        // `span` is positive: the range is not empty.
        let buckets = (span + i128::from(step_micros) - 1) / i128::from(step_micros);
        if buckets > MAX_SERIES_BUCKETS as i128 {
            return bad(format!(
                "[{from}, {to}) in steps of {} is {buckets} buckets; at most {MAX_SERIES_BUCKETS}",
                humantime::format_duration(step)
            ));
        }
        let to = Timestamp::from_micros(from.as_micros().saturating_add(buckets as i64 * step_micros));
        Ok(Self { from, to, step_micros })
    }

    /// Each bucket's length.
    pub fn step(&self) -> Duration {
        Duration::from_micros(self.step_micros as u64)
    }

    /// How many buckets.
    pub fn buckets(&self) -> usize {
        ((self.to.as_micros() - self.from.as_micros()) / self.step_micros) as usize
    }

    /// Where bucket `i` starts.
    fn start(&self, i: usize) -> Timestamp {
        Timestamp::from_micros(self.from.as_micros() + i as i64 * self.step_micros)
    }

    /// The bucket of a time inside the range.
    fn index(&self, t: Timestamp) -> usize {
        debug_assert!(self.from <= t && t < self.to, "{t} is outside [{}, {})", self.from, self.to);
        ((t.as_micros() - self.from.as_micros()) / self.step_micros) as usize
    }
}

/// The adds of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Where it starts; it ends one step later.
    pub start: Timestamp,
    /// The sum of the deltas of its adds (saturating at the 64-bit range).
    pub added: i64,
    /// How many add events it holds.
    pub adds: u64,
    /// How many clears it holds; they are not subtracted.
    pub clears: u64,
    /// Whether the counter's checkpoint covers the whole bucket: its events are folded into the
    /// count and, inside the write window's end, no later add can land in it.
    pub folded: bool,
    /// Whether the whole bucket is within the namespace's retention: no event of it can have
    /// been deleted.
    pub retained: bool,
}

/// A counter's series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// One per step, oldest first.
    pub buckets: Vec<Bucket>,
    /// The sum of the buckets' adds: the windowed count, how much was added in the range.
    pub total: i64,
    /// Events generated before this time may have been deleted by retention.
    pub kept_since: Timestamp,
}

impl Engine {
    /// `GetCountSeries`: the adds of `key` per bucket of `range`, from its kept events.
    /// `best_effort` counters keep no events and are refused.
    pub async fn series(&self, key: &CounterKey, range: SeriesRange) -> EngineResult<Series> {
        let _permit = self.admit()?;
        let config = self.durable_namespace(key).await?;
        // Read before the events: a bucket it covers already holds every event it ever will.
        let checkpoint = self.checkpoint(key, &config).await?;
        self.series_of(key, &config, range, checkpoint.until).await
    }

    /// [`Engine::series`] once admitted, with the namespace's settings (of a durable counter
    /// type); buckets ending at or before `folded_until` are marked folded.
    async fn series_of(
        &self,
        key: &CounterKey,
        config: &NamespaceConfig,
        range: SeriesRange,
        folded_until: Timestamp,
    ) -> EngineResult<Series> {
        debug_assert!(config.counter_type.is_durable(), "{} keeps no events", config.counter_type);
        let kept_since = self.inner.clock.now().saturating_sub(config.retention);
        let step = range.step();
        let mut buckets: Vec<Bucket> = (0..range.buckets())
            .map(|i| {
                let start = range.start(i);
                Bucket {
                    start,
                    added: 0,
                    adds: 0,
                    clears: 0,
                    folded: start.saturating_add(step) <= folded_until,
                    retained: start >= kept_since,
                }
            })
            .collect();
        let (mut after, mut read) = (None::<EventCursor>, 0u64);
        loop {
            let page = self.inner.store.list_events(key, range.from, range.to, after.as_ref(), PAGE).await?;
            read += page.len() as u64;
            if read > MAX_SERIES_EVENTS {
                return Err(EngineError::RangeTooLarge { key: key.clone(), limit: MAX_SERIES_EVENTS });
            }
            for event in &page {
                let bucket = &mut buckets[range.index(event.token.generation_time())];
                match event.kind {
                    EventKind::Add(delta) => {
                        bucket.added = bucket.added.saturating_add(delta);
                        bucket.adds += 1;
                    }
                    EventKind::Clear => bucket.clears += 1,
                }
            }
            if page.len() < PAGE {
                break;
            }
            after = page.last().map(EventCursor::after);
            // A long range must not hold a runtime thread for the whole read.
            tokio::task::yield_now().await;
        }
        let total = buckets.iter().fold(0i64, |sum, b| sum.saturating_add(b.added));
        Ok(Series { buckets, total, kept_since })
    }
}

impl Engine {
    /// The windowed count: how much was added to `key` in the `window` before now, the total
    /// of its series over that one bucket (clears are not subtracted). `as_of` is `None`: it
    /// is not a checkpoint's count.
    pub async fn windowed_count(&self, key: &CounterKey, window: Duration) -> EngineResult<Count> {
        let _permit = self.admit()?;
        let config = self.durable_namespace(key).await?;
        let now = self.inner.clock.now();
        let range = SeriesRange::new(now.saturating_sub(window), now, window)?;
        // Only the total is answered: no checkpoint is read to mark buckets folded.
        let series = self.series_of(key, &config, range, Timestamp::MIN).await?;
        Ok(Count { value: series.total, counter_type: config.counter_type, as_of: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_micros(seconds * 1_000_000)
    }

    #[test]
    fn a_range_is_cut_into_whole_steps_and_refused_when_it_cannot_be() {
        let r = SeriesRange::new(at(0), at(150), Duration::from_secs(60)).expect("valid");
        assert_eq!(r.buckets(), 3, "the last bucket reaches past `to`");
        assert_eq!((r.index(at(0)), r.index(at(59)), r.index(at(60)), r.index(at(179))), (0, 0, 1, 2));
        assert_eq!(r.start(2), at(120));
        for (from, to, step) in [
            (at(10), at(10), Duration::from_secs(1)),
            (at(10), at(5), Duration::from_secs(1)),
            (at(0), at(1), Duration::from_micros(999)),
            (at(0), at(10_001), Duration::from_secs(1)),
        ] {
            let refused = SeriesRange::new(from, to, step).expect_err("refused");
            assert!(matches!(refused, EngineError::InvalidRange(_)), "{refused}");
        }
        assert!(SeriesRange::new(at(0), at(10_000), Duration::from_secs(1)).is_ok(), "exactly the limit");
        let whole_history = SeriesRange::new(Timestamp::MIN, Timestamp::MAX, Duration::from_secs(1));
        assert!(whole_history.is_err(), "far too many buckets, and no overflow computing it");
    }
}
