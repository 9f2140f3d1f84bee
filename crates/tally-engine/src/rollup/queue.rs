//! A coalescing queue of rollup triggers.
//!
//! Each counter is in the queue at most once, with the earliest time it is due. A trigger for
//! a counter already queued merges into the queued one, so a busy counter costs one rollup per
//! coalesce window however many writes it takes.

use std::collections::BTreeSet;

use foldhash::HashMap;
use std::sync::Mutex;

use tally_core::{CounterKey, Timestamp};

/// What happened to a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The counter was not queued and now is; `earliest`: no other queued counter is due
    /// sooner, so a worker sleeping until the earliest due time must wake for it.
    Queued { earliest: bool },
    /// The counter was queued already; it keeps the earlier of the two due times.
    Coalesced,
    /// The queue is full; the trigger was dropped (the pending scan will find the counter).
    Dropped,
}

#[derive(Default)]
struct Inner {
    by_due: BTreeSet<(Timestamp, CounterKey)>,
    due_of: HashMap<CounterKey, Timestamp>,
}

/// Counters waiting for a rollup, ordered by when they are due.
pub struct CoalescingQueue {
    // A std mutex: held for a few map operations, never across an await.
    inner: Mutex<Inner>,
    capacity: usize,
}

impl CoalescingQueue {
    /// An empty queue holding at most `capacity` counters.
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::default(), capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` to be rolled up at `due`, merging with a queued trigger.
    pub fn push(&self, key: &CounterKey, due: Timestamp) -> Pushed {
        let mut inner = self.lock();
        if let Some(&queued) = inner.due_of.get(key) {
            if due < queued {
                inner.by_due.remove(&(queued, key.clone()));
                inner.by_due.insert((due, key.clone()));
                inner.due_of.insert(key.clone(), due);
            }
            return Pushed::Coalesced;
        }
        if inner.due_of.len() >= self.capacity {
            return Pushed::Dropped;
        }
        let earliest = inner.by_due.first().is_none_or(|(first, _)| due < *first);
        inner.by_due.insert((due, key.clone()));
        inner.due_of.insert(key.clone(), due);
        Pushed::Queued { earliest }
    }

    /// Removes and returns up to `max` counters due at or before `now`, earliest first, with
    /// the time each was due.
    pub fn take_due(&self, now: Timestamp, max: usize) -> Vec<(Timestamp, CounterKey)> {
        let mut inner = self.lock();
        let mut out = Vec::new();
        while out.len() < max {
            match inner.by_due.first() {
                Some((due, _)) if *due <= now => {}
                _ => break,
            }
            if let Some((due, key)) = inner.by_due.pop_first() {
                inner.due_of.remove(&key);
                out.push((due, key));
            }
        }
        out
    }

    /// When the earliest queued counter is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.lock().by_due.first().map(|(due, _)| *due)
    }

    /// How many counters are queued.
    pub fn len(&self) -> usize {
        self.lock().due_of.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> CounterKey {
        CounterKey::parse_joined(name).expect("key")
    }

    fn t(micros: i64) -> Timestamp {
        Timestamp::from_micros(micros)
    }

    #[test]
    fn triggers_coalesce_to_the_earliest_due_time() {
        let q = CoalescingQueue::new(10);
        assert_eq!(q.push(&key("a"), t(50)), Pushed::Queued { earliest: true });
        assert_eq!(q.push(&key("a"), t(80)), Pushed::Coalesced);
        assert_eq!(q.push(&key("b"), t(60)), Pushed::Queued { earliest: false });
        assert_eq!(q.push(&key("c"), t(40)), Pushed::Queued { earliest: true });
        assert_eq!(q.push(&key("b"), t(10)), Pushed::Coalesced);
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_due(), Some(t(10)));
        assert_eq!(q.take_due(t(49), 10), vec![(t(10), key("b")), (t(40), key("c"))]);
        assert_eq!(q.take_due(t(50), 10), vec![(t(50), key("a"))]);
        assert!(q.is_empty());
    }

    #[test]
    fn take_due_respects_the_batch_size_and_a_full_queue_drops() {
        let q = CoalescingQueue::new(3);
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(q.push(&key(name), t(i as i64)), Pushed::Queued { earliest: i == 0 });
        }
        assert_eq!(q.push(&key("d"), t(0)), Pushed::Dropped);
        assert_eq!(q.push(&key("a"), t(0)), Pushed::Coalesced);
        assert_eq!(q.take_due(t(100), 2), vec![(t(0), key("a")), (t(1), key("b"))]);
        assert_eq!(q.take_due(t(100), 2), vec![(t(2), key("c"))]);
    }
}
