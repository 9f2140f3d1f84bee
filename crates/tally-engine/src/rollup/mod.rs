//! The rollup pipeline: folding events into checkpoints in the background.
//!
//! `trigger` → [`queue`] (one of N, chosen by an xxh3 hash of the counter) → a worker takes
//! due counters in batches and paces itself ([`pacer`]) → each rollup folds the events
//! between the checkpoint and the immutable window end `now - accept_limit - clock_skew` into
//! a new checkpoint: from memory where the local tail holds them (the batch's checkpoints in
//! one store request), else through the store with bounded parallelism, refreshing the cache
//! → the counter is queued again while it has events at or after its checkpoint.
//!
//! Triggers live in memory, but whether a counter needs a rollup is also written in the store
//! (its `last_write` against its checkpoint), so [`RollupPipeline::recover_pending`] re-arms
//! every trigger a crash or a full queue lost. Concurrent rollups of one counter, here or on
//! another instance, are safe: both fold the same immutable window, and the store keeps the
//! newer checkpoint.

pub mod pacer;
pub mod queue;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tally_core::{Checkpoint, Clock, CounterKey, Fold, NamespaceConfig, Timestamp};
use tally_store::{CounterState, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::CheckpointCache;
use crate::error::EngineResult;
use crate::log_limit::LogLimit;
use crate::namespaces::NamespaceRegistry;
use crate::tail::{Plan, Tails};
use pacer::Pacer;
use queue::{CoalescingQueue, Pushed};

/// Counters read per page when scanning the store for pending rollups.
const SCAN_PAGE: usize = 1_000;
/// The longest a worker sleeps before looking at its queue again.
const MAX_IDLE_WAIT: Duration = Duration::from_secs(1);
/// The shortest a worker sleeps once nothing in its queue is due: under load the counters
/// come due one after another, and a worker that woke for each rolled up one or two at a
/// time, each batch with its own durable sync and wake-ups. Rollups wait up to this much
/// longer, far inside the convergence bound.
const MIN_IDLE_WAIT: Duration = Duration::from_millis(10);

/// What one rollup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolledUp {
    /// Nothing to fold: every event is in the checkpoint already.
    CaughtUp,
    /// The checkpoint moved (or another rollup moved it further); `requeued` tells whether
    /// events remain at or after it.
    Advanced {
        /// The checkpoint stored afterwards.
        checkpoint: Checkpoint,
        /// Whether the counter was queued again.
        requeued: bool,
    },
    /// The namespace is gone or does not keep events.
    Skipped,
}

/// A hash of the counter that spreads counters over this process's queues and lock stripes
/// (not over instances: that is `routing`'s, which must stay stable across versions).
pub(crate) fn key_hash(key: &CounterKey) -> u64 {
    // The namespace's hash seeds the name's: ("ab", "c") and ("a", "bc") differ. Two one-shot
    // hashes, several times cheaper than the streaming hasher on short names.
    xxhash_rust::xxh3::xxh3_64_with_seed(key.counter.as_str().as_bytes(), namespace_hash(&key.namespace))
}

/// The namespace's part of [`key_hash`] (and of the tail's retired keys).
pub(crate) fn namespace_hash(namespace: &tally_core::Namespace) -> u64 {
    xxhash_rust::xxh3::xxh3_64(namespace.as_str().as_bytes())
}

/// The earliest time a rollup's window includes an event generated at `t`.
pub fn first_foldable(t: Timestamp, config: &tally_core::NamespaceConfig) -> Timestamp {
    t.saturating_add(config.immutable_after()).saturating_add(Duration::from_micros(1))
}

/// The queues, their workers and the rollup step.
pub struct RollupPipeline {
    queues: Vec<CoalescingQueue>,
    wakeups: Vec<tokio::sync::Notify>,
    store: Arc<dyn Store>,
    tails: Arc<Tails>,
    cache: Arc<dyn CheckpointCache>,
    clock: Arc<dyn Clock>,
    namespaces: Arc<NamespaceRegistry>,
    batch: usize,
    target_batch_time: Duration,
    /// Failed rollups are logged at most once per 10 s: a store that is down fails them all.
    failures_logged: LogLimit,
}

impl RollupPipeline {
    /// A pipeline with `queues` queues of `capacity` counters, rolling up `batch` at a time.
    #[expect(clippy::too_many_arguments, reason = "wiring constructor called once by the engine")]
    pub(crate) fn new(
        store: Arc<dyn Store>,
        tails: Arc<Tails>,
        cache: Arc<dyn CheckpointCache>,
        clock: Arc<dyn Clock>,
        namespaces: Arc<NamespaceRegistry>,
        queues: usize,
        capacity: usize,
        batch: usize,
        target_batch_time: Duration,
    ) -> Self {
        let queues = queues.max(1);
        Self {
            queues: (0..queues).map(|_| CoalescingQueue::new(capacity)).collect(),
            wakeups: (0..queues).map(|_| tokio::sync::Notify::new()).collect(),
            store,
            tails,
            cache,
            clock,
            namespaces,
            batch: batch.max(1),
            target_batch_time,
            failures_logged: LogLimit::new(Duration::from_secs(10)),
        }
    }

    fn queue_of(&self, key: &CounterKey) -> usize {
        (key_hash(key) % self.queues.len() as u64) as usize
    }

    /// Asks for a rollup of `key` no earlier than `due`. Fire-and-forget: never fails, and
    /// says what became of the trigger.
    pub fn trigger(&self, key: &CounterKey, due: Timestamp) -> Pushed {
        let q = self.queue_of(key);
        let pushed = self.queues[q].push(key, due);
        match pushed {
            // A worker sleeps until its queue's earliest due time: a later trigger needs no
            // wake-up (every add to a new counter queues one, due a window later).
            Pushed::Queued { earliest: true } => self.wakeups[q].notify_one(),
            Pushed::Queued { earliest: false } | Pushed::Coalesced => {}
            Pushed::Dropped => metrics::counter!("tally_rollup_triggers_dropped_total").increment(1),
        }
        pushed
    }

    /// Counters waiting in all queues.
    pub fn depth(&self) -> usize {
        self.queues.iter().map(CoalescingQueue::len).sum()
    }

    /// Rolls up one counter now and re-queues it if events remain at or after its checkpoint.
    pub async fn roll_up(&self, key: &CounterKey) -> EngineResult<RolledUp> {
        match self.step(key).await? {
            Step::Done(outcome) => Ok(outcome),
            Step::InMemory(plan) => {
                let stored = match plan.checkpoint() {
                    Some(checkpoint) => self.store.put_checkpoint(key, checkpoint).await?,
                    None => plan.base,
                };
                Ok(self.settle_in_memory(&plan, stored))
            }
            Step::ThroughStore { config, now } => self.roll_up_through_store(key, &config, now).await,
        }
    }

    /// How the rollup of `key` goes: decided from memory where it can be. A counter memory met
    /// with its first event reads its stored checkpoint first (one point read, nearly always
    /// answered by the store's filters for a new counter), so it rolls up from memory too.
    async fn step(&self, key: &CounterKey) -> EngineResult<Step> {
        let config = match self.namespaces.get(&key.namespace).await {
            Ok(config) if config.counter_type.is_durable() => config,
            Ok(_) | Err(crate::EngineError::NamespaceNotFound(_)) => {
                return Ok(Step::Done(RolledUp::Skipped));
            }
            Err(e) => return Err(e),
        };
        let now = self.clock.now();
        let window_end = now.saturating_sub(config.immutable_after());
        loop {
            match self.tails.plan(key, window_end) {
                Plan::Uncertain => return Ok(Step::ThroughStore { config, now }),
                Plan::Nothing => return Ok(Step::Done(RolledUp::CaughtUp)),
                Plan::NeedCheckpoint => {
                    let checkpoint = self.store.checkpoint(key).await?.unwrap_or(Checkpoint::ZERO);
                    self.tails.set_checkpoint(key, checkpoint);
                }
                Plan::Fold { base, fold, until } => {
                    return Ok(Step::InMemory(InMemory { key: key.clone(), config, base, fold, until }));
                }
            }
        }
    }

    /// The rollup of a counter memory cannot fold: its state and events read from the store.
    async fn roll_up_through_store(
        &self,
        key: &CounterKey,
        config: &NamespaceConfig,
        now: Timestamp,
    ) -> EngineResult<RolledUp> {
        let window_end = now.saturating_sub(config.immutable_after());
        let state = self.store.counter_state(key).await?;
        let current = state.checkpoint.unwrap_or(Checkpoint::ZERO);
        if !state.has_unfolded_events() {
            self.cache.put(key, current, now, config.cache_ttl).await;
            self.tails.folded(key, Checkpoint { until: current.until.max(window_end), ..current });
            return Ok(RolledUp::CaughtUp);
        }
        let mut stored = current;
        let mut folded = 0;
        if window_end > current.until {
            let fold = self.store.fold(key, current.until, window_end).await?;
            if fold.overflowed(current.count) {
                metrics::counter!("tally_count_saturated_total").increment(1);
                tracing::warn!(counter = %key, "count left the signed 64-bit range and was saturated");
            }
            // An empty window changes nothing but `until`: not worth a durable write (the next
            // fold simply starts from the older checkpoint), unless it covers the counter's last
            // write. Then nothing is left to fold, and only a checkpoint past `last_write` says
            // so: a `last_write` whose event never landed (a store that writes it first, whose
            // event write then failed) would otherwise queue this counter again forever, and
            // its `as_of` would stop moving.
            let covers_last_write = state.last_write.is_some_and(|last| last < window_end);
            if fold.events > 0 || covers_last_write {
                stored = self.store.put_checkpoint(key, current.advance(&fold, window_end)).await?;
                debug_assert!(
                    stored.until >= window_end,
                    "the store kept a checkpoint older than the one just put"
                );
                self.cache.put(key, stored, now, config.cache_ttl).await;
            }
            // Memory learns the count at the window's end: the store holds nothing more before
            // it, and nothing can arrive there any more. After the cache, so that a read that
            // finds memory empty finds this checkpoint.
            self.tails.folded(key, Checkpoint { until: stored.until.max(window_end), ..stored });
            folded = fold.events;
            metrics::counter!("tally_rollup_events_folded_total").increment(fold.events);
        }
        if stored.until > Timestamp::MIN {
            metrics::histogram!("tally_checkpoint_age_seconds")
                .record(now.duration_since(stored.until).as_secs_f64());
        }
        let requeued = match state.last_write {
            Some(last) if last >= stored.until => {
                // Events were folded: more may follow, so come back after `coalesce`. Nothing
                // was: the next event to fold is at most `last`, so come back once the window
                // has passed it.
                let next = now.saturating_add(config.coalesce);
                let due = if folded > 0 { next } else { next.max(first_foldable(last, config)) };
                self.trigger(key, due);
                true
            }
            _ => false,
        };
        Ok(RolledUp::Advanced { checkpoint: stored, requeued })
    }

    /// Rolls up counters whose unfolded events are all in memory: no store read, and the new
    /// checkpoints of the whole batch in one store request (one group commit on the embedded
    /// store, instead of a request, a reply and a wake-up for each counter).
    async fn roll_up_in_memory(&self, plans: Vec<InMemory>) -> Outcomes {
        let mut outcomes = Outcomes::default();
        let checkpoints: Vec<Option<Checkpoint>> = plans.iter().map(InMemory::checkpoint).collect();
        let writes: Vec<(CounterKey, Checkpoint)> = plans
            .iter()
            .zip(&checkpoints)
            .filter_map(|(plan, cp)| Some((plan.key.clone(), (*cp)?)))
            .collect();
        let mut stored = self.store.put_checkpoints(&writes).await.into_iter();
        debug_assert_eq!(stored.len(), writes.len(), "the store answers each checkpoint");
        for (plan, checkpoint) in plans.into_iter().zip(checkpoints) {
            let result = match checkpoint {
                Some(_) => stored.next().unwrap_or_else(|| {
                    Err(tally_store::StoreError::Unavailable(
                        "the store answered fewer checkpoints than it was sent".into(),
                    ))
                }),
                None => Ok(plan.base),
            };
            match result {
                Ok(checkpoint) => {
                    self.settle_in_memory(&plan, checkpoint);
                    outcomes.advanced += 1;
                }
                Err(e) => {
                    self.failed(&plan.key, &e.into());
                    outcomes.failed += 1;
                }
            }
        }
        outcomes
    }

    /// After a rollup from memory stored `stored` (or found nothing to fold onto it): records
    /// it, lets memory drop what it covers and queues the counter for what memory still holds.
    fn settle_in_memory(&self, plan: &InMemory, stored: Checkpoint) -> RolledUp {
        debug_assert!(stored.until >= plan.base.until, "a checkpoint never moves backwards");
        let now = self.clock.now();
        if plan.fold.events > 0 {
            debug_assert!(
                stored.until >= plan.until,
                "the store kept a checkpoint older than the one just put"
            );
            if plan.fold.overflowed(plan.base.count) {
                metrics::counter!("tally_count_saturated_total").increment(1);
                tracing::warn!(counter = %plan.key, "count left the signed 64-bit range and was saturated");
            }
            metrics::counter!("tally_rollup_events_folded_total").increment(plan.fold.events);
            metrics::histogram!("tally_checkpoint_age_seconds")
                .record(now.duration_since(stored.until).as_secs_f64());
        }
        // Memory keeps the stored checkpoint of a counter it empties (with a local tail the
        // engine reads no cache). What it still holds is folded in one go, once the newest of
        // it is foldable: coming back as soon as the oldest is, a counter written steadily
        // was rolled up every `coalesce`, an event or two at a time (1,300,000 rollups for
        // 3,000,000 adds to 100,000 counters, 350,000 this way; BENCHMARKS.md). Memory holds
        // up to `immutable_after` more of its events; the last write of a counter is still
        // folded `immutable_after` after it, within the convergence bound.
        let requeued = match self.tails.folded(&plan.key, stored) {
            Some(newest) => {
                let next = now.saturating_add(plan.config.coalesce);
                self.trigger(&plan.key, next.max(first_foldable(newest, &plan.config)));
                true
            }
            None => false,
        };
        RolledUp::Advanced { checkpoint: stored, requeued }
    }

    /// A failed rollup: logged (at most once per 10 s) and tried again after a pause; the
    /// counter's events are durable.
    fn failed(&self, key: &CounterKey, error: &crate::EngineError) {
        if let Some(left_out) = self.failures_logged.check() {
            tracing::warn!(counter = %key, error = %error, left_out, "rollup failed; retrying later (left_out: failures not logged since the last line)");
        }
        self.trigger(key, self.clock.now().saturating_add(Duration::from_secs(1)));
    }

    /// [`RollupPipeline::roll_up_through_store`], its failure logged and retried.
    async fn through_store_logged(
        &self,
        key: CounterKey,
        config: Arc<NamespaceConfig>,
        now: Timestamp,
    ) -> Outcomes {
        let mut outcomes = Outcomes::default();
        match self.roll_up_through_store(&key, &config, now).await {
            Ok(outcome) => outcomes.add(outcome),
            Err(e) => {
                self.failed(&key, &e);
                outcomes.failed += 1;
            }
        }
        outcomes
    }

    /// Rolls up a batch; records how late each counter was taken (`tally_rollup_lag_seconds`).
    async fn run_batch(&self, due: Vec<(Timestamp, CounterKey)>) {
        let now = self.clock.now();
        let lag = metrics::histogram!("tally_rollup_lag_seconds");
        due.iter().for_each(|(at, _)| lag.record(now.duration_since(*at).as_secs_f64()));
        let mut outcomes = Outcomes::default();
        let (mut in_memory, mut through_store) = (Vec::new(), Vec::new());
        for (_, key) in due {
            match self.step(&key).await {
                Ok(Step::Done(outcome)) => outcomes.add(outcome),
                Ok(Step::InMemory(plan)) => in_memory.push(plan),
                Ok(Step::ThroughStore { config, now }) => through_store.push((key, config, now)),
                Err(e) => {
                    self.failed(&key, &e);
                    outcomes.failed += 1;
                }
            }
        }
        let from_store = futures::stream::iter(through_store)
            .map(|(key, config, now)| self.through_store_logged(key, config, now))
            .buffer_unordered(self.batch)
            .fold(Outcomes::default(), |all, one| async move { all.plus(one) });
        let (from_memory, from_store) = futures::join!(self.roll_up_in_memory(in_memory), from_store);
        outcomes.plus(from_memory).plus(from_store).record();
    }

    /// Rolls up every counter that is due now, in all queues, and returns how many rollups ran.
    /// Counters re-queued for later are left queued. For tests and for shutdown.
    pub async fn run_due(&self) -> usize {
        let mut ran = 0;
        for queue in &self.queues {
            loop {
                let keys = queue.take_due(self.clock.now(), self.batch);
                if keys.is_empty() {
                    break;
                }
                ran += keys.len();
                self.run_batch(keys).await;
            }
        }
        ran
    }

    /// Scans the store for counters with events not yet folded and triggers them now.
    /// Returns how many it found.
    pub async fn recover_pending(&self) -> EngineResult<usize> {
        self.scan_states(|key, state| {
            if state.has_unfolded_events() {
                self.trigger(key, self.clock.now());
            }
        })
        .await
    }

    /// Visits every counter the store knows, page by page; returns how many have unfolded
    /// events.
    pub(crate) async fn scan_states(
        &self,
        mut visit: impl FnMut(&CounterKey, &CounterState),
    ) -> EngineResult<usize> {
        let (mut after, mut found) = (None::<CounterKey>, 0);
        loop {
            let page = self.store.scan_counters(None, after.as_ref(), SCAN_PAGE).await?;
            for (key, state) in &page {
                found += usize::from(state.has_unfolded_events());
                visit(key, state);
            }
            match page.last() {
                Some((last, _)) if page.len() == SCAN_PAGE => after = Some(last.clone()),
                _ => return Ok(found),
            }
        }
    }

    /// Spawns one worker per queue; they stop after their current batch once `shutdown` fires.
    pub(crate) fn spawn_workers(self: &Arc<Self>, tracker: &TaskTracker, shutdown: &CancellationToken) {
        for q in 0..self.queues.len() {
            let (pipeline, shutdown) = (self.clone(), shutdown.clone());
            tracker.spawn(async move { pipeline.work(q, shutdown).await });
        }
    }

    async fn work(&self, q: usize, shutdown: CancellationToken) {
        let mut pacer = Pacer::new(self.target_batch_time);
        let queue_label = q.to_string();
        while !shutdown.is_cancelled() {
            let now = self.clock.now();
            let keys = self.queues[q].take_due(now, self.batch);
            metrics::gauge!("tally_rollup_queue_depth", "queue" => queue_label.clone())
                .set(self.queues[q].len() as f64);
            if keys.is_empty() {
                let wait = self.queues[q].next_due().map_or(MAX_IDLE_WAIT, |due| due.duration_since(now));
                tokio::select! {
                    () = self.wakeups[q].notified() => {}
                    () = tokio::time::sleep(wait.clamp(MIN_IDLE_WAIT, MAX_IDLE_WAIT)) => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            }
            let started = Instant::now();
            self.run_batch(keys).await;
            let pause = pacer.after_batch(started.elapsed());
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
    }
}

/// A rollup of a counter whose unfolded events are all in memory, planned.
struct InMemory {
    key: CounterKey,
    config: Arc<NamespaceConfig>,
    base: Checkpoint,
    fold: Fold,
    until: Timestamp,
}

impl InMemory {
    /// The checkpoint to store, if the fold has events (an empty one changes only `until`,
    /// which memory keeps; see `Tails::folded`).
    fn checkpoint(&self) -> Option<Checkpoint> {
        (self.fold.events > 0).then(|| self.base.advance(&self.fold, self.until))
    }
}

/// How one counter of a batch is rolled up.
enum Step {
    /// Nothing to write.
    Done(RolledUp),
    /// From memory, with the batch's other such counters.
    InMemory(InMemory),
    /// Alone, through the store ([`RollupPipeline::roll_up_through_store`]), at `now`.
    ThroughStore { config: Arc<NamespaceConfig>, now: Timestamp },
}

/// How many rollups of a batch ended how (`tally_rollups_total{outcome}`), recorded once per
/// batch.
#[derive(Debug, Default, Clone, Copy)]
struct Outcomes {
    caught_up: u64,
    advanced: u64,
    skipped: u64,
    failed: u64,
}

impl Outcomes {
    fn add(&mut self, outcome: RolledUp) {
        match outcome {
            RolledUp::CaughtUp => self.caught_up += 1,
            RolledUp::Advanced { .. } => self.advanced += 1,
            RolledUp::Skipped => self.skipped += 1,
        }
    }

    fn plus(self, other: Self) -> Self {
        Self {
            caught_up: self.caught_up + other.caught_up,
            advanced: self.advanced + other.advanced,
            skipped: self.skipped + other.skipped,
            failed: self.failed + other.failed,
        }
    }

    fn record(self) {
        for (label, count) in [
            ("caught_up", self.caught_up),
            ("advanced", self.advanced),
            ("skipped", self.skipped),
            ("failed", self.failed),
        ] {
            if count > 0 {
                metrics::counter!("tally_rollups_total", "outcome" => label).increment(count);
            }
        }
    }
}
