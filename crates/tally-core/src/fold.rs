//! Rollup arithmetic: folding a run of events into a checkpoint.
//!
//! A [`Checkpoint`] says "every event ordered before `until` sums to `count`". A [`Fold`] is
//! the summary of the events in a half-open window `[from, until)`, fed in
//! `(generation_time, token)` order. Applying a fold to the checkpoint at its `from` gives the
//! checkpoint at its `until`.

use crate::event::EventKind;
use crate::time::Timestamp;

/// The count of a counter over all events with `generation_time < until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The sum of those events, after the last clear among them.
    pub count: i64,
    /// Exclusive upper bound of the events the count covers.
    pub until: Timestamp,
}

impl Checkpoint {
    /// The checkpoint of a counter that was never rolled up: nothing counted, from the start of time.
    pub const ZERO: Self = Self { count: 0, until: Timestamp::MIN };

    /// The checkpoint after the events summarised by `fold`, which covers `[self.until, until)`.
    ///
    /// Counts saturate at the `i64` bounds instead of wrapping; [`Fold::overflowed`] tells
    /// whether that happened.
    pub fn advance(self, fold: &Fold, until: Timestamp) -> Self {
        debug_assert!(until >= self.until, "a checkpoint never moves backwards: {until} < {}", self.until);
        Self { count: fold.apply_to(self.count), until }
    }
}

/// A summary of events in `(generation_time, token)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fold {
    /// Sum of the deltas after the last clear (of all deltas if there was no clear).
    /// Kept wide so that no run of `i64` deltas can overflow it.
    pub sum: i128,
    /// Whether a clear was among the events.
    pub cleared: bool,
    /// How many events were folded.
    pub events: u64,
}

impl Fold {
    /// Adds the next event in order.
    pub fn push(&mut self, kind: EventKind) {
        self.events += 1;
        match kind {
            EventKind::Add(delta) => self.sum += i128::from(delta),
            EventKind::Clear => {
                self.sum = 0;
                self.cleared = true;
            }
        }
    }

    /// Folds a whole ordered run.
    pub fn of(kinds: impl IntoIterator<Item = EventKind>) -> Self {
        let mut fold = Self::default();
        kinds.into_iter().for_each(|k| fold.push(k));
        fold
    }

    /// The count these events make from a starting `base`, saturating at the `i64` bounds.
    pub fn apply_to(&self, base: i64) -> i64 {
        let total = self.exact_total(base);
        i64::try_from(total).unwrap_or(if total < 0 { i64::MIN } else { i64::MAX })
    }

    /// Whether applying this fold to `base` leaves the `i64` range (and so saturates).
    pub fn overflowed(&self, base: i64) -> bool {
        i64::try_from(self.exact_total(base)).is_err()
    }

    fn exact_total(&self, base: i64) -> i128 {
        let base = if self.cleared { 0 } else { i128::from(base) };
        base + self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::{Add, Clear};
    use proptest::prelude::*;

    #[test]
    fn clear_discards_what_came_before_it_only() {
        let fold = Fold::of([Add(5), Add(7), Clear, Add(3)]);
        assert_eq!(fold.apply_to(100), 3);
        assert_eq!(Fold::of([Add(5), Add(7)]).apply_to(100), 112);
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let fold = Fold::of([Add(i64::MAX), Add(i64::MAX)]);
        assert_eq!(fold.apply_to(1), i64::MAX);
        assert!(fold.overflowed(1));
        assert_eq!(Fold::of([Add(i64::MIN)]).apply_to(-1), i64::MIN);
        assert!(!Fold::of([Add(1)]).overflowed(1));
    }

    fn kind() -> impl Strategy<Value = EventKind> {
        prop_oneof![9 => any::<i32>().prop_map(|d| Add(i64::from(d))), 1 => Just(Clear)]
    }

    proptest! {
        /// Folding a history in two windows and chaining the checkpoints equals folding it at once.
        #[test]
        fn split_folds_chain_to_the_same_checkpoint(events in proptest::collection::vec(kind(), 0..60), split in 0usize..60) {
            let split = split.min(events.len());
            let whole = Checkpoint::ZERO.advance(&Fold::of(events.iter().copied()), Timestamp::from_micros(2));
            let first = Checkpoint::ZERO.advance(&Fold::of(events[..split].iter().copied()), Timestamp::from_micros(1));
            let second = first.advance(&Fold::of(events[split..].iter().copied()), Timestamp::from_micros(2));
            prop_assert_eq!(whole, second);
        }
    }
}
