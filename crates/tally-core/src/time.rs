//! Wall-clock time as Tally sees it, and the [`Clock`] seam that makes it injectable.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a time was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The text is not an RFC 3339 time.
    #[error("{0}")]
    Malformed(String),
    /// A well-formed time outside the range of timestamps (years 1 to 9999, in UTC).
    #[error("{0:?} is outside the range of times this server represents")]
    OutOfRange(String),
}

/// A point in time: microseconds since the Unix epoch, UTC.
///
/// Microseconds are fine enough to order events from one client and coarse enough that an
/// `i64` spans ±292,000 years.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest representable time; the start of a counter that was never rolled up.
    pub const MIN: Self = Self(i64::MIN);
    /// The latest representable time.
    pub const MAX: Self = Self(i64::MAX);

    /// Wraps microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Wraps milliseconds since the Unix epoch, saturating at the ends of the range.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis.saturating_mul(1000))
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch, rounded down.
    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// Converts a system time; times outside the range saturate.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Self(i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m)),
        }
    }

    /// Parses an RFC 3339 time with any offset, such as `2024-10-05T14:48:00Z` or
    /// `2024-10-05T16:48:00.123456+02:00`. Digits below the microsecond are dropped.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeError> {
        text.parse::<jiff::Timestamp>().map(|t| Self(t.as_microsecond())).map_err(|e| {
            // A well-formed date and time that no timestamp reaches (9999-12-31T23:59:59Z with
            // an offset past the end of the range) is a time out of range, not a malformed one.
            let civil = text.trim_end_matches(['Z', 'z']);
            let civil = match civil.len().checked_sub(6).map(|at| civil.split_at(at)) {
                Some((head, offset)) if offset.starts_with(['+', '-']) && offset.as_bytes()[3] == b':' => {
                    head
                }
                _ => civil,
            };
            if civil.parse::<jiff::civil::DateTime>().is_ok() {
                TimeError::OutOfRange(text.to_owned())
            } else {
                TimeError::Malformed(format!(
                    "{text:?} is not an RFC 3339 time such as 2024-10-05T14:48:00Z: {e}"
                ))
            }
        })
    }

    /// This time plus a duration, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(duration_micros(d)))
    }

    /// This time minus a duration, saturating.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(duration_micros(d)))
    }

    /// The time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn duration_since(self, earlier: Self) -> Duration {
        let micros = self.0.saturating_sub(earlier.0);
        Duration::from_micros(u64::try_from(micros).unwrap_or(0))
    }
}

fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC where representable (years -9999 to 9999), the raw microseconds otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::from_microsecond(self.0) {
            Ok(t) => write!(f, "{t}"),
            Err(_) => write!(f, "{}us", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The source of wall-clock time for everything that decides windows, buckets and expiry.
///
/// Injected so that tests move time by hand instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The machine's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// A clock that moves only when told to. For tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.as_micros())))
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(duration_micros(d), Ordering::SeqCst);
    }

    /// Sets the clock; it may move backwards, as real clocks sometimes do.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.as_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_microseconds_and_offsets() {
        let t = Timestamp::parse_rfc3339("2024-10-05T14:48:00.123456Z").expect("valid");
        assert_eq!(t.as_micros(), 1_728_139_680_123_456);
        assert_eq!(t.to_string(), "2024-10-05T14:48:00.123456Z");
        let offset = Timestamp::parse_rfc3339("2024-10-05T16:48:00.123456+02:00").expect("valid");
        assert_eq!(offset, t);
        assert!(matches!(Timestamp::parse_rfc3339("yesterday"), Err(TimeError::Malformed(_))));
        assert!(matches!(Timestamp::parse_rfc3339("9999-12-31T23:59:59Z"), Err(TimeError::OutOfRange(_))));
        assert!(matches!(
            Timestamp::parse_rfc3339("9999-12-31T23:59:59-05:00"),
            Err(TimeError::OutOfRange(_))
        ));
    }

    #[test]
    fn extreme_timestamps_display_without_panicking() {
        assert_eq!(Timestamp::MIN.to_string(), format!("{}us", i64::MIN));
        assert_eq!(Timestamp::MAX.to_string(), format!("{}us", i64::MAX));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Timestamp::MAX.saturating_add(Duration::from_secs(1)), Timestamp::MAX);
        assert_eq!(Timestamp::MIN.saturating_sub(Duration::from_secs(1)), Timestamp::MIN);
        assert_eq!(Timestamp::from_micros(5).duration_since(Timestamp::from_micros(9)), Duration::ZERO);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_millis(1000));
        assert_eq!(clock.now(), Timestamp::from_millis(1000));
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now(), Timestamp::from_millis(1250));
    }
}
