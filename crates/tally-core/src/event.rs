//! Events: the immutable entries of a counter's log.

use crate::name::CounterKey;
use crate::token::IdempotencyToken;

/// What an event does to its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Adds a signed delta.
    Add(i64),
    /// Discards everything ordered before this event.
    Clear,
}

/// One mutation of one counter, as stored in the event log.
///
/// Events are ordered within a counter by `(generation_time, token)`; that order, not arrival
/// order, decides what a clear discards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The counter the event belongs to.
    pub key: CounterKey,
    /// The event's identity and its place in the counter's history.
    pub token: IdempotencyToken,
    /// What the event does.
    pub kind: EventKind,
}
