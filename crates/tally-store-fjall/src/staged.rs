//! Staged events: acknowledged and durable in the `journal` keyspace, not yet in `events`.
//!
//! Putting each event into the `events` keyspace as it arrives costs the writer thread one
//! insert into a skiplist of about a million entries per add, at a random place: with many
//! counters nearly every step of it is a cache miss, and it was the largest single cost of an
//! add. So a group commit writes all its events as one entry of the `journal` keyspace (one
//! insert per commit, always at the end) and keeps them here, by counter, where readers find
//! them. Once enough have gathered, the writer freezes them in key order and moves them into
//! `events`, a slice between two commits so that appends never wait behind a whole move; each
//! slice writes its counters' `last_write`, and the last one deletes the journal entries.
//! Inserting in key order costs about half as much per event (each insert starts where the
//! last one's path is still in the cache), and `last_write` is written once per counter per
//! move instead of once per commit.
//!
//! The move needs no sync of its own: the batch is atomic, so after a crash either it is in
//! the database's journal (events moved, journal entries gone) or it is not (the journal
//! entries are still there). At open, and after the database is reopened, whatever the
//! journal holds is staged again.
//!
//! Readers take the staged events of a counter (gathering and moving) before they scan the
//! keyspace, and merge the two. A move forgets its events only after its last slice is
//! committed, so an event is always in at least one of them; during a move it may be in both,
//! and the merge keeps one copy.

use std::ops::{Bound, RangeBounds};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fjall::Keyspace;
use foldhash::HashMap;
use tally_core::Timestamp;
use tally_store::StoreResult;

use crate::handles::unavailable;
use crate::key_codec as codec;

/// An event as the writer stages it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StagedEvent {
    /// Its key in the `events` keyspace.
    pub key: Vec<u8>,
    /// Its value there.
    pub value: Vec<u8>,
    /// Where its counter's prefix ends in `key`.
    pub prefix_len: usize,
    /// Its generation time (also in `key`).
    pub time: Timestamp,
}

impl StagedEvent {
    /// The event stored under `key` with `value`, as the journal gives it back.
    fn decode(key: &[u8], value: &[u8]) -> StoreResult<Self> {
        let prefix_len = codec::counter_prefix_len(key)?;
        let (time, _) = codec::decode_event_key_suffix(&key[prefix_len..])?;
        Ok(Self { key: key.to_vec(), value: value.to_vec(), prefix_len, time })
    }

    /// Its counter's state key.
    pub fn counter(&self) -> &[u8] {
        &self.key[..self.prefix_len]
    }
}

/// Events of a move under way: frozen when it began, in key order.
#[derive(Default)]
struct Moving {
    events: Vec<StagedEvent>,
    /// How many of `events` are committed to the `events` keyspace already (they stay here
    /// until the move ends; readers keep one copy).
    done: usize,
    /// The journal entries holding them, deleted with the last slice.
    journal_entries: Vec<u64>,
}

#[derive(Default)]
struct Inner {
    /// Events gathering for the next move, by counter prefix, in commit order.
    by_counter: HashMap<Vec<u8>, Vec<StagedEvent>>,
    gathered: usize,
    /// The journal entries holding them.
    journal_entries: Vec<u64>,
    moving: Moving,
    next_sequence: u64,
}

impl Inner {
    fn add(&mut self, sequence: u64, events: Vec<StagedEvent>) {
        self.next_sequence = self.next_sequence.max(sequence + 1);
        self.journal_entries.push(sequence);
        self.gathered += events.len();
        for event in events {
            match self.by_counter.get_mut(event.counter()) {
                Some(staged) => staged.push(event),
                None => {
                    let counter = event.counter().to_vec();
                    self.by_counter.insert(counter, vec![event]);
                }
            }
        }
    }

    /// The moving events of the counter with state key `counter`: neighbours in key order.
    fn moving_of(&self, counter: &[u8]) -> &[StagedEvent] {
        let events = &self.moving.events;
        let from = events.partition_point(|e| e.key.as_slice() < counter);
        let len = events[from..].iter().take_while(|e| e.counter() == counter).count();
        &events[from..from + len]
    }

    /// Every staged event (gathering or moving) of the counter with state key `counter`, in
    /// no order.
    fn of_counter<'a>(&'a self, counter: &[u8]) -> impl Iterator<Item = &'a StagedEvent> + use<'a> {
        let gathering = self.by_counter.get(counter).map_or(&[][..], Vec::as_slice);
        gathering.iter().chain(self.moving_of(counter))
    }
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
        inner.gathered + inner.moving.events.len()
    }

    /// How many events are gathering for the next move.
    pub fn gathered(&self) -> usize {
        self.read().gathered
    }

    /// Whether a move is under way.
    pub fn is_moving(&self) -> bool {
        !self.read().moving.events.is_empty()
    }

    /// The oldest journal entry whose events are staged, if any.
    pub fn oldest_entry(&self) -> Option<u64> {
        let inner = self.read();
        inner.moving.journal_entries.first().or(inner.journal_entries.first()).copied()
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
                .map(|(key, value)| StagedEvent::decode(key, value))
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
            .filter(|e| RangeBounds::<[u8]>::contains(&(start, end), e.key.as_slice()))
            .map(|e| (e.key.clone(), e.value.clone()))
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
        self.read().of_counter(counter).any(|e| e.key.as_slice() < end)
    }

    /// Begins a move of everything gathered, unless one is under way: the events are frozen
    /// in key order, and new commits gather for the next move.
    pub fn begin_move(&self) {
        let mut inner = self.write();
        if !inner.moving.events.is_empty() || inner.gathered == 0 {
            return;
        }
        let mut events: Vec<StagedEvent> =
            std::mem::take(&mut inner.by_counter).into_values().flatten().collect();
        events.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let journal_entries = std::mem::take(&mut inner.journal_entries);
        inner.gathered = 0;
        inner.moving = Moving { events, done: 0, journal_entries };
    }

    /// Runs `f` on the next at most `limit` events of the move under way, in key order, and,
    /// if they are its last, on the journal entries to delete with them. Readers are not held
    /// up meanwhile: only the writer changes what is staged.
    pub fn with_next_slice<R>(&self, limit: usize, f: impl FnOnce(&[StagedEvent], Option<&[u64]>) -> R) -> R {
        let inner = self.read();
        let moving = &inner.moving;
        let end = moving.done.saturating_add(limit).min(moving.events.len());
        let last = (end == moving.events.len()).then_some(moving.journal_entries.as_slice());
        f(&moving.events[moving.done..end], last)
    }

    /// Notes that the next `moved` events of the move are committed to the `events`
    /// keyspace; after the last, the move ends and they are forgotten.
    pub fn slice_moved(&self, moved: usize) {
        let mut inner = self.write();
        let moving = &mut inner.moving;
        moving.done += moved;
        debug_assert!(moving.done <= moving.events.len(), "moved more than the move holds");
        if moving.done >= moving.events.len() {
            inner.moving = Moving::default();
        }
    }
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
    let mut out = Vec::with_capacity(events.iter().map(|e| e.key.len() + e.value.len() + 3).sum());
    for event in events {
        codec::push_journal_event(&mut out, &event.key, &event.value);
    }
    out
}

#[cfg(test)]
mod tests {
    use tally_core::{CounterKey, EventKind};

    use super::*;

    fn staged(counter: &str, micros: i64, token: &str) -> StagedEvent {
        let key = CounterKey::parse_joined(counter).expect("key");
        let bytes = codec::event_key(&key, Timestamp::from_micros(micros), token);
        let value = codec::event_value(EventKind::Add(micros));
        StagedEvent::decode(&bytes, &value).expect("decodes")
    }

    #[test]
    fn a_counters_range_is_in_key_order_and_a_move_takes_everything_sorted() {
        let index = Staged::default();
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
        index.begin_move();
        index.add(2, vec![staged("n:a", 9, "w")]);
        assert_eq!(
            (index.len(), index.gathered()),
            (4, 1),
            "a commit after the move began gathers for the next"
        );
        assert_eq!(index.newest(&a), Some(Timestamp::from_micros(9)), "gathering and moving both count");
        assert_eq!(index.range(&a, Bound::Unbounded, Bound::Unbounded).len(), 3);
        let first = index.with_next_slice(2, |events, last| {
            assert!(events.windows(2).all(|w| w[0].key < w[1].key));
            assert_eq!(last, None, "one event is left after this slice");
            events.len()
        });
        index.slice_moved(first);
        assert!(index.is_moving());
        let second = index.with_next_slice(2, |events, last| {
            assert_eq!(last, Some(&[0, 1][..]), "the last slice deletes the move's journal entries");
            events.len()
        });
        assert_eq!(second, 1);
        index.slice_moved(second);
        assert!(!index.is_moving());
        assert_eq!((index.len(), index.next_sequence()), (1, 3));
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
