//! `Engine::list_events`: a counter's history, a page at a time, each event marked with
//! whether a checkpoint has folded it.

use tally_core::{CounterKey, Event, Timestamp};
use tally_store::EventCursor;

use super::Engine;
use crate::error::EngineResult;

/// Most events one [`Engine::list_events`] page holds.
pub const MAX_EVENTS_PAGE: usize = 1_000;

/// One event of a counter's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEvent {
    /// The event: its token, generation time and what it does.
    pub event: Event,
    /// Whether the counter's checkpoint covers it (its generation time is before the
    /// checkpoint's `until`): the count includes it through the checkpoint.
    pub folded: bool,
}

/// One page of a counter's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// Oldest first, by `(generation_time, token)`.
    pub events: Vec<ListedEvent>,
    /// Where the next page starts (exclusive); `None` once the range is exhausted.
    pub next: Option<EventCursor>,
}

impl Engine {
    /// `ListEvents`: up to `limit` (at most [`MAX_EVENTS_PAGE`]) events of `key` generated in
    /// `[from, until)`, after `after`. What retention deleted is gone; `best_effort` counters
    /// keep no events, and list none.
    pub async fn list_events(
        &self,
        key: &CounterKey,
        from: Timestamp,
        until: Timestamp,
        after: Option<&EventCursor>,
        limit: usize,
    ) -> EngineResult<EventPage> {
        let _permit = self.admit()?;
        let config = self.inner.namespaces.get(&key.namespace).await?;
        if !config.counter_type.is_durable() {
            return Ok(EventPage { events: Vec::new(), next: None });
        }
        let limit = limit.clamp(1, MAX_EVENTS_PAGE);
        let events = self.inner.store.list_events(key, from, until, after, limit).await?;
        let checkpoint = self.checkpoint(key, &config).await?;
        let next = (events.len() == limit).then(|| events.last().map(EventCursor::after)).flatten();
        let events = events
            .into_iter()
            .map(|event| ListedEvent { folded: event.token.generation_time() < checkpoint.until, event })
            .collect();
        Ok(EventPage { events, next })
    }
}
