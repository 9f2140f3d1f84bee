//! Staged events: acknowledged and durable in the `journal` keyspace, not yet in `events`.
//!
//! Putting each event into the `events` keyspace as it arrives costs the writer thread one
//! insert into a skiplist of about a million entries per add, at a random place: with many
//! counters nearly every step of it is a cache miss, and it was the largest single cost of an
//! add. So a group commit writes all its events as one entry of the `journal` keyspace (one
//! insert per commit, always at the end) and keeps them here, by counter, where readers find
//! them. Once enough have gathered, the writer moves them into `events` in key order, in one
//! batch that also writes each counter's `last_write` once and deletes their journal entries.
//! Inserting in key order costs about half as much per event (each insert starts where the
//! last one's path is still in the cache), and `last_write` is written once per counter per
//! move instead of once per commit.
//!
//! The move needs no sync of its own: the batch is atomic, so after a crash either it is in
//! the database's journal (events moved, journal entries gone) or it is not (the journal
//! entries are still there). At open, and after the database is reopened, whatever the
//! journal holds is staged again.
//!
//! Readers take the staged events of a counter before they scan the keyspace, and merge the
//! two. A move commits before it forgets what it moved, so an event is always in at least one
//! of them; during a move it may be in both, and the merge keeps one copy.

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

#[derive(Default)]
struct Inner {
    /// By counter prefix: its staged events, in commit order.
    by_counter: HashMap<Vec<u8>, Vec<StagedEvent>>,
    events: usize,
    /// Sequence numbers of the journal entries holding them.
    journal_entries: Vec<u64>,
    next_sequence: u64,
}

impl Inner {
    fn add(&mut self, sequence: u64, events: Vec<StagedEvent>) {
        self.next_sequence = self.next_sequence.max(sequence + 1);
        self.journal_entries.push(sequence);
        self.events += events.len();
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

    /// How many events are staged.
    pub fn len(&self) -> usize {
        self.read().events
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

    /// Stages again what `journal` holds, replacing what was staged: at open, and after the
    /// database is reopened from what reached its journal. Returns how many events it staged.
    pub fn load(&self, journal: &Keyspace) -> StoreResult<usize> {
        let mut loaded = Inner { next_sequence: self.next_sequence(), ..Inner::default() };
        // In key order, which is commit order.
        for guard in journal.iter() {
            let (key, value) = guard.into_inner().map_err(unavailable)?;
            let events = codec::decode_journal_value(&value)?
                .into_iter()
                .map(|(key, value)| StagedEvent::decode(key, value))
                .collect::<StoreResult<Vec<_>>>()?;
            let sequence = codec::decode_journal_key(&key)?;
            loaded.next_sequence = loaded.next_sequence.max(sequence);
            loaded.add(sequence, events);
        }
        let staged = loaded.events;
        *self.write() = loaded;
        Ok(staged)
    }

    /// The staged events of the counter with state key `counter` whose keys lie between
    /// `start` and `end`, as `(key, value)` in key order.
    pub fn range(&self, counter: &[u8], start: Bound<&[u8]>, end: Bound<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let inner = self.read();
        let Some(staged) = inner.by_counter.get(counter) else { return Vec::new() };
        let mut found: Vec<_> = staged
            .iter()
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
        self.read().by_counter.get(counter).and_then(|staged| staged.iter().map(|e| e.time).max())
    }

    /// Runs `f` on every staged event in key order and on the journal entries holding them,
    /// for the writer to move them; they stay staged until [`Staged::moved`]. Readers are not
    /// held up meanwhile: only the writer changes what is staged.
    pub fn with_sorted<R>(&self, f: impl FnOnce(&[&StagedEvent], &[u64]) -> R) -> R {
        let inner = self.read();
        let mut events: Vec<&StagedEvent> = inner.by_counter.values().flatten().collect();
        events.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        f(&events, &inner.journal_entries)
    }

    /// Forgets the `moved` events [`Staged::with_sorted`] gave, once their move is committed.
    /// Only the writer stages events, and it does not between the two calls, so that is
    /// everything.
    pub fn moved(&self, moved: usize) {
        let mut inner = self.write();
        debug_assert_eq!(inner.events, moved, "events were staged during a move");
        let next = inner.next_sequence;
        *inner = Inner { next_sequence: next, ..Inner::default() };
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
        let moving = index.with_sorted(|events, entries| {
            assert_eq!(entries, [0, 1]);
            assert!(events.windows(2).all(|w| w[0].key < w[1].key));
            events.len()
        });
        index.moved(moving);
        assert_eq!((index.len(), index.next_sequence()), (0, 2));
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
