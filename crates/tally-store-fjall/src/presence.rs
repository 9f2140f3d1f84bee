//! `Presence`: which counters may have a `last_write` and which a checkpoint, as one Bloom
//! filter over both; and `TokenPresence`: which clients' tokens may be taken.
//!
//! Most reads of a new counter's state find nothing, and each such miss still walks the
//! memtable's skiplist and the tables' filters. With many distinct counters (a million keys,
//! each written once) those misses were a sixth of the server's CPU: the writer looked up the
//! `last_write` and checkpoint of every new counter, and every rollup read its state. The
//! filter answers "certainly absent" for those in a few hashes.
//!
//! It only ever says "maybe" wrongly, never "absent": every state key is added before the
//! batch that writes it commits, and at open every stored one is added. Nothing is removed (a
//! deleted namespace leaves false "maybe"s, which cost only the read the filter would have
//! saved). Past its sizing the false-positive rate grows, and so does the work, but never the
//! answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Probes per key.
const PROBES: u64 = 4;
/// The smallest filter: 2²⁴ bits (2 MiB), about 0.2 % false positives at a million counters.
const MIN_BITS: u64 = 1 << 24;
/// Bits per counter found at open (two kinds of state each), so a store that already holds many
/// counters keeps its rate.
const BITS_PER_COUNTER: u64 = 32;

/// Bits per token: about 0.2 % false positives while it holds its sizing.
const BITS_PER_TOKEN: u64 = 16;
/// The largest token filter, 2²⁸ bits (32 MiB): past about 16 million tokens it answers
/// "maybe" more and more often, which costs the reads it would have saved, never an answer.
const MAX_TOKEN_BITS: u64 = 1 << 28;

/// Which state a key has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateKind {
    LastWrite = 1,
    Checkpoint = 2,
    Token = 3,
}

/// Bits per block: one cache line. All the probes of a key fall in one block, so an insert or
/// a look-up touches one line of memory instead of one per probe: with a filter of tens of
/// megabytes each probe was a cache miss, and inserting a taken token's four bits was the
/// writer's largest cost of noting it.
const BLOCK_BITS: u64 = 512;
/// Bits of a probe's place inside its block.
const BLOCK_SHIFT: u32 = BLOCK_BITS.trailing_zeros();

/// One block of the filter, aligned to a cache line.
#[repr(align(64))]
struct Block([AtomicU64; (BLOCK_BITS / 64) as usize]);

pub(crate) struct Presence {
    blocks: Box<[Block]>,
    /// `blocks.len() - 1`; the count is a power of two.
    mask: u64,
}

impl Presence {
    /// A filter sized for `counters` already stored (and room for as many again).
    pub(crate) fn with_capacity(counters: u64) -> Self {
        Self::with_bits(counters.saturating_mul(BITS_PER_COUNTER * 2))
    }

    fn with_bits(bits: u64) -> Self {
        let blocks = bits.max(MIN_BITS).next_power_of_two() / BLOCK_BITS;
        Self {
            blocks: (0..blocks).map(|_| Block(std::array::from_fn(|_| AtomicU64::new(0)))).collect(),
            mask: blocks - 1,
        }
    }

    /// The key's block, and its probes' bits inside it (each from its own bits of the key's hash).
    fn probes(&self, kind: StateKind, key: &[u8]) -> (&Block, impl Iterator<Item = u64>) {
        let hash = xxhash_rust::xxh3::xxh3_128_with_seed(key, kind as u64);
        let block = &self.blocks[(hash as u64 & self.mask) as usize];
        let within = (hash >> 64) as u64;
        const _: () = assert!(PROBES * BLOCK_SHIFT as u64 <= 64, "the probes fit the hash's high word");
        let bits = (0..PROBES).map(move |i| (within >> (i * u64::from(BLOCK_SHIFT))) & (BLOCK_BITS - 1));
        (block, bits)
    }

    /// Records that `key` has state of this kind.
    pub(crate) fn insert(&self, kind: StateKind, key: &[u8]) {
        let (block, bits) = self.probes(kind, key);
        for bit in bits {
            block.0[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
    }

    /// `false` only if `key` was never inserted with this kind.
    pub(crate) fn may_contain(&self, kind: StateKind, key: &[u8]) -> bool {
        let (block, mut bits) = self.probes(kind, key);
        bits.all(|bit| block.0[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0)
    }
}

/// Which clients' tokens may be taken. Every look-up of a token that was never taken (nearly
/// every add with a client token) walked the `tokens` memtable and each table's filter: about
/// 8 % of the server's CPU per gRPC add with a token. This answers "certainly not taken" in
/// a few hashes.
///
/// Like [`Presence`] it never says "absent" wrongly: the writer adds every token before the
/// batch that takes it commits, and a scan in the background adds every token stored before
/// the process started. Until that scan is done it answers "maybe" for every token, so the
/// store reads as before.
pub(crate) struct TokenPresence {
    filter: Presence,
    loaded: AtomicBool,
}

impl TokenPresence {
    /// A filter sized for `tokens` already stored (and room for as many again), up to its
    /// largest size.
    pub(crate) fn with_capacity(tokens: u64) -> Self {
        let bits = tokens.saturating_mul(BITS_PER_TOKEN * 2).min(MAX_TOKEN_BITS);
        Self { filter: Presence::with_bits(bits), loaded: AtomicBool::new(false) }
    }

    /// Records a token key, taken now or found stored.
    pub(crate) fn insert(&self, token_key: &[u8]) {
        self.filter.insert(StateKind::Token, token_key);
    }

    /// Every token stored before the process started has been inserted.
    pub(crate) fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// `false` only if the token under `token_key` was certainly never taken.
    pub(crate) fn may_be_taken(&self, token_key: &[u8]) -> bool {
        !self.is_loaded() || self.filter.may_contain(StateKind::Token, token_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_keys_are_always_found_and_others_rarely() {
        let filter = Presence::with_capacity(0);
        let keys: Vec<Vec<u8>> = (0..100_000u32).map(|i| format!("ns\0c{i}\0").into_bytes()).collect();
        keys.iter().for_each(|k| filter.insert(StateKind::LastWrite, k));
        assert!(keys.iter().all(|k| filter.may_contain(StateKind::LastWrite, k)), "no false negative");
        let strangers = (0..100_000u32)
            .filter(|i| filter.may_contain(StateKind::LastWrite, format!("ns\0x{i}\0").as_bytes()))
            .count();
        assert!(strangers < 100, "{strangers} false positives in 100,000");
        let other_kind = keys.iter().filter(|k| filter.may_contain(StateKind::Checkpoint, k)).count();
        assert!(other_kind < 100, "{other_kind} keys seem to have the kind never inserted");
    }

    #[test]
    fn a_filter_filled_to_its_sizing_answers_maybe_for_few_strangers() {
        // 16 bits per key, as a token filter holds at its sizing: about 0.2 % for a Bloom
        // filter of four probes; blocks of one cache line cost a little more, and probes that
        // shared bits or blocks that were few would cost far more.
        let filter = Presence::with_bits(1 << 24);
        (0..1u32 << 20).for_each(|i| filter.insert(StateKind::Token, &i.to_le_bytes()));
        assert!((0..1u32 << 20).all(|i| filter.may_contain(StateKind::Token, &i.to_le_bytes())));
        let strangers = (1u32 << 20..(1 << 20) + 100_000)
            .filter(|i| filter.may_contain(StateKind::Token, &i.to_le_bytes()))
            .count();
        assert!(strangers < 500, "{strangers} false positives in 100,000");
    }

    #[test]
    fn a_token_filter_answers_maybe_until_loaded_then_only_for_inserted_tokens() {
        let tokens = TokenPresence::with_capacity(0);
        assert!(tokens.may_be_taken(b"never"), "before the scan, every token may be taken");
        tokens.insert(b"taken");
        tokens.mark_loaded();
        assert!(tokens.may_be_taken(b"taken"));
        let strangers = (0..100_000u32).filter(|i| tokens.may_be_taken(format!("t{i}").as_bytes())).count();
        assert!(strangers < 100, "{strangers} false positives in 100,000");
    }
}
