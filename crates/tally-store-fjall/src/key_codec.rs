//! Byte layout of keys and values. Format version 3.
//!
//! - counter prefix: `ns_len: u8 | ns | counter_len: u16 BE | counter`. Lengths make
//!   `("ab","c")` and `("a","bc")` distinct, and a counter's prefix never prefixes another's.
//! - event key: `counter prefix | time: u64 BE (sign bit flipped) | token`; the flipped sign
//!   makes byte order equal time order, so a prefix range scan yields `(time, token)` order.
//! - event value: `0 | delta: i64 LE` for an add, `1` for a clear.
//! - `last_write` value: `time: i64 LE`; checkpoint value: `count: i64 LE | until: i64 LE`.
//! - token key: `counter prefix | token`; token value:
//!   `generation_time: i64 LE | until: i64 LE | event value`. The `tokens` keyspace came after
//!   the first stores of this format; a store without it simply has no token taken.
//! - journal key (format 2): `sequence: u64 BE`; journal value: the events of one group
//!   commit, each `key_len: u16 BE | event key | value_len: u8 | event value`, in the order
//!   they were appended. Format 2 is format 1 plus the `journal` keyspace: a format 1 store
//!   opens as format 2 with an empty journal, and a build of format 1 refuses a format 2 store
//!   (it would not see the journal's events).
//! - format 3: an event of the journal that took a client's token has the high bit of
//!   `value_len` set and `until: i64 LE` after its value; its token goes into the `tokens`
//!   keyspace (key and value as above, derived from the event's) when the event moves into
//!   `events`. A format 2 store opens as format 3 (its journal has no such events: their
//!   tokens were written at once), and a build of format 2 refuses a format 3 store (it would
//!   not see the journal's tokens).

use tally_core::{Checkpoint, CounterKey, CounterName, EventKind, Namespace, Timestamp};
use tally_store::{StoreError, Stored};

/// The on-disk format this code writes and reads.
pub const FORMAT_VERSION: u32 = 3;
/// The older formats this code opens, and upgrades by recording [`FORMAT_VERSION`].
pub const UPGRADES_FROM: &[u32] = &[1, 2];

/// The bit of a journal event's `value_len` that says an `until` follows its value.
const JOURNAL_TOKEN_BIT: u8 = 0x80;

const ADD: u8 = 0;
const CLEAR: u8 = 1;

/// The prefix shared by every key of one namespace.
pub fn namespace_prefix(ns: &Namespace) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + ns.as_str().len());
    push_namespace_prefix(&mut out, ns);
    out
}

fn push_namespace_prefix(out: &mut Vec<u8>, ns: &Namespace) {
    let bytes = ns.as_str().as_bytes();
    // Namespace names are at most 64 bytes, validated by `Namespace::new`.
    out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(bytes);
}

/// The prefix shared by every key of one counter; also its state key.
pub fn counter_prefix(key: &CounterKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(counter_prefix_size(key) + 8 + 40);
    push_counter_prefix(&mut out, key);
    out
}

fn counter_prefix_size(key: &CounterKey) -> usize {
    1 + key.namespace.as_str().len() + 2 + key.counter.as_str().len()
}

fn push_counter_prefix(out: &mut Vec<u8>, key: &CounterKey) {
    let name = key.counter.as_str().as_bytes();
    push_namespace_prefix(out, &key.namespace);
    // Counter names are at most 256 bytes, validated by `CounterName::new`.
    out.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(name);
}

/// How many bytes [`push_event_key`] appends.
pub fn event_key_size(key: &CounterKey, token: &str) -> usize {
    counter_prefix_size(key) + 8 + token.len()
}

/// Appends the key of one event (as [`event_key`] makes it) to `out`; returns where its
/// counter prefix ends in `out`.
pub fn push_event_key(out: &mut Vec<u8>, key: &CounterKey, time: Timestamp, token: &str) -> usize {
    push_counter_prefix(out, key);
    let prefix_end = out.len();
    out.extend_from_slice(&time_bytes(time));
    out.extend_from_slice(token.as_bytes());
    prefix_end
}

fn time_bytes(t: Timestamp) -> [u8; 8] {
    ((t.as_micros() as u64) ^ (1 << 63)).to_be_bytes()
}

/// The key of the first possible event of `key` at or after `t`.
pub fn event_bound(key: &CounterKey, t: Timestamp) -> Vec<u8> {
    let mut out = counter_prefix(key);
    out.extend_from_slice(&time_bytes(t));
    out
}

/// The key of one event.
pub fn event_key(key: &CounterKey, time: Timestamp, token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(event_key_size(key, token));
    push_event_key(&mut out, key, time, token);
    out
}

/// The generation time and token of an event key, from the bytes after its counter prefix.
pub fn decode_event_key_suffix(bytes: &[u8]) -> Result<(Timestamp, &str), StoreError> {
    let (time, token) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt(format!("event key suffix {bytes:02x?} is too short").into()))?;
    let time = Timestamp::from_micros((u64::from_be_bytes(*time) ^ (1 << 63)) as i64);
    let token = std::str::from_utf8(token)
        .map_err(|e| StoreError::Corrupt(tally_core::Failure::caused_by("an event key's token", e)))?;
    Ok((time, token))
}

/// A value of at most `N` bytes encoded in place: the fixed-width values written for every
/// event and every client token need no allocation of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inline<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Inline<N> {
    fn new() -> Self {
        Self { bytes: [0; N], len: 0 }
    }

    fn push(&mut self, bytes: &[u8]) {
        debug_assert!(self.len + bytes.len() <= N, "an inline value is sized for its widest encoding");
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The encoded bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> std::ops::Deref for Inline<N> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// The widest event value: an add's tag and delta.
const EVENT_VALUE_BYTES: usize = 9;

/// Encodes what an event does.
pub fn event_value(kind: EventKind) -> Inline<EVENT_VALUE_BYTES> {
    let mut out = Inline::new();
    match kind {
        EventKind::Add(delta) => {
            out.push(&[ADD]);
            out.push(&delta.to_le_bytes());
        }
        EventKind::Clear => out.push(&[CLEAR]),
    }
    out
}

/// Decodes what an event does.
pub fn decode_event_value(bytes: &[u8]) -> Result<EventKind, StoreError> {
    match bytes {
        [ADD, rest @ ..] => Ok(EventKind::Add(i64::from_le_bytes(fixed(rest, "event delta")?))),
        [CLEAR] => Ok(EventKind::Clear),
        _ => {
            Err(StoreError::Corrupt(format!("event value {bytes:02x?} is neither an add nor a clear").into()))
        }
    }
}

/// The key of a client's token of a counter.
pub fn token_key(key: &CounterKey, token: &str) -> Vec<u8> {
    let mut out = counter_prefix(key);
    out.extend_from_slice(token.as_bytes());
    out
}

/// A taken token: the mutation it holds, and until when (by the store's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenToken {
    /// The mutation.
    pub stored: Stored,
    /// When the token becomes free again.
    pub until: Timestamp,
}

/// Encodes a taken token.
pub fn token_value(taken: &TakenToken) -> Inline<{ 16 + EVENT_VALUE_BYTES }> {
    let mut out = Inline::new();
    out.push(&taken.stored.generation_time.as_micros().to_le_bytes());
    out.push(&taken.until.as_micros().to_le_bytes());
    out.push(&event_value(taken.stored.kind));
    out
}

/// Decodes a taken token.
pub fn decode_token_value(bytes: &[u8]) -> Result<TakenToken, StoreError> {
    let (time, rest) = bytes.split_at_checked(8).ok_or_else(|| short_token(bytes))?;
    let (until, kind) = rest.split_at_checked(8).ok_or_else(|| short_token(bytes))?;
    let micros = |b: &[u8]| fixed(b, "token time").map(|b| Timestamp::from_micros(i64::from_le_bytes(b)));
    Ok(TakenToken {
        stored: Stored { generation_time: micros(time)?, kind: decode_event_value(kind)? },
        until: micros(until)?,
    })
}

fn short_token(bytes: &[u8]) -> StoreError {
    StoreError::Corrupt(format!("token value {bytes:02x?} is too short").into())
}

/// The width of an encoded time ([`time_value`]).
pub const TIME_VALUE_BYTES: usize = 8;
/// The width of an encoded checkpoint ([`checkpoint_value`]).
pub const CHECKPOINT_VALUE_BYTES: usize = 16;

/// Encodes a time (for `last_write`).
pub fn time_value(t: Timestamp) -> [u8; TIME_VALUE_BYTES] {
    t.as_micros().to_le_bytes()
}

/// Decodes a time (for `last_write`).
pub fn decode_time_value(bytes: &[u8]) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_micros(i64::from_le_bytes(fixed(bytes, "last_write")?)))
}

/// Encodes a checkpoint.
pub fn checkpoint_value(cp: Checkpoint) -> [u8; CHECKPOINT_VALUE_BYTES] {
    let mut out = [0; CHECKPOINT_VALUE_BYTES];
    out[..8].copy_from_slice(&cp.count.to_le_bytes());
    out[8..].copy_from_slice(&cp.until.as_micros().to_le_bytes());
    out
}

/// Decodes a checkpoint.
pub fn decode_checkpoint_value(bytes: &[u8]) -> Result<Checkpoint, StoreError> {
    let all: [u8; 16] = fixed(bytes, "checkpoint")?;
    let (count, until) = all.split_at(8);
    Ok(Checkpoint {
        count: i64::from_le_bytes(fixed(count, "checkpoint count")?),
        until: Timestamp::from_micros(i64::from_le_bytes(fixed(until, "checkpoint time")?)),
    })
}

/// Decodes a counter prefix (a state key) back into its counter.
pub fn decode_counter_prefix(bytes: &[u8]) -> Result<CounterKey, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("counter key {bytes:02x?} is malformed").into());
    let (&ns_len, rest) = bytes.split_first().ok_or_else(corrupt)?;
    let (ns, rest) = rest.split_at_checked(usize::from(ns_len)).ok_or_else(corrupt)?;
    let (len, name) = rest.split_at_checked(2).ok_or_else(corrupt)?;
    let len: [u8; 2] = len.try_into().map_err(|_| corrupt())?;
    if name.len() != usize::from(u16::from_be_bytes(len)) {
        return Err(corrupt());
    }
    let ns = std::str::from_utf8(ns).ok().and_then(|s| Namespace::new(s).ok()).ok_or_else(corrupt)?;
    let name = std::str::from_utf8(name).ok().and_then(|s| CounterName::new(s).ok()).ok_or_else(corrupt)?;
    Ok(CounterKey::new(ns, name))
}

/// The key of the journal entry with this sequence number.
pub fn journal_key(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

/// Decodes a journal key.
pub fn decode_journal_key(bytes: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(fixed(bytes, "journal key")?))
}

/// Appends one event to a journal value being built; `until`: when the client's token it
/// took becomes free again, if it took one.
pub fn push_journal_event(out: &mut Vec<u8>, key: &[u8], value: &[u8], until: Option<Timestamp>) {
    // Event keys are at most 1 + 64 + 2 + 256 + 8 + the token's bytes (validated), and
    // values are 1 or 9 bytes: both fit their length fields, with the token bit to spare.
    out.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(key);
    let value_len = u8::try_from(value.len()).unwrap_or(u8::MAX);
    debug_assert!(value_len < JOURNAL_TOKEN_BIT, "an event value leaves the token bit free");
    out.push(if until.is_some() { value_len | JOURNAL_TOKEN_BIT } else { value_len });
    out.extend_from_slice(value);
    if let Some(until) = until {
        out.extend_from_slice(&until.as_micros().to_le_bytes());
    }
}

/// One event of a journal value: its key and value in the `events` keyspace, and until when
/// it holds its client's token, if it took one.
pub type JournalEvent<'a> = (&'a [u8], &'a [u8], Option<Timestamp>);

/// The events of a journal value, in the order they were appended.
pub fn decode_journal_value(bytes: &[u8]) -> Result<Vec<JournalEvent<'_>>, StoreError> {
    let corrupt =
        || StoreError::Corrupt(format!("journal value of {} bytes is malformed", bytes.len()).into());
    let mut events = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, after) = rest.split_first_chunk::<2>().ok_or_else(corrupt)?;
        let (key, after) =
            after.split_at_checked(usize::from(u16::from_be_bytes(*len))).ok_or_else(corrupt)?;
        let (&value_len, after) = after.split_first().ok_or_else(corrupt)?;
        let value_bytes = usize::from(value_len & !JOURNAL_TOKEN_BIT);
        let (value, mut after) = after.split_at_checked(value_bytes).ok_or_else(corrupt)?;
        decode_event_value(value)?;
        let until = match value_len & JOURNAL_TOKEN_BIT != 0 {
            true => {
                let (until, tail) = after.split_first_chunk::<8>().ok_or_else(corrupt)?;
                after = tail;
                Some(Timestamp::from_micros(i64::from_le_bytes(*until)))
            }
            false => None,
        };
        events.push((key, value, until));
        rest = after;
    }
    Ok(events)
}

/// The key in the `tokens` keyspace of the token that the event under `event_key` took:
/// the event key without its time. `prefix_len`: where its counter prefix ends.
pub fn token_key_of_event(event_key: &[u8], prefix_len: usize) -> Vec<u8> {
    let (prefix, rest) = event_key.split_at(prefix_len.min(event_key.len()));
    [prefix, rest.get(8..).unwrap_or_default()].concat()
}

/// The key in the `events` keyspace of the event at `time` that took the token under
/// `token_key`: the inverse of [`token_key_of_event`].
pub fn event_key_of_token(token_key: &[u8], prefix_len: usize, time: Timestamp) -> Vec<u8> {
    let (prefix, token) = token_key.split_at(prefix_len.min(token_key.len()));
    [prefix, &time_bytes(time), token].concat()
}

/// How long the counter prefix is at the start of `key` (an event or token key).
pub fn counter_prefix_len(key: &[u8]) -> Result<usize, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("key {key:02x?} has no counter prefix").into());
    let ns_len = usize::from(*key.first().ok_or_else(corrupt)?);
    let at = 1 + ns_len;
    let len: [u8; 2] = key.get(at..at + 2).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
    let end = at + 2 + usize::from(u16::from_be_bytes(len));
    if end > key.len() {
        return Err(corrupt());
    }
    Ok(end)
}

/// The smallest key greater than every key starting with `prefix`, if there is one.
pub fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < u8::MAX {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, expected {N}", bytes.len()).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, c: &str) -> CounterKey {
        CounterKey::new(Namespace::new(ns).expect("ns"), CounterName::new(c).expect("c"))
    }

    #[test]
    fn event_keys_sort_by_time_then_token_across_the_sign_boundary() {
        let k = key("n", "c");
        let times = [i64::MIN, -5, -1, 0, 1, 5, i64::MAX];
        let keys: Vec<_> = times.iter().map(|&t| event_key(&k, Timestamp::from_micros(t), "a")).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let t = Timestamp::from_micros(7);
        assert!(event_key(&k, t, "a") < event_key(&k, t, "b"));
        assert!(event_bound(&k, t) <= event_key(&k, t, "a"));
    }

    #[test]
    fn counter_prefix_round_trips_and_rejects_garbage() {
        let k = key("ns", "video:1");
        assert_eq!(decode_counter_prefix(&counter_prefix(&k)), Ok(k));
        assert!(matches!(decode_counter_prefix(&[9, 1]), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn values_round_trip() {
        for kind in [EventKind::Add(-42), EventKind::Add(i64::MAX), EventKind::Clear] {
            assert_eq!(decode_event_value(&event_value(kind)), Ok(kind));
        }
        let cp = Checkpoint { count: -3, until: Timestamp::from_micros(99) };
        assert_eq!(decode_checkpoint_value(&checkpoint_value(cp)), Ok(cp));
        assert!(decode_event_value(&[7]).is_err());
    }

    #[test]
    fn token_values_are_pinned_bytes() {
        let taken = TakenToken {
            stored: Stored { generation_time: Timestamp::from_micros(1), kind: EventKind::Add(-2) },
            until: Timestamp::from_micros(256),
        };
        let bytes = token_value(&taken).to_vec();
        let expected = [
            [1, 0, 0, 0, 0, 0, 0, 0].as_slice(),
            &[0, 1, 0, 0, 0, 0, 0, 0],
            &[0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(decode_token_value(&bytes), Ok(taken));
        assert!(matches!(decode_token_value(&bytes[..12]), Err(StoreError::Corrupt(_))));
        assert_eq!(token_key(&key("n", "c"), "t"), [1, b'n', 0, 1, b'c', b't']);
    }

    #[test]
    fn journal_values_round_trip_and_reject_garbage() {
        let k = key("n", "c");
        let (a, b) =
            (event_key(&k, Timestamp::from_micros(1), "a"), event_key(&k, Timestamp::from_micros(2), "b"));
        let mut value = Vec::new();
        let until = Timestamp::from_micros(-2);
        push_journal_event(&mut value, &a, &event_value(EventKind::Add(3)), None);
        push_journal_event(&mut value, &b, &event_value(EventKind::Clear), Some(until));
        let decoded = decode_journal_value(&value).expect("decodes");
        assert_eq!(
            decoded,
            [
                (a.as_slice(), event_value(EventKind::Add(3)).as_slice(), None),
                (b.as_slice(), &[1][..], Some(until))
            ]
        );
        // The token bit, then the time after the value.
        assert_eq!(value[value.len() - 10..], [0x81, 1, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(token_key_of_event(&b, counter_prefix(&k).len()), token_key(&k, "b"));
        let time = Timestamp::from_micros(2);
        assert_eq!(event_key_of_token(&token_key(&k, "b"), counter_prefix(&k).len(), time), b);
        assert!(matches!(decode_journal_value(&value[..value.len() - 1]), Err(StoreError::Corrupt(_))));
        assert_eq!(journal_key(258), [0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(decode_journal_key(&journal_key(258)), Ok(258));
        assert_eq!(counter_prefix_len(&a), Ok(counter_prefix(&k).len()));
        assert!(counter_prefix_len(&[5, 1]).is_err());
    }

    #[test]
    fn upper_bound_skips_trailing_ff() {
        assert_eq!(prefix_upper_bound(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_upper_bound(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_upper_bound(&[0xff]), None);
    }
}
