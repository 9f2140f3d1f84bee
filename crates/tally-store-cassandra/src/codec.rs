//! How values are written in CQL columns: mutations as text, checkpoints as 16 bytes,
//! namespace settings as JSON.

use scylla::value::{CqlValue, Row};
use tally_core::{Checkpoint, EventKind, NamespaceConfig, Timestamp};
use tally_store::{CounterState, StoreResult};

use crate::driver;

pub(crate) fn applied(result: scylla::response::query_result::QueryResult) -> Result<bool, String> {
    let rows = result.into_rows_result().map_err(|e| e.to_string())?;
    let row: Row = rows.single_row().map_err(|e| e.to_string())?;
    Ok(matches!(row.columns.first(), Some(Some(CqlValue::Boolean(true)))))
}

/// The stored form of a mutation: `add:<delta>` or `clear`.
pub(crate) fn encode_mutation(kind: EventKind) -> String {
    match kind {
        EventKind::Add(delta) => format!("add:{delta}"),
        EventKind::Clear => "clear".to_owned(),
    }
}

pub(crate) fn decode_mutation(text: &str) -> Result<EventKind, String> {
    match text.strip_prefix("add:") {
        Some(delta) => delta.parse().map(EventKind::Add).map_err(|e| format!("mutation {text:?}: {e}")),
        None if text == "clear" => Ok(EventKind::Clear),
        None => Err(format!("unknown mutation {text:?}")),
    }
}

pub(crate) fn encode_checkpoint(cp: Checkpoint) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&cp.count.to_be_bytes());
    bytes.extend_from_slice(&cp.until.as_micros().to_be_bytes());
    bytes
}

pub(crate) fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, String> {
    let (count, until) = bytes.split_at_checked(8).ok_or("checkpoint shorter than 16 bytes")?;
    let count = <[u8; 8]>::try_from(count).map_err(|_| "checkpoint count is not 8 bytes")?;
    let until = <[u8; 8]>::try_from(until).map_err(|_| "checkpoint time is not 8 bytes")?;
    Ok(Checkpoint {
        count: i64::from_be_bytes(count),
        until: Timestamp::from_micros(i64::from_be_bytes(until)),
    })
}

pub(crate) fn state_of(last_write: Option<i64>, checkpoint: Option<&[u8]>) -> Result<CounterState, String> {
    Ok(CounterState {
        checkpoint: checkpoint.map(decode_checkpoint).transpose()?,
        last_write: last_write.map(Timestamp::from_micros),
    })
}

pub(crate) fn encode_config(config: &NamespaceConfig) -> StoreResult<String> {
    serde_json::to_string(config).map_err(|e| driver::corrupt("encoding namespace config", e))
}

pub(crate) fn decode_config(name: &str, json: &str) -> StoreResult<NamespaceConfig> {
    serde_json::from_str(json).map_err(|e| driver::corrupt(&format!("config of namespace {name}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_short_bytes_are_corrupt() {
        let cp = Checkpoint { count: -42, until: Timestamp::from_micros(1_764_000_000_000_000) };
        assert_eq!(decode_checkpoint(&encode_checkpoint(cp)), Ok(cp));
        assert!(decode_checkpoint(&[1, 2, 3]).is_err());
    }

    #[test]
    fn mutations_round_trip_and_unknown_ones_are_corrupt() {
        for kind in [EventKind::Add(5), EventKind::Add(i64::MIN), EventKind::Clear] {
            assert_eq!(decode_mutation(&encode_mutation(kind)), Ok(kind));
        }
        assert!(decode_mutation("add:x").is_err());
        assert!(decode_mutation("reset").is_err());
    }
}
