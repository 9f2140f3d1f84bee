//! [`FaultyStore`]: a store wrapper that injects faults, for tests of what the layers above do
//! when the store is slow or failing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tally_core::{Checkpoint, CounterKey, Event, Fold, Namespace, NamespaceConfig, Timestamp};
use tokio::sync::Semaphore;

use crate::{
    Appended, CounterState, CounterStore, EventCursor, EventLog, NamespaceStore, Store, StoreError,
    StoreResult, Stored,
};

/// Wraps a store. Appends can be held (they wait until released, as on a store slower than
/// the load) or failed (`Unavailable`, as after a failed sync or a full disk, writing nothing;
/// or after writing, as when the answer is lost). Checkpoints can be failed too
/// (`fail_checkpoints`).
/// It can also pose as a store that reclaims whole time slices (`reclaim_by_slices`), as the
/// Cassandra store does, recording each bound retention asks to drop before.
/// Everything else passes through.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    held: AtomicBool,
    gate: Semaphore,
    waiting: AtomicUsize,
    failing: AtomicBool,
    /// Take tokens, then fail before writing the event (`take_tokens_then_fail`).
    half_failing: AtomicBool,
    /// Write the event, then answer `Unavailable` (`fail_after_writing`).
    failing_after: AtomicBool,
    /// The tokens taken that way, with the mutation each holds.
    orphans: std::sync::Mutex<std::collections::HashMap<(CounterKey, String), Stored>>,
    /// `fold` calls so far.
    folds: AtomicUsize,
    /// Whether the store says it can no longer write (`stop_writer`).
    stopped: AtomicBool,
    /// Whether checkpoints fail to be written (`fail_checkpoints`).
    failing_checkpoints: AtomicBool,
    /// Whether it reclaims by slices (`reclaim_by_slices`), and the bounds asked for so far.
    by_slices: AtomicBool,
    slice_drops: std::sync::Mutex<Vec<Timestamp>>,
}

impl FaultyStore {
    /// A wrapper that injects nothing yet.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            held: AtomicBool::new(false),
            gate: Semaphore::new(0),
            waiting: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            half_failing: AtomicBool::new(false),
            failing_after: AtomicBool::new(false),
            orphans: Default::default(),
            folds: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            failing_checkpoints: AtomicBool::new(false),
            by_slices: AtomicBool::new(false),
            slice_drops: Default::default(),
        }
    }

    /// From now on the store says it reclaims whole time slices: retention asks it once per
    /// pass to drop everything before one bound ([`EventLog::drop_slices_before`]), which it
    /// records ([`FaultyStore::slice_drops`]) and carries out by deleting every counter's events
    /// before the bound, as dropping the slices would.
    pub fn reclaim_by_slices(&self) {
        self.by_slices.store(true, Ordering::SeqCst);
    }

    /// The bounds retention asked to drop slices before, in order.
    pub fn slice_drops(&self) -> Vec<Timestamp> {
        self.slice_drops.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// From now on the store reports that it can no longer write ([`EventLog::stopped`]), as
    /// the embedded store does once its writer thread has stopped.
    pub fn stop_writer(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// How many times the events were folded (scanned) through this store.
    pub fn folds(&self) -> usize {
        self.folds.load(Ordering::SeqCst)
    }

    /// Whether an append of a client's token takes the token and then fails with
    /// `Unavailable` before its event is written, as a Cassandra append can (the token is a
    /// lightweight transaction, the event a second write). Later appends of such a token
    /// answer as Cassandra does: within the event's deadline they write it on the first
    /// append's behalf and answer `Duplicate`; past it they are refused `DeadlinePassed`.
    pub fn take_tokens_then_fail(&self, failing: bool) {
        self.half_failing.store(failing, Ordering::SeqCst);
    }

    /// Whether appends write their event and then fail with `Unavailable` anyway, as when a
    /// sync succeeded but its answer was lost (a timeout, a broken connection to the node):
    /// the client cannot tell this from a failure that wrote nothing, and retries.
    pub fn fail_after_writing(&self, failing: bool) {
        self.failing_after.store(failing, Ordering::SeqCst);
    }

    /// The answer of an append that `inner` answered with `written`.
    fn answer(&self, written: StoreResult<Appended>) -> StoreResult<Appended> {
        match written {
            Ok(_) if self.failing_after.load(Ordering::SeqCst) => {
                Err(StoreError::Unavailable("injected: written, then the answer was lost".into()))
            }
            other => other,
        }
    }

    fn orphans(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(CounterKey, String), Stored>> {
        self.orphans.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// From now on, appends wait until [`FaultyStore::release`].
    pub fn hold_appends(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    /// Lets every held append (and later ones) through.
    pub fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Appends waiting behind [`FaultyStore::hold_appends`].
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Whether checkpoints fail with `Unavailable` without being written.
    pub fn fail_checkpoints(&self, failing: bool) {
        self.failing_checkpoints.store(failing, Ordering::SeqCst);
    }

    fn checkpoint_fault(&self) -> StoreResult<()> {
        match self.failing_checkpoints.load(Ordering::SeqCst) {
            true => Err(StoreError::Unavailable("injected: checkpoint not written".into())),
            false => Ok(()),
        }
    }

    /// Whether appends fail with `Unavailable` without writing.
    pub fn fail_appends(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[async_trait]
impl EventLog for FaultyStore {
    fn exclusive(&self) -> bool {
        self.inner.exclusive()
    }

    fn stopped(&self) -> Option<String> {
        self.stopped.load(Ordering::SeqCst).then(|| "injected: the writer has stopped".to_owned())
    }

    async fn append(&self, event: &Event, deadline: Timestamp, window: Duration) -> StoreResult<Appended> {
        self.inject().await?;
        let slot = (event.key.clone(), event.token.token().to_owned());
        let orphan = self.orphans().get(&slot).copied();
        if let Some(stored) = orphan {
            let answer = Appended::judge(event, stored)?;
            let (original, deadline) = stored.original(event, deadline)?;
            self.inner.append(&original, deadline, window).await?;
            self.orphans().remove(&slot);
            return Ok(answer);
        }
        if self.half_failing.load(Ordering::SeqCst) {
            let stored = Stored { generation_time: event.token.generation_time(), kind: event.kind };
            self.orphans().insert(slot, stored);
            return Err(StoreError::Unavailable(
                "injected: the token was taken, the event not written".into(),
            ));
        }
        let written = self.inner.append(event, deadline, window).await;
        self.answer(written)
    }

    async fn append_new(&self, event: &Event, deadline: Timestamp) -> StoreResult<Appended> {
        self.inject().await?;
        let written = self.inner.append_new(event, deadline).await;
        self.answer(written)
    }

    async fn find_token(&self, key: &CounterKey, token: &str) -> StoreResult<Option<Stored>> {
        if let Some(stored) = self.orphans().get(&(key.clone(), token.to_owned())) {
            return Ok(Some(*stored));
        }
        self.inner.find_token(key, token).await
    }

    async fn fold(&self, key: &CounterKey, from: Timestamp, until: Timestamp) -> StoreResult<Fold> {
        self.folds.fetch_add(1, Ordering::SeqCst);
        self.inner.fold(key, from, until).await
    }

    async fn list_events(
        &self,
        key: &CounterKey,
        from: Timestamp,
        until: Timestamp,
        after: Option<&EventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        self.inner.list_events(key, from, until, after, limit).await
    }

    async fn delete_events_before(
        &self,
        key: &CounterKey,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<usize> {
        self.inner.delete_events_before(key, before, limit).await
    }

    fn reclaims_whole_slices(&self) -> bool {
        self.by_slices.load(Ordering::SeqCst) || self.inner.reclaims_whole_slices()
    }

    async fn drop_slices_before(&self, before: Timestamp) -> StoreResult<usize> {
        if !self.by_slices.load(Ordering::SeqCst) {
            return self.inner.drop_slices_before(before).await;
        }
        if let Ok(mut drops) = self.slice_drops.lock() {
            drops.push(before);
        }
        let (mut deleted, mut after) = (0usize, None::<CounterKey>);
        loop {
            let page = self.inner.scan_counters(None, after.as_ref(), 1_000).await?;
            for (key, _) in &page {
                deleted += self.inner.delete_events_before(key, before, usize::MAX).await?;
            }
            match page.last() {
                Some((last, _)) if page.len() == 1_000 => after = Some(last.clone()),
                _ => break,
            }
        }
        // One slice, if it held anything.
        Ok(usize::from(deleted > 0))
    }
}

impl FaultyStore {
    /// What every append goes through first: the hold, then the failure.
    async fn inject(&self) -> StoreResult<()> {
        if self.held.load(Ordering::SeqCst) {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let permit = self.gate.acquire().await;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: the sync failed (disk full)".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl CounterStore for FaultyStore {
    async fn counter_state(&self, key: &CounterKey) -> StoreResult<CounterState> {
        self.inner.counter_state(key).await
    }

    async fn put_checkpoint(&self, key: &CounterKey, checkpoint: Checkpoint) -> StoreResult<Checkpoint> {
        self.checkpoint_fault()?;
        self.inner.put_checkpoint(key, checkpoint).await
    }

    async fn put_checkpoints(
        &self,
        checkpoints: &[(CounterKey, Checkpoint)],
    ) -> Vec<StoreResult<Checkpoint>> {
        match self.checkpoint_fault() {
            Ok(()) => self.inner.put_checkpoints(checkpoints).await,
            Err(e) => vec![Err(e); checkpoints.len()],
        }
    }

    async fn scan_counters(
        &self,
        namespace: Option<&Namespace>,
        after: Option<&CounterKey>,
        limit: usize,
    ) -> StoreResult<Vec<(CounterKey, CounterState)>> {
        self.inner.scan_counters(namespace, after, limit).await
    }
}

#[async_trait]
impl NamespaceStore for FaultyStore {
    async fn create_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()> {
        self.inner.create_namespace(name, config).await
    }

    async fn update_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()> {
        self.inner.update_namespace(name, config).await
    }

    async fn get_namespace(&self, name: &Namespace) -> StoreResult<Option<NamespaceConfig>> {
        self.inner.get_namespace(name).await
    }

    async fn list_namespaces(&self) -> StoreResult<Vec<(Namespace, NamespaceConfig)>> {
        self.inner.list_namespaces().await
    }

    async fn delete_namespace(&self, name: &Namespace) -> StoreResult<bool> {
        self.inner.delete_namespace(name).await
    }
}
