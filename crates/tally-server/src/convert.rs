//! Between wire values (protobuf and JSON) and domain values, validating on the way in.

use std::time::Duration;

use tally_core::{
    CounterKey, CounterName, CounterType, IdempotencyToken, Namespace, NamespaceConfig, NamespaceConfigPatch,
    Timestamp,
};
use tally_proto::time::BadTimestamp;
use tally_proto::v1 as pb;

use crate::error::ApiError;

/// A counter's key from its two names.
pub fn counter_key(namespace: &str, counter_name: &str) -> Result<CounterKey, ApiError> {
    Ok(CounterKey::new(Namespace::new(namespace)?, CounterName::new(counter_name)?))
}

/// A token from its parts. Without a generation time the mutation is generated `now` (the
/// server's clock): a retry of the token is still recognised by the token alone.
pub fn token(
    token: &str,
    generation_time: Option<Timestamp>,
    now: Timestamp,
) -> Result<IdempotencyToken, ApiError> {
    Ok(IdempotencyToken::new(token, generation_time.unwrap_or(now))?)
}

/// A protobuf timestamp as a domain time.
pub fn timestamp_from_proto(t: &prost_types::Timestamp) -> Result<Timestamp, ApiError> {
    tally_proto::time::from_proto(t).map_err(|e| match e {
        BadTimestamp::Nanos(nanos) => ApiError::invalid(format!("timestamp nanos {nanos} is outside 0..1e9")),
        BadTimestamp::OutOfRange(seconds) => {
            ApiError::new(tally_core::ErrorCode::OutOfRange, format!("timestamp {seconds}s is out of range"))
        }
    })
}

/// A domain time as a protobuf timestamp.
pub use tally_proto::time::to_proto as timestamp_to_proto;

/// An optional protobuf token as a domain token (generated `now` when it has no time).
pub fn token_from_proto(
    t: Option<&pb::IdempotencyToken>,
    now: Timestamp,
) -> Result<Option<IdempotencyToken>, ApiError> {
    t.map(|t| token(&t.token, t.generation_time.as_ref().map(timestamp_from_proto).transpose()?, now))
        .transpose()
}

/// A domain token as a protobuf token.
pub fn token_to_proto(t: &IdempotencyToken) -> pb::IdempotencyToken {
    pb::IdempotencyToken {
        token: t.token().to_owned(),
        generation_time: Some(timestamp_to_proto(t.generation_time())),
    }
}

/// A counter type as its protobuf enum value.
pub fn counter_type_to_proto(t: CounterType) -> pb::CounterType {
    match t {
        CounterType::BestEffort => pb::CounterType::BestEffort,
        CounterType::Eventual => pb::CounterType::Eventual,
        CounterType::Accurate => pb::CounterType::Accurate,
    }
}

/// A protobuf counter type value; `None` for `COUNTER_TYPE_UNSPECIFIED`.
pub fn counter_type_from_proto(value: i32) -> Result<Option<CounterType>, ApiError> {
    match pb::CounterType::try_from(value) {
        Ok(pb::CounterType::Unspecified) => Ok(None),
        Ok(pb::CounterType::BestEffort) => Ok(Some(CounterType::BestEffort)),
        Ok(pb::CounterType::Eventual) => Ok(Some(CounterType::Eventual)),
        Ok(pb::CounterType::Accurate) => Ok(Some(CounterType::Accurate)),
        Err(_) => Err(ApiError::invalid(format!("counter_type {value} is not a known counter type"))),
    }
}

/// An optional protobuf duration, refused when negative or malformed.
pub fn duration_from_proto(
    field: &str,
    d: Option<&prost_types::Duration>,
) -> Result<Option<Duration>, ApiError> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || !(0..1_000_000_000).contains(&d.nanos) {
        return Err(ApiError::invalid(format!("{field} must be a non-negative duration")));
    }
    Ok(Some(Duration::new(d.seconds as u64, d.nanos as u32)))
}

/// A duration as a protobuf duration.
pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// The fields a protobuf config names, as a patch.
pub fn patch_from_proto(c: Option<&pb::NamespaceConfig>) -> Result<NamespaceConfigPatch, ApiError> {
    let Some(c) = c else { return Ok(NamespaceConfigPatch::default()) };
    Ok(NamespaceConfigPatch {
        counter_type: counter_type_from_proto(c.counter_type)?,
        accept_limit: duration_from_proto("accept_limit", c.accept_limit.as_ref())?,
        clock_skew: duration_from_proto("clock_skew", c.clock_skew.as_ref())?,
        coalesce: duration_from_proto("coalesce", c.coalesce.as_ref())?,
        retention: duration_from_proto("retention", c.retention.as_ref())?,
        cache_ttl: duration_from_proto("cache_ttl", c.cache_ttl.as_ref())?,
        best_effort_ttl: duration_from_proto("best_effort_ttl", c.best_effort_ttl.as_ref())?,
        idempotency_window: duration_from_proto("idempotency_window", c.idempotency_window.as_ref())?,
    })
}

/// A protobuf config as a whole configuration: the fields it names, defaults for the rest.
pub fn config_from_proto(c: Option<&pb::NamespaceConfig>) -> Result<NamespaceConfig, ApiError> {
    Ok(patch_from_proto(c)?.apply_to(&NamespaceConfig::default()))
}

/// A full configuration as protobuf, every field named.
pub fn config_to_proto(c: &NamespaceConfig) -> pb::NamespaceConfig {
    pb::NamespaceConfig {
        counter_type: counter_type_to_proto(c.counter_type) as i32,
        accept_limit: Some(duration_to_proto(c.accept_limit)),
        clock_skew: Some(duration_to_proto(c.clock_skew)),
        coalesce: Some(duration_to_proto(c.coalesce)),
        retention: Some(duration_to_proto(c.retention)),
        cache_ttl: Some(duration_to_proto(c.cache_ttl)),
        best_effort_ttl: c.best_effort_ttl.map(duration_to_proto),
        idempotency_window: Some(duration_to_proto(c.idempotency_window)),
    }
}

/// A namespace with its full configuration as protobuf.
pub fn namespace_to_proto(name: &Namespace, c: &NamespaceConfig) -> pb::Namespace {
    pb::Namespace { name: name.to_string(), config: Some(config_to_proto(c)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_protobuf_including_before_the_epoch() {
        for micros in [0, 1, -1, 1_728_139_680_123_456, -1_500_000] {
            let t = Timestamp::from_micros(micros);
            assert_eq!(timestamp_from_proto(&timestamp_to_proto(t)), Ok(t));
        }
        let bad = prost_types::Timestamp { seconds: 1, nanos: -1 };
        assert_eq!(
            timestamp_from_proto(&bad).map_err(|e| e.code),
            Err(tally_core::ErrorCode::InvalidArgument)
        );
        let huge = prost_types::Timestamp { seconds: i64::MAX, nanos: 0 };
        assert!(timestamp_from_proto(&huge).is_err());
    }

    #[test]
    fn a_token_without_generation_time_is_generated_now() {
        let now = Timestamp::from_millis(1_764_000_000_000);
        assert_eq!(token("abc", None, now).expect("token").generation_time(), now);
        let given = Timestamp::from_millis(5);
        assert_eq!(token("abc", Some(given), now).expect("token").generation_time(), given);
        assert!(token("", None, now).is_err());
    }
}
