//! The per-counter state the writer committed lately, kept so that it need not read it back.
//!
//! Every move of a counter's events reads its `last_write` (to keep the maximum) and every
//! checkpoint write reads the stored checkpoint (so that it never moves backwards). The writer
//! is the only thread that changes these values, so what it committed is what the database
//! holds, and remembering it saves a table look-up per counter written again: with a million
//! counters those look-ups were a third of the writer's time (BENCHMARKS.md, "The recent-state
//! round").

use foldhash::{HashMap, HashMapExt};

use crate::key_codec::{CHECKPOINT_VALUE_BYTES, TIME_VALUE_BYTES};
use crate::presence::StateKind;
use crate::taken_tokens::TakenTokens;

/// The widest value remembered: a checkpoint's.
const VALUE_BYTES: usize = CHECKPOINT_VALUE_BYTES;

/// A key's 128-bit hash, as two words so that an entry is 8-byte aligned (32 bytes, not 48).
type KeyHash = (u64, u64);
/// A value's bytes, inline; its width is its kind's.
type Value = [u8; VALUE_BYTES];

/// What the writer remembers of the state it committed or read, and of the tokens it took.
///
/// A value is found by a 128-bit hash of its key and held inline, 32 bytes an entry instead
/// of two heap buffers, so that the state of a million counters fits in about 70 MB. Two keys
/// with one hash would share an entry; among 2^21 keys the odds of any such pair are about
/// one in 10^26. Bounded: each kind keeps two generations of at most `capacity / 2` entries;
/// when the young one is full it becomes the old one and the old one is dropped, so the
/// counters written most recently stay remembered. Forgotten after a failed commit and when
/// a namespace is deleted.
pub(crate) struct RecentState {
    kinds: [Generations; 2],
    /// Which tokens the latest commits took.
    pub tokens: TakenTokens,
}

impl RecentState {
    /// Remembers up to `capacity` values of each kind of state and the takings of `tokens` tokens.
    pub fn new(capacity: usize, tokens: usize) -> Self {
        let half = (capacity / 2).max(1);
        Self { kinds: [Generations::new(half), Generations::new(half)], tokens: TakenTokens::new(tokens) }
    }

    /// Where a kind's values are, and how wide they are (`key_codec::time_value`,
    /// `key_codec::checkpoint_value`).
    fn slot(kind: StateKind) -> Option<(usize, usize)> {
        match kind {
            StateKind::LastWrite => Some((0, TIME_VALUE_BYTES)),
            StateKind::Checkpoint => Some((1, CHECKPOINT_VALUE_BYTES)),
            StateKind::Token => None,
        }
    }

    /// The committed value of `key`, if remembered.
    pub fn get(&mut self, kind: StateKind, key: &[u8]) -> Option<Vec<u8>> {
        let (i, width) = Self::slot(kind)?;
        self.kinds[i].get(hash(key)).map(|v| v[..width].to_vec())
    }

    /// Remembers that `key` holds `value` in the database; a value not of its kind's width is
    /// not remembered (the writer then reads it back, as for any value it forgot).
    pub fn insert(&mut self, kind: StateKind, key: &[u8], value: &[u8]) {
        let Some((i, width)) = Self::slot(kind) else { return };
        debug_assert_eq!(value.len(), width, "a {kind:?} value of another width");
        if value.len() == width {
            let mut inline = [0; VALUE_BYTES];
            inline[..width].copy_from_slice(value);
            self.kinds[i].insert(hash(key), inline);
        }
    }

    /// Forgets every value and token taking.
    pub fn clear(&mut self) {
        self.kinds.iter_mut().for_each(Generations::clear);
        self.tokens.forget_all();
    }
}

fn hash(key: &[u8]) -> KeyHash {
    let h = xxhash_rust::xxh3::xxh3_128(key);
    ((h >> 64) as u64, h as u64)
}

/// Two maps: entries go into `young`; when it holds `half` of them it replaces `old`.
struct Generations {
    young: HashMap<KeyHash, Value>,
    old: HashMap<KeyHash, Value>,
    half: usize,
}

impl Generations {
    fn new(half: usize) -> Self {
        Self { young: HashMap::new(), old: HashMap::new(), half }
    }

    /// A value found in the old generation moves to the young one, so that a key in use is
    /// not dropped with the old generation.
    fn get(&mut self, hash: KeyHash) -> Option<Value> {
        if let Some(&value) = self.young.get(&hash) {
            return Some(value);
        }
        let value = self.old.remove(&hash)?;
        self.insert(hash, value);
        Some(value)
    }

    fn insert(&mut self, hash: KeyHash, value: Value) {
        if self.young.len() >= self.half && !self.young.contains_key(&hash) {
            self.old = std::mem::replace(&mut self.young, HashMap::with_capacity(self.half));
        }
        self.young.insert(hash, value);
        debug_assert!(self.young.len() <= self.half, "a generation holds at most half the capacity");
    }

    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_found_by_its_key_with_its_own_length() {
        let mut recent = RecentState::new(8, 8);
        recent.insert(StateKind::LastWrite, b"counter-a", &[1; 8]);
        recent.insert(StateKind::Checkpoint, b"counter-a", &[2; 16]);
        assert_eq!(recent.get(StateKind::LastWrite, b"counter-a"), Some(vec![1u8; 8]));
        assert_eq!(recent.get(StateKind::Checkpoint, b"counter-a"), Some(vec![2u8; 16]));
        assert_eq!(recent.get(StateKind::LastWrite, b"counter-b"), None);
        assert_eq!(recent.get(StateKind::Token, b"counter-a"), None, "tokens are not remembered here");
    }

    #[test]
    fn the_keys_used_lately_outlive_a_generation_and_older_ones_are_dropped() {
        // Two generations of two entries each.
        let mut recent = RecentState::new(4, 8);
        let kind = StateKind::LastWrite;
        for key in [b"a", b"b"] {
            recent.insert(kind, key, &[1; 8]);
        }
        // The young generation is full: "c" starts a new one, "a" and "b" become old.
        recent.insert(kind, b"c", &[3; 8]);
        // Reading "a" brings it back into the young generation.
        assert_eq!(recent.get(kind, b"a"), Some(vec![1u8; 8]));
        // "d" finds the young generation full again ("c", "a"), so it replaces the old one ("b").
        recent.insert(kind, b"d", &[4; 8]);
        assert_eq!(recent.get(kind, b"b"), None, "unused for two generations");
        for (key, value) in [(b"a", 1u8), (b"c", 3), (b"d", 4)] {
            assert_eq!(recent.get(kind, key), Some(vec![value; 8]));
        }
    }

    #[test]
    fn clear_forgets_every_value() {
        let mut recent = RecentState::new(8, 8);
        recent.insert(StateKind::Checkpoint, b"k", &[7; 16]);
        recent.clear();
        assert_eq!(recent.get(StateKind::Checkpoint, b"k"), None);
    }
}
