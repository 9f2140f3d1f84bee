//! `GetCountSeries` as every door asks for it: the counter, the range and the step, with
//! their defaults, checked once here.

use std::time::Duration;

use tally_core::{CounterKey, Timestamp};
use tally_engine::{Engine, Series, SeriesRange};

use crate::convert;
use crate::error::ApiError;

/// The range when the request names no start: the hour before its end.
pub const DEFAULT_SPAN: Duration = Duration::from_secs(3600);
/// The bucket when the request names none.
pub const DEFAULT_STEP: Duration = Duration::from_secs(60);

/// A checked `GetCountSeries` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRequest {
    /// The counter.
    pub key: CounterKey,
    /// The buckets.
    pub range: SeriesRange,
}

/// A request's range as the client wrote it; every part optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct AskedRange {
    /// Start; `None`: `span` before the end.
    pub from: Option<Timestamp>,
    /// End; `None`: `now`.
    pub to: Option<Timestamp>,
    /// How far back from the end, when there is no start (HTTP's `last`); `None`:
    /// [`DEFAULT_SPAN`].
    pub last: Option<Duration>,
    /// Bucket length; `None`: [`DEFAULT_STEP`].
    pub step: Option<Duration>,
}

impl SeriesRequest {
    /// Fills in the defaults and checks the range (see [`SeriesRange::new`]).
    pub fn parse(
        namespace: &str,
        counter: &str,
        asked: AskedRange,
        now: Timestamp,
    ) -> Result<Self, ApiError> {
        let key = convert::counter_key(namespace, counter)?;
        if asked.from.is_some() && asked.last.is_some() {
            return Err(ApiError::invalid("give from or last, not both"));
        }
        let to = asked.to.unwrap_or(now);
        let from = asked.from.unwrap_or_else(|| to.saturating_sub(asked.last.unwrap_or(DEFAULT_SPAN)));
        let range = SeriesRange::new(from, to, asked.step.unwrap_or(DEFAULT_STEP)).map_err(ApiError::from)?;
        Ok(Self { key, range })
    }

    /// Reads the series.
    pub async fn run(&self, engine: &Engine) -> Result<Series, ApiError> {
        Ok(engine.series(&self.key, self.range).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_last_hour_by_minutes_and_ranges_are_checked() {
        let now = Timestamp::from_micros(10_000 * 1_000_000);
        let r = SeriesRequest::parse("shop", "orders", AskedRange::default(), now).expect("valid");
        assert_eq!((r.range.buckets(), r.range.step()), (60, DEFAULT_STEP));
        let last = AskedRange { last: Some(Duration::from_secs(600)), ..AskedRange::default() };
        let day = SeriesRequest::parse("shop", "orders", last, now).expect("valid");
        assert_eq!(day.range.buckets(), 10);
        let both =
            AskedRange { from: Some(now), last: Some(Duration::from_secs(1)), ..AskedRange::default() };
        assert!(SeriesRequest::parse("shop", "orders", both, now).is_err());
        let fine = AskedRange { step: Some(Duration::from_micros(10)), ..AskedRange::default() };
        let refused = SeriesRequest::parse("shop", "orders", fine, now).expect_err("too fine");
        assert_eq!(refused.code, tally_core::ErrorCode::InvalidArgument);
        assert!(SeriesRequest::parse("no way", "orders", AskedRange::default(), now).is_err());
    }
}
