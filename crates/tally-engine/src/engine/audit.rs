//! `Engine::list_events`: a counter's history, a page at a time, each event marked with
//! whether a checkpoint has folded it; and `Engine::recount`: the checkpoint checked against
//! the events still kept.

use std::sync::Arc;

use tally_core::{Checkpoint, CounterKey, Event, NamespaceConfig, Timestamp};
use tally_store::EventCursor;

use super::Engine;
use crate::error::{EngineError, EngineResult};

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

/// A counter's checkpoint against a refold of the events it covers that are still kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recount {
    /// The checkpoint: the count of every event generated before its `until`.
    pub checkpoint: Checkpoint,
    /// The events before `until` that are still kept, folded from zero.
    pub recounted: i64,
    /// How many events that fold read.
    pub events: u64,
    /// The oldest of them.
    pub oldest: Option<Timestamp>,
    /// Whether a clear was among them. Then the events before it do not matter, so the
    /// recount is exact even if retention deleted some of them.
    pub cleared: bool,
}

impl Recount {
    /// Whether the checkpoint says what the kept events say.
    pub fn agrees(&self) -> bool {
        self.recounted == self.checkpoint.count
    }
}

impl Engine {
    /// Refolds the events of `key` that its checkpoint covers and are still kept, and
    /// reports both counts. It changes nothing. A difference means a lost or doubled event,
    /// unless retention deleted events before the oldest one kept and no clear came after
    /// them (then the difference is theirs).
    pub async fn recount(&self, key: &CounterKey) -> EngineResult<Recount> {
        let _permit = self.admit()?;
        self.durable_namespace(key).await?;
        let checkpoint = self.inner.store.checkpoint(key).await?.unwrap_or(Checkpoint::ZERO);
        let fold = self.inner.store.fold(key, Timestamp::MIN, checkpoint.until).await?;
        let oldest = self.inner.store.list_events(key, Timestamp::MIN, checkpoint.until, None, 1).await?;
        Ok(Recount {
            checkpoint,
            recounted: fold.apply_to(0),
            events: fold.events,
            oldest: oldest.first().map(|e| e.token.generation_time()),
            cleared: fold.cleared,
        })
    }

    /// The settings of `key`'s namespace, refused `NoEvents` where its counters keep no
    /// events (`best_effort`): what recounts and series read.
    pub(super) async fn durable_namespace(&self, key: &CounterKey) -> EngineResult<Arc<NamespaceConfig>> {
        let config = self.inner.namespaces.get(&key.namespace).await?;
        if !config.counter_type.is_durable() {
            return Err(EngineError::NoEvents(key.namespace.clone()));
        }
        Ok(config)
    }

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
