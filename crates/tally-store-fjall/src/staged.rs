//! Staged events: acknowledged and durable in the `journal` keyspace, not yet in `events`.
//!
//! Putting each event into the `events` keyspace as it arrives costs the writer thread one
//! insert into a skiplist of about a million entries per add, at a random place: with many
//! counters nearly every step of it is a cache miss, and it was the largest single cost of an
//! add. So a group commit writes all its events as one entry of the `journal` keyspace (one
//! insert per commit, always at the end) and keeps them here, by counter, where readers find
//! them. Once enough have gathered, the writer freezes them and a thread of its own prepares
//! the move ([`prepare`]): it puts their counters in key order and writes the events, and the
//! clients' tokens they took, into new tables of the `events` and `tokens` keyspaces by
//! fjall's ingestion, with no memtable insert and no second journal write per event. Moving
//! them through fjall's write path instead (sorted inserts in slices between commits) was
//! half of the writer's time under random-key adds, and its memtables' flushes most of
//! fjall's workers' (BENCHMARKS.md, "Moves by ingestion"). Then the writer writes each
//! counter's `last_write`, a slice between two commits so that appends never wait behind a
//! whole move, and the last slice deletes the journal entries: `last_write` is written once
//! per counter per move instead of once per commit.
//!
//! A counter's events are kept in key order as they come (nearly always at the end); its
//! counters are put in order when a move is prepared. Sorting a quarter of a million events
//! on the writer held every append up for about 200 ms; gathering them in a B-tree instead
//! cost the writer as much as the larger move saved.
//!
//! A move loses nothing to a crash: an ingestion's tables are synced, and registered with a
//! synced version, before the writer deletes the journal entries, so after a crash either
//! the journal still holds the events (and they are staged and moved again: the same keys,
//! written again with the same values) or the tables hold them. A move whose tables cannot be
//! written closes the database as a failed write does; at open, and after the database is
//! reopened, whatever the journal holds is staged again.
//!
//! Readers take the staged events of a counter (gathering and moving) before they scan the
//! keyspace, and merge the two. A move forgets its events only after its last slice is
//! committed, so an event is always in at least one of them; during a move it is in both,
//! and the merge keeps one copy.

use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use fjall::Keyspace;
use foldhash::HashMap;
use tally_core::Timestamp;
use tally_store::{StoreError, StoreResult, Stored};

use crate::handles::unavailable;
use crate::key_codec::{self as codec, TakenToken};

/// An event as the writer stages it: its key in the `events` keyspace and its value there,
/// in one allocation (a quarter of a million of them wait in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StagedEvent {
    /// The key, then the value.
    bytes: Box<[u8]>,
    key_len: u32,
    /// Where its counter's prefix ends in the key.
    prefix_len: u32,
    /// Its generation time (also in the key).
    pub time: Timestamp,
    /// When the client's token it took becomes free again, if it took one: the token is
    /// staged with it, and moves into the `tokens` keyspace with it.
    pub until: Option<Timestamp>,
}

impl StagedEvent {
    /// The event stored under `key` with `value`; `prefix_len`: where its counter's prefix
    /// ends in `key`; `until`: see the field.
    pub fn new(
        key: &[u8],
        value: &[u8],
        prefix_len: usize,
        time: Timestamp,
        until: Option<Timestamp>,
    ) -> Self {
        debug_assert!(prefix_len <= key.len(), "the prefix is part of the key");
        Self::from_bytes([key, value].concat(), key.len(), prefix_len, time, until)
    }

    /// `event` as staged: its key and value made in place (one allocation).
    pub fn of(event: &tally_core::Event, until: Option<Timestamp>) -> Self {
        let (time, token) = (event.token.generation_time(), event.token.token());
        let value = codec::event_value(event.kind);
        let mut bytes = Vec::with_capacity(codec::event_key_size(&event.key, token) + value.len());
        let prefix_len = codec::push_event_key(&mut bytes, &event.key, time, token);
        let key_len = bytes.len();
        debug_assert_eq!(codec::counter_prefix_len(&bytes), Ok(prefix_len));
        bytes.extend_from_slice(&value);
        Self::from_bytes(bytes, key_len, prefix_len, time, until)
    }

    /// `bytes`: the key (its first `key_len` bytes), then the value.
    fn from_bytes(
        bytes: Vec<u8>,
        key_len: usize,
        prefix_len: usize,
        time: Timestamp,
        until: Option<Timestamp>,
    ) -> Self {
        // Keys are bounded by the lengths of names and tokens, far below 4 GiB.
        let key_len = u32::try_from(key_len).unwrap_or(u32::MAX);
        let prefix_len = u32::try_from(prefix_len).unwrap_or(u32::MAX);
        Self { bytes: bytes.into_boxed_slice(), key_len, prefix_len, time, until }
    }

    /// The event stored under `key` with `value`, as the journal gives it back.
    fn decode(key: &[u8], value: &[u8], until: Option<Timestamp>) -> StoreResult<Self> {
        let prefix_len = codec::counter_prefix_len(key)?;
        let (time, _) = codec::decode_event_key_suffix(&key[prefix_len..])?;
        Ok(Self::new(key, value, prefix_len, time, until))
    }

    /// Its key in the `events` keyspace.
    pub fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    /// Its value there.
    pub fn value(&self) -> &[u8] {
        &self.bytes[self.key_len as usize..]
    }

    /// Its counter's state key.
    pub fn counter(&self) -> &[u8] {
        &self.bytes[..self.prefix_len as usize]
    }

    /// The client's token it took, if any: its key and value in the `tokens` keyspace.
    pub fn token(&self) -> Option<(Vec<u8>, TakenToken)> {
        let taken = self.taken()?;
        Some((codec::token_key_of_event(self.key(), self.prefix_len as usize), taken))
    }

    /// What the `tokens` keyspace holds for the client's token it took, if it took one.
    fn taken(&self) -> Option<TakenToken> {
        let until = self.until?;
        // The value was checked when the event was made or read back from the journal.
        let kind = codec::decode_event_value(self.value()).ok()?;
        Some(TakenToken { stored: Stored { generation_time: self.time, kind }, until })
    }

    /// The [`token_id`] of its token's key, hashed from its own key without making that one.
    fn token_id(&self) -> TokenId {
        let (prefix, rest) = self.key().split_at(self.prefix_len as usize);
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        hasher.update(prefix);
        hasher.update(rest.get(8..).unwrap_or_default());
        split_hash(hasher.digest128())
    }
}

/// Below this many events a move is prepared on the writer when its first slice needs it:
/// a small move (the pending scan's, once a minute when idle) costs a few milliseconds there,
/// and the bound on what is staged holds with no thread in between.
const PREPARE_AT_ONCE_BELOW: usize = 4_096;

/// Staged events by counter prefix, each counter's in key order.
type ByCounter = indexmap::IndexMap<Vec<u8>, Vec<StagedEvent>, foldhash::fast::RandomState>;

/// A move's counters in key order, as their places in its [`ByCounter`] (which keeps the
/// order it was filled in): a move's thread and its slices go through its counters in key
/// order by place, with no look-up (and no key read) per counter.
type Sorted = Vec<usize>;

/// The keyspaces a move writes its events and their tokens into.
#[derive(Clone)]
pub(crate) struct Tables {
    pub events: Keyspace,
    pub tokens: Keyspace,
}

/// What preparing a move did: its counters in key order, and the clients' tokens its events
/// took (the newest taking of each, by [`TokenId`], hashed on the preparing thread), now in
/// the `tokens` keyspace.
struct Prepared {
    order: Sorted,
    tokens: Vec<(TokenId, TakenToken)>,
}

/// Where the preparation of a move stands.
enum Preparation {
    /// A thread of its own is preparing it; `None`: none is (a small move, no thread could
    /// start, or the last attempt failed), so the next slice prepares it on the writer.
    Preparing(Option<JoinHandle<StoreResult<Prepared>>>),
    /// Its events and tokens are in their keyspaces; its counters in key order.
    Done(Sorted),
}

impl Default for Preparation {
    fn default() -> Self {
        Preparation::Done(Sorted::new())
    }
}

/// Where a move stands: the next event to move is the `event`th of the `counter`th counter
/// in key order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Position {
    counter: usize,
    event: usize,
}

/// Events of a move under way: frozen when it began.
#[derive(Default)]
struct Moving {
    by_counter: Arc<ByCounter>,
    /// How many events `by_counter` holds.
    events: usize,
    preparation: Preparation,
    /// The first event whose counter's `last_write` no slice has written yet. Every event
    /// stays here until the move ends; readers keep one copy.
    next: Position,
    /// The journal entries holding them, deleted with the last slice.
    journal_entries: Vec<u64>,
}

/// Where the next slice of a move begins (`None`: the move is done).
#[derive(Debug)]
pub(crate) struct SliceEnd {
    next: Option<Position>,
}

#[derive(Default)]
struct Inner {
    /// Events gathering for the next move.
    by_counter: ByCounter,
    gathered: usize,
    /// The journal entries holding them.
    journal_entries: Vec<u64>,
    moving: Moving,
    next_sequence: u64,
    /// The clients' tokens that staged events took and no prepared move has put into the
    /// `tokens` keyspace yet: the newest taking of each.
    tokens: HashMap<TokenId, TakenToken>,
}

/// A token key as the index of staged tokens holds it: a 128-bit hash of the key, so that an
/// entry needs no allocation (half a million may be staged). A hit is confirmed against the
/// counter's staged events, so a collision (odds of about one in 10^26 among a million
/// tokens) could never make a free token look taken.
type TokenId = (u64, u64);

fn token_id(token_key: &[u8]) -> TokenId {
    split_hash(xxhash_rust::xxh3::xxh3_128(token_key))
}

fn split_hash(h: u128) -> TokenId {
    ((h >> 64) as u64, h as u64)
}

impl Inner {
    fn add(&mut self, sequence: u64, events: Vec<StagedEvent>) {
        self.next_sequence = self.next_sequence.max(sequence + 1);
        self.journal_entries.push(sequence);
        self.gathered += events.len();
        for event in events {
            if let Some(taken) = event.taken() {
                let id = event.token_id();
                debug_assert_eq!(event.token().map(|(key, _)| token_id(&key)), Some(id));
                self.tokens.insert(id, taken);
            }
            match self.by_counter.get_mut(event.counter()) {
                // Generation times mostly grow from one commit to the next: nearly always the
                // end, found with one comparison (a busy counter holds up to a whole move). A
                // counter's keys sort by generation time first, so a later time decides it
                // without reading the last event's key (a cache miss among many counters).
                Some(staged)
                    if staged
                        .last()
                        .is_none_or(|last| last.time < event.time || last.key() <= event.key()) =>
                {
                    debug_assert!(staged.last().is_none_or(|last| last.key() <= event.key()));
                    staged.push(event)
                }
                Some(staged) => {
                    let at = staged.partition_point(|e| e.key() <= event.key());
                    staged.insert(at, event);
                }
                None => {
                    let counter = event.counter().to_vec();
                    self.by_counter.insert(counter, vec![event]);
                }
            }
        }
    }

    /// Whether the counter with state key `counter` has the staged event under `key`.
    fn holds(&self, counter: &[u8], key: &[u8]) -> bool {
        let holds = |by: &ByCounter| {
            by.get(counter).is_some_and(|events| events.binary_search_by(|e| e.key().cmp(key)).is_ok())
        };
        holds(&self.by_counter) || holds(&self.moving.by_counter)
    }

    /// Every staged event (gathering or moving) of the counter with state key `counter`, in
    /// no order.
    fn of_counter<'a>(&'a self, counter: &[u8]) -> impl Iterator<Item = &'a StagedEvent> + use<'a> {
        let of = |by: &'a ByCounter| by.get(counter).map_or(&[][..], Vec::as_slice);
        of(&self.by_counter).iter().chain(of(&self.moving.by_counter))
    }
}

/// `by_counter`'s counters in key order.
///
/// Each key is read once, for the eight bytes after the start every key shares (a namespace's
/// prefix, say), and the sort compares those inline: comparing keys themselves read two of
/// them per comparison, each a cache miss among a move's 100,000 counters, and that was a
/// third of a move's thread. Keys whose eight bytes tie are compared whole.
fn sorted_counters(by_counter: &ByCounter) -> Sorted {
    let key = |place: usize| by_counter.get_index(place).map_or(&[][..], |(counter, _)| counter.as_slice());
    let first = key(0);
    let shared = by_counter.keys().fold(first.len(), |shared, k| shared.min(common_prefix_len(first, k)));
    let mut order: Vec<(u64, usize)> =
        by_counter.keys().enumerate().map(|(place, k)| (window_after(k, shared), place)).collect();
    order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| key(a.1).cmp(key(b.1))));
    order.into_iter().map(|(_, place)| place).collect()
}

/// How many bytes `a` and `b` share at their start.
fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The eight bytes of `key` from `from` on, zero-padded, as a big-endian number: for keys that
/// share their first `from` bytes, a smaller number means a smaller key (a padded byte ties
/// with a real zero byte, so equal numbers say nothing).
fn window_after(key: &[u8], from: usize) -> u64 {
    let rest = key.get(from..).unwrap_or_default();
    let mut window = [0u8; 8];
    let n = rest.len().min(8);
    window[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(window)
}

/// The events of the counter at `place` in `by_counter`.
fn run_at(by_counter: &ByCounter, place: usize) -> &[StagedEvent] {
    by_counter.get_index(place).map_or(&[][..], |(_, events)| events.as_slice())
}

/// The staged events, shared by the writer (which alone adds and removes them) and readers.
#[derive(Default)]
pub(crate) struct Staged {
    inner: RwLock<Inner>,
}

impl Staged {
    // A panic while holding the lock leaves whole entries behind: every change below is
    // complete before anything that can panic.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many events are staged, gathering or moving.
    pub fn len(&self) -> usize {
        let inner = self.read();
        inner.gathered + inner.moving.events
    }

    /// How many events are gathering for the next move.
    pub fn gathered(&self) -> usize {
        self.read().gathered
    }

    /// Whether a move is under way.
    pub fn is_moving(&self) -> bool {
        self.read().moving.events > 0
    }

    /// The oldest journal entry whose events are staged, if any.
    pub fn oldest_entry(&self) -> Option<u64> {
        let inner = self.read();
        inner.moving.journal_entries.first().or(inner.journal_entries.first()).copied()
    }

    /// The client's token under `token_key` as a staged event took it, if one did and it has
    /// not moved into the `tokens` keyspace yet.
    pub fn token(&self, token_key: &[u8]) -> Option<TakenToken> {
        let inner = self.read();
        let taken = *inner.tokens.get(&token_id(token_key))?;
        let prefix_len = codec::counter_prefix_len(token_key).ok()?;
        let event = codec::event_key_of_token(token_key, prefix_len, taken.stored.generation_time);
        inner.holds(&token_key[..prefix_len], &event).then_some(taken)
    }

    /// The keys of every staged token.
    pub fn token_keys(&self) -> Vec<Vec<u8>> {
        let inner = self.read();
        let staged = inner.by_counter.values().chain(inner.moving.by_counter.values()).flatten();
        staged.filter_map(StagedEvent::token).map(|(key, _)| key).collect()
    }

    /// The sequence number for the next journal entry.
    pub fn next_sequence(&self) -> u64 {
        self.read().next_sequence
    }

    /// Takes in the events of journal entry `sequence`, just committed.
    pub fn add(&self, sequence: u64, events: Vec<StagedEvent>) {
        let mut inner = self.write();
        debug_assert!(sequence >= inner.next_sequence, "journal entries are numbered in commit order");
        inner.add(sequence, events);
    }

    /// Stages again what `journal` holds, replacing what was staged (and any move under
    /// way): at open, and after the database is reopened from what reached its journal.
    /// Returns how many events it staged.
    pub fn load(&self, journal: &Keyspace) -> StoreResult<usize> {
        let mut loaded = Inner { next_sequence: self.next_sequence(), ..Inner::default() };
        // In key order, which is commit order.
        for guard in journal.iter() {
            let (key, value) = guard.into_inner().map_err(unavailable)?;
            let events = codec::decode_journal_value(&value)?
                .into_iter()
                .map(|(key, value, until)| StagedEvent::decode(key, value, until))
                .collect::<StoreResult<Vec<_>>>()?;
            loaded.add(codec::decode_journal_key(&key)?, events);
        }
        let staged = loaded.gathered;
        *self.write() = loaded;
        Ok(staged)
    }

    /// The staged events of the counter with state key `counter` whose keys lie between
    /// `start` and `end`, as `(key, value)` in key order.
    pub fn range(&self, counter: &[u8], start: Bound<&[u8]>, end: Bound<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let inner = self.read();
        let mut found: Vec<_> = inner
            .of_counter(counter)
            .filter(|e| RangeBounds::<[u8]>::contains(&(start, end), e.key()))
            .map(|e| (e.key().to_vec(), e.value().to_vec()))
            .collect();
        drop(inner);
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// The greatest generation time among the staged events of the counter with state key
    /// `counter`.
    pub fn newest(&self, counter: &[u8]) -> Option<Timestamp> {
        self.read().of_counter(counter).map(|e| e.time).max()
    }

    /// Whether the counter with state key `counter` has a staged event with a key before
    /// `end`.
    pub fn holds_before(&self, counter: &[u8], end: &[u8]) -> bool {
        self.read().of_counter(counter).any(|e| e.key() < end)
    }

    /// Begins a move of everything gathered into `into`, unless one is under way: the events
    /// are frozen as they are, a thread prepares them (see [`prepare`]; a small move is
    /// prepared by its first slice), and new commits gather for the next move.
    pub fn begin_move(&self, into: &Tables) {
        let mut inner = self.write();
        if inner.moving.events > 0 || inner.gathered == 0 {
            return;
        }
        let by_counter = Arc::new(std::mem::take(&mut inner.by_counter));
        // The next move's counters are likely as many: staging them grows no table (each
        // growth re-read every key staged so far, a cache miss each among many counters).
        inner.by_counter.reserve(by_counter.len());
        let events = std::mem::take(&mut inner.gathered);
        let thread = (events >= PREPARE_AT_ONCE_BELOW).then(|| {
            let (frozen, into) = (by_counter.clone(), into.clone());
            let thread = std::thread::Builder::new().name("tally-stage-move".into());
            thread.spawn(move || prepare(&frozen, events, &into)).ok()
        });
        let preparation = Preparation::Preparing(thread.flatten());
        let journal_entries = std::mem::take(&mut inner.journal_entries);
        inner.moving = Moving { by_counter, events, preparation, next: Position::default(), journal_entries };
    }

    /// Whether the move under way (if any) is prepared, or will be by the next slice without
    /// waiting for a thread.
    pub fn move_is_prepared(&self) -> bool {
        match &self.read().moving.preparation {
            Preparation::Preparing(Some(thread)) => thread.is_finished(),
            Preparation::Preparing(None) | Preparation::Done(_) => true,
        }
    }

    /// Prepares the move under way into `into`, or waits for its thread to, and forgets the
    /// tokens it put into the `tokens` keyspace (each unless a newer event took it again).
    /// If that failed, the next slice tries again.
    fn await_prepared(&self, into: &Tables) -> StoreResult<()> {
        let thread = match &mut self.write().moving.preparation {
            Preparation::Done(_) => return Ok(()),
            Preparation::Preparing(thread) => thread.take(),
        };
        // Only the writer changes what is staged, so the move is still the same one here.
        let prepared = match thread {
            Some(thread) => thread.join().unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the thread moving staged events into their tables panicked".into(),
                ))
            }),
            None => {
                let (frozen, events) = {
                    let inner = self.read();
                    (inner.moving.by_counter.clone(), inner.moving.events)
                };
                prepare(&frozen, events, into)
            }
        };
        let Prepared { order, tokens } = prepared?;
        let mut inner = self.write();
        debug_assert_eq!(order.len(), inner.moving.by_counter.len(), "every counter of the move is in order");
        for (id, taken) in &tokens {
            if inner.tokens.get(id).is_some_and(|t| t == taken) {
                inner.tokens.remove(id);
            }
        }
        inner.moving.preparation = Preparation::Done(order);
        metrics::counter!("tally_store_staged_events_moved_total").increment(inner.moving.events as u64);
        Ok(())
    }

    /// Runs `f` on the next at most `limit` events of the move under way, prepared into
    /// `into` first if need be, in key order, as runs of one counter's events each, and, if
    /// they are its last, on the journal entries to delete with them. Readers are not held up
    /// meanwhile: only the writer changes what is staged. Returns `f`'s answer and where the
    /// slice ended, for [`Staged::slice_moved`], or why the move could not be prepared.
    pub fn with_next_slice<R>(
        &self,
        limit: usize,
        into: &Tables,
        f: impl FnOnce(&[&[StagedEvent]], Option<&[u64]>) -> R,
    ) -> StoreResult<(R, SliceEnd)> {
        self.await_prepared(into)?;
        let inner = self.read();
        let moving = &inner.moving;
        let order = match &moving.preparation {
            Preparation::Done(order) => order.as_slice(),
            _ => unreachable!("await_prepared prepared it above, and only the writer moves"),
        };
        let mut runs: Vec<&[StagedEvent]> = Vec::new();
        let (mut at, mut moved) = (moving.next, 0);
        while at.counter < order.len() && moved < limit {
            let events = run_at(&moving.by_counter, order[at.counter]);
            let take = (events.len() - at.event).min(limit - moved);
            runs.push(&events[at.event..at.event + take]);
            moved += take;
            at = match at.event + take == events.len() {
                true => Position { counter: at.counter + 1, event: 0 },
                false => Position { counter: at.counter, event: at.event + take },
            };
        }
        let next = (at.counter < order.len()).then_some(at);
        let last = next.is_none().then_some(moving.journal_entries.as_slice());
        Ok((f(&runs, last), SliceEnd { next }))
    }

    /// Notes that a slice of the move is committed; after the last slice, the move ends and
    /// its events are forgotten.
    pub fn slice_moved(&self, end: SliceEnd) {
        let mut inner = self.write();
        match end.next {
            Some(next) => inner.moving.next = next,
            None => inner.moving = Moving::default(),
        }
    }
}

/// Prepares a move: puts its counters in key order and writes its events into new tables of
/// `into.events`, and the tokens they took (the newest taking of each) into new tables of
/// `into.tokens`, by fjall's ingestion: synced and in place when this returns, with no
/// memtable insert and no second journal write per event. Of events with one key (a token
/// taken again, after its window, with the same generation time), the last one staged is kept,
/// as a later write would replace an earlier one. `staged`: how many events `by_counter` holds.
fn prepare(by_counter: &ByCounter, staged: usize, into: &Tables) -> StoreResult<Prepared> {
    debug_assert_eq!(staged, by_counter.values().map(Vec::len).sum::<usize>(), "the move's count");
    let started = std::time::Instant::now();
    let order = sorted_counters(by_counter);
    let mut events = into.events.start_ingestion().map_err(unavailable)?;
    let mut tokens = into.tokens.start_ingestion().map_err(unavailable)?;
    // Grown once, at the first token, to hold one per event: grown by doubling, copying a
    // quarter of a million entries to fresh pages was a sixth of this thread's time under
    // random-key batches with tokens.
    let mut taken_all = Vec::new();
    let mut taken = Vec::new();
    for &place in &order {
        let run = run_at(by_counter, place);
        debug_assert!(run.is_sorted_by(|a, b| a.key() <= b.key()), "a counter's events are in key order");
        // Of events with one key, staged in order, the last.
        for event in run.chunk_by(|a, b| a.key() == b.key()).filter_map(<[_]>::last) {
            events.write(event.key(), event.value()).map_err(unavailable)?;
        }
        taken.clear();
        taken.extend(run.iter().filter_map(StagedEvent::token));
        newest_taking_of_each(&mut taken);
        if taken_all.capacity() == 0 && !taken.is_empty() {
            taken_all.reserve(staged);
        }
        for (key, t) in &taken {
            tokens.write(key.as_slice(), codec::token_value(t).as_slice()).map_err(unavailable)?;
            taken_all.push((token_id(key), *t));
        }
    }
    events.finish().map_err(unavailable)?;
    tokens.finish().map_err(unavailable)?;
    metrics::histogram!("tally_store_staged_move_prepare_seconds").record(started.elapsed().as_secs_f64());
    Ok(Prepared { order, tokens: taken_all })
}

/// Puts a counter's tokens in key order, keeping only the newest taking of each: a token
/// taken again after its window is in a run twice, and a key is written once.
fn newest_taking_of_each(tokens: &mut Vec<(Vec<u8>, TakenToken)>) {
    tokens.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then(b.1.stored.generation_time.cmp(&a.1.stored.generation_time))
    });
    // Keeps the first of each key: the newest.
    tokens.dedup_by(|later, first| later.0 == first.0);
}

/// Merges a counter's staged events (in key order) into a scan of the `events` keyspace (in
/// key order), so that each event comes once and in order.
pub(crate) struct Merge {
    staged: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, Vec<u8>)>>,
}

impl Merge {
    pub fn new(staged: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        Self { staged: staged.into_iter().peekable() }
    }

    /// The staged events that come before the stored event `key`; drops a staged copy of
    /// `key` itself (one a move has just committed).
    pub fn before(&mut self, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(next) = self.staged.next_if(|(k, _)| k.as_slice() <= key) {
            if next.0 != key {
                out.push(next);
            }
        }
        out
    }

    /// The staged events after the last stored one.
    pub fn rest(self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
        self.staged
    }
}

/// A journal entry's value for `events`.
pub(crate) fn journal_value(events: &[StagedEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.iter().map(|e| e.bytes.len() + 11).sum());
    for event in events {
        codec::push_journal_event(&mut out, event.key(), event.value(), event.until);
    }
    out
}

#[cfg(test)]
mod tests {
    use tally_core::{CounterKey, EventKind};

    use super::*;

    #[test]
    fn counters_are_put_in_key_order_whatever_bytes_their_keys_share_or_tie_on() {
        let mut keys: Vec<Vec<u8>> = vec![
            b"\x05bench".to_vec(),
            b"\x05bench\x00".to_vec(),
            b"\x05bench\x00\x00".to_vec(),
            b"\x05bench\x00\x01a".to_vec(),
            b"\x05bench12345678a".to_vec(),
            b"\x05bench12345678".to_vec(),
            b"\x05bench12345678\x00".to_vec(),
            b"\x05bench12345679".to_vec(),
            b"\x05benchz".to_vec(),
        ];
        // And counters as a load makes them: one namespace, names of several lengths.
        let mut x: u64 = 7;
        for _ in 0..2_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let counter = format!("k{}", x >> 50);
            let key = CounterKey::parse_joined(&format!("bench:{counter}")).expect("key");
            keys.push(codec::counter_prefix(&key));
        }
        let mut by_counter = ByCounter::default();
        for key in &keys {
            by_counter.insert(key.clone(), Vec::new());
        }
        let sorted: Vec<&[u8]> = sorted_counters(&by_counter)
            .into_iter()
            .map(|place| by_counter.get_index(place).expect("placed").0.as_slice())
            .collect();
        let mut expected: Vec<&[u8]> = by_counter.keys().map(Vec::as_slice).collect();
        expected.sort_unstable();
        assert_eq!(sorted, expected);
        assert!(sorted_counters(&ByCounter::default()).is_empty());
    }

    fn staged(counter: &str, micros: i64, token: &str) -> StagedEvent {
        let key = CounterKey::parse_joined(counter).expect("key");
        let bytes = codec::event_key(&key, Timestamp::from_micros(micros), token);
        let value = codec::event_value(EventKind::Add(micros));
        StagedEvent::decode(&bytes, &value, None).expect("decodes")
    }

    /// An event of `n:a` that took the client token `tok`, until `until`.
    fn took_tok(micros: i64, until: i64) -> StagedEvent {
        let key = CounterKey::parse_joined("n:a").expect("key");
        let bytes = codec::event_key(&key, Timestamp::from_micros(micros), "tok");
        let value = codec::event_value(EventKind::Add(1));
        StagedEvent::decode(&bytes, &value, Some(Timestamp::from_micros(until))).expect("decodes")
    }

    #[test]
    fn an_event_staged_in_place_is_the_one_its_journal_entry_gives_back() {
        for (counter, token, kind) in
            [("n:a", "tok", EventKind::Add(-7)), ("ns:a longer name", "t", EventKind::Clear)]
        {
            let key = CounterKey::parse_joined(counter).expect("key");
            let token = tally_core::IdempotencyToken::new(token, Timestamp::from_micros(42)).expect("token");
            let event = tally_core::Event { key, token, kind };
            let until = Some(Timestamp::from_micros(99));
            let made = StagedEvent::of(&event, until);
            let key = codec::event_key(&event.key, event.token.generation_time(), event.token.token());
            let value = codec::event_value(kind);
            assert_eq!(made, StagedEvent::decode(&key, &value, until).expect("decodes"));
            assert_eq!(made.counter(), codec::counter_prefix(&event.key).as_slice());
        }
    }

    /// A database with the keyspaces a move writes into.
    fn tables() -> (tempfile::TempDir, fjall::Database, Tables) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("open");
        let keyspace =
            |name: &str| db.keyspace(name, fjall::KeyspaceCreateOptions::default).expect("keyspace");
        let tables = Tables { events: keyspace("events"), tokens: keyspace("tokens") };
        (dir, db, tables)
    }

    /// Every key in `keyspace`, in order.
    fn keys_in(keyspace: &Keyspace) -> Vec<Vec<u8>> {
        keyspace.iter().map(|guard| guard.key().expect("key").to_vec()).collect()
    }

    /// Moves the whole move under way.
    fn move_whole(index: &Staged, into: &Tables) {
        let ((), end) = index.with_next_slice(usize::MAX, into, |_, _| ()).expect("prepared");
        index.slice_moved(end);
    }

    #[test]
    fn a_staged_token_is_found_until_its_move_and_a_newer_taking_outlives_the_older_move() {
        let index = Staged::default();
        let (_dir, _db, tables) = tables();
        let stored = |key: &[u8]| tables.tokens.get(key).expect("get").map(|v| v.to_vec());
        let key = codec::token_key(&CounterKey::parse_joined("n:a").expect("key"), "tok");
        index.add(0, vec![took_tok(1, 100)]);
        let first = index.token(&key).expect("staged");
        assert_eq!(
            (first.stored.generation_time, first.until),
            (Timestamp::from_micros(1), Timestamp::from_micros(100))
        );
        assert_eq!(index.token_keys(), std::slice::from_ref(&key));
        index.begin_move(&tables);
        // Taken again once its window passed, while the first taking moves.
        index.add(1, vec![took_tok(200, 300)]);
        move_whole(&index, &tables);
        assert_eq!(stored(&key), Some(codec::token_value(&first).to_vec()), "the first taking moved");
        let second = index.token(&key).expect("the newer taking is still staged");
        assert_eq!(second.stored.generation_time, Timestamp::from_micros(200));
        index.begin_move(&tables);
        move_whole(&index, &tables);
        assert_eq!(index.token(&key), None, "moved into the keyspace");
        assert_eq!(stored(&key), Some(codec::token_value(&second).to_vec()));
        assert!(index.token_keys().is_empty());
        // An index entry that no staged event confirms (as a collision of hashes would make)
        // is not answered.
        index.write().tokens.insert(token_id(&key), second);
        assert_eq!(index.token(&key), None);
    }

    #[test]
    fn a_counters_range_is_in_key_order_and_a_move_takes_everything_sorted() {
        let index = Staged::default();
        let (_dir, _db, tables) = tables();
        index.add(0, vec![staged("n:a", 5, "x"), staged("n:b", 1, "y")]);
        index.add(1, vec![staged("n:a", 2, "z")]);
        assert_eq!(index.len(), 3);
        let a = codec::counter_prefix(&CounterKey::parse_joined("n:a").expect("key"));
        let range = index.range(&a, Bound::Unbounded, Bound::Unbounded);
        assert_eq!(range.len(), 2);
        assert!(range[0].0 < range[1].0, "sorted by key, not by commit");
        assert_eq!(index.newest(&a), Some(Timestamp::from_micros(5)));
        let later =
            codec::event_bound(&CounterKey::parse_joined("n:a").expect("key"), Timestamp::from_micros(3));
        assert_eq!(index.range(&a, Bound::Included(&later), Bound::Unbounded).len(), 1);
        index.begin_move(&tables);
        index.add(2, vec![staged("n:a", 9, "w")]);
        assert_eq!(
            (index.len(), index.gathered()),
            (4, 1),
            "a commit after the move began gathers for the next"
        );
        assert_eq!(index.newest(&a), Some(Timestamp::from_micros(9)), "gathering and moving both count");
        assert_eq!(index.range(&a, Bound::Unbounded, Bound::Unbounded).len(), 3);
        let (first, end) = index
            .with_next_slice(2, &tables, |runs, last| {
                let keys: Vec<_> = runs.iter().flat_map(|run| run.iter().map(|e| e.key().to_vec())).collect();
                assert!(keys.is_sorted(), "{keys:?}");
                assert_eq!(last, None, "one event is left after this slice");
                keys
            })
            .expect("prepared");
        assert_eq!(first.len(), 2);
        let moved = keys_in(&tables.events);
        assert_eq!(moved.len(), 3, "the first slice finds every event of the move in its table");
        assert!(first.iter().all(|key| moved.contains(key)));
        index.slice_moved(end);
        assert!(index.is_moving());
        let (second, end) = index
            .with_next_slice(2, &tables, |runs, last| {
                assert_eq!(last, Some(&[0, 1][..]), "the last slice deletes the move's journal entries");
                runs.iter().map(|run| run.len()).sum::<usize>()
            })
            .expect("prepared");
        assert_eq!(second, 1);
        index.slice_moved(end);
        assert!(!index.is_moving());
        assert_eq!((index.len(), index.next_sequence()), (1, 3));
    }

    #[test]
    fn a_large_move_is_prepared_aside_and_writes_each_event_once_in_key_order() {
        let index = Staged::default();
        let (_dir, _db, tables) = tables();
        let counters = PREPARE_AT_ONCE_BELOW;
        // Each counter's events out of time order within and across commits.
        for (sequence, micros) in [(0, 5), (1, 3), (2, 9)] {
            let events = (0..counters).rev().map(|c| staged(&format!("n:c{c}"), micros, "t")).collect();
            index.add(sequence, events);
        }
        index.begin_move(&tables);
        while !index.move_is_prepared() {
            std::thread::yield_now();
        }
        let mut keys = Vec::new();
        loop {
            let (last, end) = index
                .with_next_slice(1_000, &tables, |runs, last| {
                    assert!(runs.iter().all(|run| run.windows(2).all(|w| w[0].counter() == w[1].counter())));
                    keys.extend(runs.iter().flat_map(|run| run.iter().map(|e| e.key().to_vec())));
                    last.is_some()
                })
                .expect("prepared");
            index.slice_moved(end);
            if last {
                break;
            }
        }
        assert_eq!(keys.len(), counters * 3, "every event once");
        assert!(keys.is_sorted(), "in key order");
        assert_eq!(keys_in(&tables.events), keys, "the table holds each event once");
        assert!(!index.is_moving());
    }

    /// fjall's ingestion refuses a key written twice (it panics): two staged events with one
    /// key (a token taken again after its window, with the same generation time) are written
    /// once, the later one, as a later write replaces an earlier one.
    #[test]
    fn a_move_writes_the_later_of_two_staged_events_with_one_key() {
        let index = Staged::default();
        let (_dir, _db, tables) = tables();
        let key = CounterKey::parse_joined("n:a").expect("key");
        let event = |delta| {
            let bytes = codec::event_key(&key, Timestamp::from_micros(5), "again");
            StagedEvent::decode(&bytes, &codec::event_value(EventKind::Add(delta)), None).expect("decodes")
        };
        index.add(0, vec![event(1), staged("n:b", 5, "x")]);
        index.add(1, vec![event(2)]);
        index.begin_move(&tables);
        move_whole(&index, &tables);
        let stored: Vec<_> = tables.events.iter().map(|guard| guard.into_inner().expect("entry")).collect();
        assert_eq!(stored.len(), 2, "n:a's key once, and n:b's");
        assert_eq!(&*stored[0].1, codec::event_value(EventKind::Add(2)).as_slice(), "the later one");
        assert!(!index.is_moving());
    }

    #[test]
    fn a_merge_keeps_one_copy_of_an_event_in_both_places() {
        let e = |k: &[u8]| (k.to_vec(), vec![0]);
        let mut merge = Merge::new(vec![e(b"a"), e(b"c"), e(b"e")]);
        assert_eq!(merge.before(b"b"), [e(b"a")]);
        assert_eq!(merge.before(b"c"), [], "the stored copy of c is the one kept");
        assert_eq!(merge.before(b"d"), []);
        assert_eq!(merge.rest().collect::<Vec<_>>(), [e(b"e")]);
    }
}
