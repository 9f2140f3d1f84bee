//! `MemoryStore`: the reference store. Everything under one mutex, so it is plainly right.
//!
//! Not durable: "durable" here means "visible until the process exits". Used by unit tests
//! and as the model that the other backends must agree with.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tally_core::{
    Checkpoint, Clock, CounterKey, Event, EventKind, Fold, IdempotencyToken, Namespace, NamespaceConfig,
    Timestamp,
};

use crate::contract::{Appended, CounterState, CounterStore, EventCursor, EventLog, NamespaceStore, Stored};
use crate::error::{StoreError, StoreResult};

/// Events of one counter, keyed by their `(generation_time, token)` order.
type CounterEvents = BTreeMap<(Timestamp, String), EventKind>;

/// A client's token taken on a counter, and until when.
#[derive(Debug, Clone, Copy)]
struct Taken {
    stored: Stored,
    until: Timestamp,
}

#[derive(Default)]
struct Inner {
    events: BTreeMap<CounterKey, CounterEvents>,
    tokens: HashMap<(CounterKey, String), Taken>,
    states: BTreeMap<CounterKey, CounterState>,
    namespaces: BTreeMap<Namespace, NamespaceConfig>,
}

/// The in-memory reference store.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    exclusive: bool,
}

impl MemoryStore {
    /// An empty store whose append deadlines are judged by `clock`.
    /// One engine writes it, like the embedded store ([`EventLog::exclusive`] is `true`).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { inner: Arc::default(), clock, exclusive: true }
    }

    /// An empty store that several engines share, like Cassandra ([`EventLog::exclusive`] is
    /// `false`): for tests of several instances in one process.
    pub fn shared(clock: Arc<dyn Clock>) -> Self {
        Self { inner: Arc::default(), clock, exclusive: false }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied change: every mutation
        // below checks first and then writes, so the data is still consistent.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn order_key(token: &IdempotencyToken) -> (Timestamp, String) {
    (token.generation_time(), token.token().to_owned())
}

impl Inner {
    /// Stores the event and raises its counter's `last_write`.
    fn write(&mut self, event: &Event) {
        self.events.entry(event.key.clone()).or_default().insert(order_key(&event.token), event.kind);
        let state = self.states.entry(event.key.clone()).or_default();
        let time = event.token.generation_time();
        state.last_write = Some(state.last_write.map_or(time, |w| w.max(time)));
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    fn exclusive(&self) -> bool {
        self.exclusive
    }

    async fn append(&self, event: &Event, deadline: Timestamp, window: Duration) -> StoreResult<Appended> {
        let mut inner = self.lock();
        let now = self.clock.now();
        let slot = (event.key.clone(), event.token.token().to_owned());
        if let Some(taken) = inner.tokens.get(&slot).filter(|t| t.until > now) {
            return Appended::judge(event, taken.stored);
        }
        if now >= deadline {
            return Err(StoreError::DeadlinePassed { key: event.key.clone(), deadline });
        }
        let time = event.token.generation_time();
        let stored = Stored { generation_time: time, kind: event.kind };
        inner.tokens.insert(slot, Taken { stored, until: now.saturating_add(window) });
        inner.write(event);
        Ok(Appended::New)
    }

    async fn append_new(&self, event: &Event, deadline: Timestamp) -> StoreResult<Appended> {
        let mut inner = self.lock();
        if self.clock.now() >= deadline {
            return Err(StoreError::DeadlinePassed { key: event.key.clone(), deadline });
        }
        inner.write(event);
        Ok(Appended::New)
    }

    async fn find_token(&self, key: &CounterKey, token: &str) -> StoreResult<Option<Stored>> {
        let inner = self.lock();
        let now = self.clock.now();
        let taken = inner.tokens.get(&(key.clone(), token.to_owned())).filter(|t| t.until > now);
        Ok(taken.map(|t| t.stored))
    }

    async fn fold(&self, key: &CounterKey, from: Timestamp, until: Timestamp) -> StoreResult<Fold> {
        let inner = self.lock();
        let mut fold = Fold::default();
        if let Some(events) = inner.events.get(key) {
            let range = (Bound::Included((from, String::new())), Bound::Excluded((until, String::new())));
            if from < until {
                events.range(range).for_each(|(_, kind)| fold.push(*kind));
            }
        }
        Ok(fold)
    }

    async fn list_events(
        &self,
        key: &CounterKey,
        from: Timestamp,
        until: Timestamp,
        after: Option<&EventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        let inner = self.lock();
        let Some(events) = inner.events.get(key).filter(|_| from < until) else { return Ok(Vec::new()) };
        let start = match after {
            Some(c) if c.generation_time >= from => Bound::Excluded((c.generation_time, c.token.clone())),
            _ => Bound::Included((from, String::new())),
        };
        events
            .range((start, Bound::Excluded((until, String::new()))))
            .take(limit)
            .map(|((time, token), kind)| crate::stored_event(key, *time, token, *kind))
            .collect()
    }

    async fn delete_events_before(
        &self,
        key: &CounterKey,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<usize> {
        let mut inner = self.lock();
        let Some(events) = inner.events.get_mut(key) else { return Ok(0) };
        let doomed: Vec<_> =
            events.range(..(before, String::new())).take(limit).map(|(k, _)| k.clone()).collect();
        doomed.iter().for_each(|k| {
            events.remove(k);
        });
        // A token is never kept longer than its event (the window is at most the retention).
        inner.tokens.retain(|(k, _), taken| k != key || taken.stored.generation_time >= before);
        Ok(doomed.len())
    }
}

#[async_trait]
impl CounterStore for MemoryStore {
    async fn counter_state(&self, key: &CounterKey) -> StoreResult<CounterState> {
        Ok(self.lock().states.get(key).copied().unwrap_or_default())
    }

    async fn put_checkpoint(&self, key: &CounterKey, checkpoint: Checkpoint) -> StoreResult<Checkpoint> {
        let mut inner = self.lock();
        let state = inner.states.entry(key.clone()).or_default();
        match state.checkpoint {
            Some(stored) if stored.until >= checkpoint.until => Ok(stored),
            _ => {
                state.checkpoint = Some(checkpoint);
                Ok(checkpoint)
            }
        }
    }

    async fn scan_counters(
        &self,
        namespace: Option<&Namespace>,
        after: Option<&CounterKey>,
        limit: usize,
    ) -> StoreResult<Vec<(CounterKey, CounterState)>> {
        let inner = self.lock();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(inner
            .states
            .range((start, Bound::Unbounded))
            .filter(|(_, state)| state.last_write.is_some())
            .filter(|(key, _)| namespace.is_none_or(|ns| &key.namespace == ns))
            .take(limit)
            .map(|(k, s)| (k.clone(), *s))
            .collect())
    }
}

#[async_trait]
impl NamespaceStore for MemoryStore {
    async fn create_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()> {
        let mut inner = self.lock();
        if inner.namespaces.contains_key(name) {
            return Err(StoreError::NamespaceExists(name.clone()));
        }
        inner.namespaces.insert(name.clone(), config.clone());
        Ok(())
    }

    async fn update_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()> {
        let mut inner = self.lock();
        match inner.namespaces.get_mut(name) {
            Some(stored) => {
                *stored = config.clone();
                Ok(())
            }
            None => Err(StoreError::NamespaceNotFound(name.clone())),
        }
    }

    async fn get_namespace(&self, name: &Namespace) -> StoreResult<Option<NamespaceConfig>> {
        Ok(self.lock().namespaces.get(name).cloned())
    }

    async fn list_namespaces(&self) -> StoreResult<Vec<(Namespace, NamespaceConfig)>> {
        Ok(self.lock().namespaces.iter().map(|(n, c)| (n.clone(), c.clone())).collect())
    }

    async fn delete_namespace(&self, name: &Namespace) -> StoreResult<bool> {
        let mut inner = self.lock();
        inner.events.retain(|k, _| &k.namespace != name);
        inner.tokens.retain(|(k, _), _| &k.namespace != name);
        inner.states.retain(|k, _| &k.namespace != name);
        Ok(inner.namespaces.remove(name).is_some())
    }
}
