//! [`TimedStore`]: the store as the engine sees it, with every call's latency recorded in
//! `tally_store_seconds{operation}`. Each call is passed through unchanged, including the
//! store's own batch and exclusivity answers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tally_core::{Checkpoint, CounterKey, Event, Fold, Namespace, NamespaceConfig, Timestamp};
use tally_store::{
    Appended, BatchAppend, CounterState, CounterStore, EventCursor, EventLog, NamespaceStore, Store,
    StoreResult, Stored,
};

/// A store whose calls are timed.
pub struct TimedStore {
    inner: Arc<dyn Store>,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner }
    }
}

async fn timed<T>(operation: &'static str, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!("tally_store_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    result
}

#[async_trait]
impl EventLog for TimedStore {
    async fn append(&self, event: &Event, deadline: Timestamp, window: Duration) -> StoreResult<Appended> {
        timed("append", self.inner.append(event, deadline, window)).await
    }

    async fn find_token(&self, key: &CounterKey, token: &str) -> StoreResult<Option<Stored>> {
        timed("find_token", self.inner.find_token(key, token)).await
    }

    async fn append_new(&self, event: &Event, deadline: Timestamp) -> StoreResult<Appended> {
        timed("append_new", self.inner.append_new(event, deadline)).await
    }

    async fn append_batch(&self, appends: &[BatchAppend]) -> Vec<StoreResult<Appended>> {
        timed("append_batch", self.inner.append_batch(appends)).await
    }

    fn exclusive(&self) -> bool {
        self.inner.exclusive()
    }

    fn stopped(&self) -> Option<String> {
        self.inner.stopped()
    }

    async fn fold(&self, key: &CounterKey, from: Timestamp, until: Timestamp) -> StoreResult<Fold> {
        timed("fold", self.inner.fold(key, from, until)).await
    }

    async fn list_events(
        &self,
        key: &CounterKey,
        from: Timestamp,
        until: Timestamp,
        after: Option<&EventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        timed("list_events", self.inner.list_events(key, from, until, after, limit)).await
    }

    async fn delete_events_before(
        &self,
        key: &CounterKey,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<usize> {
        timed("delete_events_before", self.inner.delete_events_before(key, before, limit)).await
    }

    fn reclaims_whole_slices(&self) -> bool {
        self.inner.reclaims_whole_slices()
    }

    async fn drop_slices_before(&self, before: Timestamp) -> StoreResult<usize> {
        timed("drop_slices_before", self.inner.drop_slices_before(before)).await
    }
}

#[async_trait]
impl CounterStore for TimedStore {
    async fn counter_state(&self, key: &CounterKey) -> StoreResult<CounterState> {
        timed("counter_state", self.inner.counter_state(key)).await
    }

    async fn checkpoint(&self, key: &CounterKey) -> StoreResult<Option<Checkpoint>> {
        timed("checkpoint", self.inner.checkpoint(key)).await
    }

    fn approximate_counters(&self) -> Option<u64> {
        self.inner.approximate_counters()
    }

    async fn put_checkpoint(&self, key: &CounterKey, checkpoint: Checkpoint) -> StoreResult<Checkpoint> {
        timed("put_checkpoint", self.inner.put_checkpoint(key, checkpoint)).await
    }

    async fn put_checkpoints(
        &self,
        checkpoints: &[(CounterKey, Checkpoint)],
    ) -> Vec<StoreResult<Checkpoint>> {
        timed("put_checkpoints", self.inner.put_checkpoints(checkpoints)).await
    }

    async fn scan_counters(
        &self,
        namespace: Option<&Namespace>,
        after: Option<&CounterKey>,
        limit: usize,
    ) -> StoreResult<Vec<(CounterKey, CounterState)>> {
        timed("scan_counters", self.inner.scan_counters(namespace, after, limit)).await
    }
}

#[async_trait]
impl NamespaceStore for TimedStore {
    async fn create_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()> {
        timed("create_namespace", self.inner.create_namespace(name, config)).await
    }

    async fn update_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()> {
        timed("update_namespace", self.inner.update_namespace(name, config)).await
    }

    async fn get_namespace(&self, name: &Namespace) -> StoreResult<Option<NamespaceConfig>> {
        timed("get_namespace", self.inner.get_namespace(name)).await
    }

    async fn list_namespaces(&self) -> StoreResult<Vec<(Namespace, NamespaceConfig)>> {
        timed("list_namespaces", self.inner.list_namespaces()).await
    }

    async fn delete_namespace(&self, name: &Namespace) -> StoreResult<bool> {
        timed("delete_namespace", self.inner.delete_namespace(name)).await
    }
}
