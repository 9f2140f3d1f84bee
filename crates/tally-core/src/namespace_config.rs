//! A namespace's configuration: its counter type, write window, rollup pacing and retention.
//!
//! Every default below says why it has its value. Durations are written the human way in
//! JSON and TOML (`"5s"`, `"7days"`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// How a namespace's counters count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterType {
    /// In-memory increments: fastest, not durable, not idempotent.
    BestEffort,
    /// Durable event log; reads return every acknowledged add on one instance (the embedded
    /// store), and the last checkpoint, seconds stale at most, on a store several instances share.
    Eventual,
    /// Like `Eventual`, but reads add the live tail of events after the checkpoint.
    Accurate,
}

impl CounterType {
    /// The type's name as written in config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BestEffort => "best_effort",
            Self::Eventual => "eventual",
            Self::Accurate => "accurate",
        }
    }

    /// Whether mutations of this type are written to the durable event log.
    pub fn is_durable(self) -> bool {
        !matches!(self, Self::BestEffort)
    }
}

impl fmt::Display for CounterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CounterType {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "best_effort" => Ok(Self::BestEffort),
            "eventual" => Ok(Self::Eventual),
            "accurate" => Ok(Self::Accurate),
            other => Err(ConfigError(format!(
                "unknown counter type {other:?}; expected best_effort, eventual or accurate"
            ))),
        }
    }
}

/// A configuration that breaks a rule; the message names the field, the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The settings of one namespace. Field names are the ones the API and config files use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceConfig {
    /// Counter type. Default `eventual`: durable and idempotent, the type most users want.
    pub counter_type: CounterType,
    /// How far in the past a mutation's `generation_time` may lie. Default 5 s, Netflix's
    /// production value: long enough for a client to retry a few times, short enough that
    /// rollups lag by seconds. Everything older is immutable and may be folded.
    #[serde(with = "humantime_serde")]
    pub accept_limit: Duration,
    /// How far ahead of the server's clock a `generation_time` may lie, and the extra margin
    /// rollups keep behind `now - accept_limit` for clocks of different instances and for
    /// writes still being committed. Default 1 s: well above NTP-synchronised drift.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// How long a rollup trigger waits so that triggers for the same counter coalesce into one
    /// rollup. Default 1 s (Netflix uses 10 s): a busy counter costs one rollup a second, and
    /// counts converge within `accept_limit + clock_skew + coalesce`, about 7 s.
    #[serde(with = "humantime_serde")]
    pub coalesce: Duration,
    /// How long events are kept. Default 7 days, as at Netflix: time to audit or recount.
    /// Events are never deleted before they are folded into a checkpoint.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How long a cached checkpoint is trusted before the store is read again. Default 60 s:
    /// the instance's own rollups refresh the cache sooner; the TTL bounds staleness when a
    /// checkpoint was written by another instance.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// For `best_effort` counters: how long a counter lives after its last write. Default
    /// none: it lives until cleared or until the server stops.
    #[serde(with = "humantime_serde")]
    pub best_effort_ttl: Option<Duration>,
    /// How long a client's idempotency token stays taken after its mutation's generation
    /// time: a retry with the same token inside it changes nothing, whatever generation time
    /// it carries (the same, a new one, or none). Default 10 minutes, longer than any client's
    /// retry loop; at least `accept_limit` and at most `retention`.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        Self {
            counter_type: CounterType::Eventual,
            accept_limit: Duration::from_secs(5),
            clock_skew: Duration::from_secs(1),
            coalesce: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            cache_ttl: Duration::from_secs(60),
            best_effort_ttl: None,
            idempotency_window: Duration::from_secs(600),
        }
    }
}

/// A partial configuration: the fields a create or update request names.
///
/// On create the other fields take their defaults; on update they keep their current values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfigPatch {
    /// See [`NamespaceConfig::counter_type`].
    pub counter_type: Option<CounterType>,
    /// See [`NamespaceConfig::accept_limit`].
    #[serde(default, with = "humantime_serde")]
    pub accept_limit: Option<Duration>,
    /// See [`NamespaceConfig::clock_skew`].
    #[serde(default, with = "humantime_serde")]
    pub clock_skew: Option<Duration>,
    /// See [`NamespaceConfig::coalesce`].
    #[serde(default, with = "humantime_serde")]
    pub coalesce: Option<Duration>,
    /// See [`NamespaceConfig::retention`].
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// See [`NamespaceConfig::cache_ttl`].
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Option<Duration>,
    /// See [`NamespaceConfig::best_effort_ttl`].
    #[serde(default, with = "humantime_serde")]
    pub best_effort_ttl: Option<Duration>,
    /// See [`NamespaceConfig::idempotency_window`].
    #[serde(default, with = "humantime_serde")]
    pub idempotency_window: Option<Duration>,
}

impl NamespaceConfigPatch {
    /// `base` with the named fields replaced.
    pub fn apply_to(&self, base: &NamespaceConfig) -> NamespaceConfig {
        NamespaceConfig {
            counter_type: self.counter_type.unwrap_or(base.counter_type),
            accept_limit: self.accept_limit.unwrap_or(base.accept_limit),
            clock_skew: self.clock_skew.unwrap_or(base.clock_skew),
            coalesce: self.coalesce.unwrap_or(base.coalesce),
            retention: self.retention.unwrap_or(base.retention),
            cache_ttl: self.cache_ttl.unwrap_or(base.cache_ttl),
            best_effort_ttl: self.best_effort_ttl.or(base.best_effort_ttl),
            // Unless the window is named, it follows the others into its bounds: a longer
            // accept_limit takes it up (a retry the write window accepts must never count
            // twice), a shorter retention down (a token is not kept longer than its event).
            idempotency_window: self.idempotency_window.unwrap_or_else(|| {
                let accept_limit = self.accept_limit.unwrap_or(base.accept_limit);
                let retention = self.retention.unwrap_or(base.retention);
                base.idempotency_window.max(accept_limit).min(retention)
            }),
        }
    }
}

/// Bounds that keep a configuration meaningful.
const MIN_WINDOW: Duration = Duration::from_millis(1);
const MAX_ACCEPT_LIMIT: Duration = Duration::from_secs(24 * 3600);
const MAX_COALESCE: Duration = Duration::from_secs(3600);

impl NamespaceConfig {
    /// Checks the rules that tie the fields together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, msg: String| if ok { Ok(()) } else { Err(ConfigError(msg)) };
        check(
            (MIN_WINDOW..=MAX_ACCEPT_LIMIT).contains(&self.accept_limit),
            format!("accept_limit {:?} must be between 1ms and 24h", self.accept_limit),
        )?;
        check(
            self.clock_skew >= MIN_WINDOW
                && self.clock_skew <= self.accept_limit.max(Duration::from_secs(60)),
            format!(
                "clock_skew {:?} must be at least 1ms and at most max(accept_limit, 60s)",
                self.clock_skew
            ),
        )?;
        check(
            (MIN_WINDOW..=MAX_COALESCE).contains(&self.coalesce),
            format!("coalesce {:?} must be between 1ms and 1h", self.coalesce),
        )?;
        check(
            self.retention > (self.accept_limit + self.clock_skew) * 2,
            format!(
                "retention {:?} must exceed twice accept_limit + clock_skew ({:?}) so events are folded before they expire",
                self.retention,
                (self.accept_limit + self.clock_skew) * 2
            ),
        )?;
        check(
            self.idempotency_window >= self.accept_limit && self.idempotency_window <= self.retention,
            format!(
                "idempotency_window {:?} must be at least accept_limit ({:?}) and at most retention ({:?})",
                self.idempotency_window, self.accept_limit, self.retention
            ),
        )?;
        check(self.cache_ttl >= MIN_WINDOW, format!("cache_ttl {:?} must be at least 1ms", self.cache_ttl))?;
        if let Some(ttl) = self.best_effort_ttl {
            check(ttl >= MIN_WINDOW, format!("best_effort_ttl {ttl:?} must be at least 1ms"))?;
        }
        Ok(())
    }

    /// How long a client's token stays taken: `idempotency_window`, and never less than the
    /// write window (a config stored before the setting existed may have a longer
    /// `accept_limit` than the default window).
    pub fn token_window(&self) -> Duration {
        self.idempotency_window.max(self.accept_limit)
    }

    /// The lag of the rollup window behind `now`: events older than this are immutable.
    pub fn immutable_after(&self) -> Duration {
        self.accept_limit + self.clock_skew
    }

    /// Whether the write window accepts a mutation generated at `generation_time` when the
    /// server's clock reads `now`.
    pub fn check_window(&self, generation_time: Timestamp, now: Timestamp) -> Result<(), WindowError> {
        let oldest = now.saturating_sub(self.accept_limit);
        let latest = now.saturating_add(self.clock_skew);
        if generation_time < oldest {
            Err(WindowError::TooOld { oldest, accept_limit: self.accept_limit })
        } else if generation_time > latest {
            Err(WindowError::TooNew { latest, clock_skew: self.clock_skew })
        } else {
            Ok(())
        }
    }

    /// The moment after which no mutation generated at `generation_time` may become visible:
    /// rollups fold up to `now - accept_limit - clock_skew`, and half the skew margin is left
    /// for the commit itself.
    pub fn commit_deadline(&self, generation_time: Timestamp) -> Timestamp {
        generation_time.saturating_add(self.accept_limit + self.clock_skew / 2)
    }
}

/// Why the write window refused a mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowError {
    /// Generated before `oldest`, the start of the window.
    TooOld {
        /// The oldest generation time the window accepted at that moment.
        oldest: Timestamp,
        /// The namespace's accept limit.
        accept_limit: Duration,
    },
    /// Generated after `latest`, further ahead than the allowed clock skew.
    TooNew {
        /// The latest generation time the window accepted at that moment.
        latest: Timestamp,
        /// The namespace's clock skew allowance.
        clock_skew: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = NamespaceConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!((c.counter_type, c.accept_limit), (CounterType::Eventual, Duration::from_secs(5)));
    }

    #[test]
    fn json_uses_human_durations_and_refuses_unknown_fields() {
        let c: NamespaceConfig =
            serde_json::from_str(r#"{"counter_type":"accurate","accept_limit":"2s","retention":"1h"}"#)
                .expect("valid");
        assert_eq!(c.counter_type, CounterType::Accurate);
        assert_eq!(c.accept_limit, Duration::from_secs(2));
        assert_eq!(c.retention, Duration::from_secs(3600));
        let err = serde_json::from_str::<NamespaceConfig>(r#"{"acept_limit":"2s"}"#).expect_err("typo");
        assert!(err.to_string().contains("unknown field `acept_limit`"), "{err}");
    }

    #[test]
    fn window_accepts_its_bounds_and_refuses_beyond_them() {
        let c = NamespaceConfig::default();
        let now = Timestamp::from_millis(100_000);
        assert_eq!(c.check_window(now.saturating_sub(c.accept_limit), now), Ok(()));
        assert_eq!(c.check_window(now.saturating_add(c.clock_skew), now), Ok(()));
        let too_old = now.saturating_sub(c.accept_limit + Duration::from_micros(1));
        assert!(matches!(c.check_window(too_old, now), Err(WindowError::TooOld { .. })));
        let too_new = now.saturating_add(c.clock_skew + Duration::from_micros(1));
        assert!(matches!(c.check_window(too_new, now), Err(WindowError::TooNew { .. })));
    }

    #[test]
    fn validation_names_field_and_value() {
        let c = NamespaceConfig { retention: Duration::from_secs(3), ..Default::default() };
        let err = c.validate().expect_err("too short");
        assert!(err.0.starts_with("retention 3s must exceed"), "{err}");
        let c = NamespaceConfig { accept_limit: Duration::ZERO, ..Default::default() };
        assert!(c.validate().expect_err("zero").0.starts_with("accept_limit 0ns"));
        let c = NamespaceConfig { idempotency_window: Duration::from_secs(1), ..Default::default() };
        assert!(c.validate().expect_err("short").0.starts_with("idempotency_window 1s must be at least"));
    }

    #[test]
    fn an_unnamed_idempotency_window_follows_accept_limit_and_retention() {
        let base = NamespaceConfig::default();
        let long_accept =
            NamespaceConfigPatch { accept_limit: Some(Duration::from_secs(3600)), ..Default::default() };
        assert_eq!(long_accept.apply_to(&base).idempotency_window, Duration::from_secs(3600));
        let short_retention =
            NamespaceConfigPatch { retention: Some(Duration::from_secs(60)), ..Default::default() };
        let c = short_retention.apply_to(&base);
        assert_eq!((c.idempotency_window, c.validate()), (Duration::from_secs(60), Ok(())));
        let named =
            NamespaceConfigPatch { idempotency_window: Some(Duration::from_secs(30)), ..Default::default() };
        assert_eq!(named.apply_to(&base).idempotency_window, Duration::from_secs(30));
    }
}

/// The stored form of a namespace's settings: both stores keep the serde JSON of
/// [`NamespaceConfig`], so renaming a field or changing how a duration is written would make
/// every stored namespace unreadable. These bytes are pinned.
#[cfg(test)]
mod stored_form {
    use super::*;

    const STORED: &str = r#"{"counter_type":"accurate","accept_limit":"5s","clock_skew":"1s","coalesce":"1s","retention":"7days","cache_ttl":"1m","best_effort_ttl":"30s","idempotency_window":"10m"}"#;

    fn pinned() -> NamespaceConfig {
        NamespaceConfig {
            counter_type: CounterType::Accurate,
            best_effort_ttl: Some(Duration::from_secs(30)),
            ..NamespaceConfig::default()
        }
    }

    #[test]
    fn namespace_settings_are_stored_as_these_bytes() {
        assert_eq!(serde_json::to_string(&pinned()).expect("encode"), STORED);
        assert_eq!(serde_json::from_str::<NamespaceConfig>(STORED).expect("decode"), pinned());
    }

    #[test]
    fn settings_stored_before_idempotency_window_existed_still_read() {
        let older = r#"{"counter_type":"eventual","accept_limit":"5s","clock_skew":"1s","coalesce":"1s","retention":"7days","cache_ttl":"1m","best_effort_ttl":null}"#;
        let config: NamespaceConfig = serde_json::from_str(older).expect("decode");
        assert_eq!(config, NamespaceConfig::default(), "the missing setting takes its default");
    }
}
