//! The engine: the four counter operations and the namespace control plane.
//!
//! [`batch`]: adds that arrive together (`BatchAddCount`, a Redis pipeline).

mod audit;
mod batch;
mod series;

pub use audit::{EventPage, ListedEvent, MAX_EVENTS_PAGE, Recount};
pub use batch::BatchAdd;
pub use series::{Bucket, MAX_SERIES_BUCKETS, MAX_SERIES_EVENTS, Series, SeriesRange};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tally_core::{
    Checkpoint, Clock, CounterKey, CounterName, CounterType, Event, EventKind, Failure, IdempotencyToken,
    Namespace, NamespaceConfig, Timestamp, WindowError,
};
use tally_store::{Appended, IdentityCheck, Store, StoreError, StoreResult};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::best_effort::BestEffortTable;
use crate::cache::CheckpointCache;
use crate::error::{EngineError, EngineResult};
use crate::namespaces::NamespaceRegistry;
use crate::options::EngineOptions;
use crate::retention::{self, RetentionReport};
use crate::rollup::{RollupPipeline, first_foldable};
use crate::routing::{LocalTrigger, RollupRouter};
use crate::tail::{Begin, Finished, Lookup, Origin, Read, StoreCheck, TailMode, Tails};

/// How often expired `best_effort` counters are swept from memory.
const BEST_EFFORT_SWEEP: Duration = Duration::from_secs(10);
/// How long a retry waits before looking again at an append of its token that is in flight.
const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(1);

/// The answer to a mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutated {
    /// The token the mutation was stored under: the client's, or one the server made. `None`
    /// for `best_effort` counters, which keep no events.
    pub token: Option<IdempotencyToken>,
    /// `false` when the token had been applied already, so this request changed nothing.
    pub applied: bool,
}

/// Most counters one [`Engine::list_counters`] page holds.
pub const MAX_LIST_LIMIT: usize = 1_000;
/// Most counters one [`Engine::list_counters`] page reads from the store.
pub const LIST_SCAN_BUDGET: usize = 10_000;

/// A page of [`Engine::list_counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterPage {
    /// Names with their counts, in the store's order.
    pub counters: Vec<(CounterName, Count)>,
    /// Where the next page starts (exclusive); `None` once every counter was visited.
    pub next: Option<CounterName>,
}

/// A page of [`Engine::counter_names`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamePage {
    /// The names, in the store's order.
    pub names: Vec<CounterName>,
    /// Where the next page starts (exclusive); `None` once every counter was visited.
    pub next: Option<CounterName>,
}

/// The answer to a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// The count.
    pub value: i64,
    /// The namespace's counter type, which says how fresh `value` is.
    pub counter_type: CounterType,
    /// The count covers exactly the events generated before this time; `None` for a counter
    /// never rolled up.
    pub as_of: Option<Timestamp>,
}

/// The counter engine. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cache: Arc<dyn CheckpointCache>,
    namespaces: Arc<NamespaceRegistry>,
    best_effort: Arc<dyn BestEffortTable>,
    rollups: Arc<RollupPipeline>,
    /// Unfolded events in memory, on a store only this process writes.
    tails: Arc<Tails>,
    options: EngineOptions,
    /// Orders server-made tokens generated in the same microsecond.
    token_sequence: AtomicU64,
    /// Random bits drawn once at open, in every server-made token of this engine.
    token_salt: u64,
    /// Where rollup triggers go when a peer list is configured; local otherwise.
    router: OnceLock<Arc<dyn RollupRouter>>,
    /// Admission: one permit per counter operation in flight (`max_in_flight`).
    in_flight: Arc<Semaphore>,
}

/// A mutation the write window refused, with its event when it may be a retry (a client's
/// token generated too long ago).
struct Refused {
    event: Option<Event>,
    error: EngineError,
}

/// What memory decided about an event before its append.
enum Prepared {
    /// Append it, taking its token or not, then tell memory the outcome.
    Append(IdentityCheck),
    /// Append it taking its token; memory is full and does not track it.
    Untracked,
    /// Memory already holds it: this is the answer, and nothing is appended.
    Answered(Appended),
}

/// One admitted counter operation: its permit, held until it ends (see
/// [`Engine::operations_in_flight`]).
struct Admitted {
    _permit: OwnedSemaphorePermit,
}

/// The engine's background tasks; see [`Engine::start_background`].
pub struct Background {
    tracker: TaskTracker,
}

impl Background {
    /// Waits until every background task has stopped (after the shutdown token fired).
    pub async fn wait(self) {
        self.tracker.wait().await;
    }
}

impl Engine {
    /// Opens the engine over a store; creates the `default` namespace if it is missing.
    /// No background task runs until [`Engine::start_background`]. The engine takes its
    /// metric handles here: install a `metrics` recorder first, or store latencies
    /// (`tally_store_seconds`) go unrecorded.
    pub async fn open(
        store: Arc<dyn Store>,
        cache: Arc<dyn CheckpointCache>,
        best_effort: Arc<dyn BestEffortTable>,
        clock: Arc<dyn Clock>,
        options: EngineOptions,
    ) -> EngineResult<Self> {
        // Every store call's latency goes to `tally_store_seconds{operation}`.
        let store: Arc<dyn Store> = Arc::new(crate::timed::TimedStore::new(store));
        let namespaces = Arc::new(NamespaceRegistry::open(store.clone()).await?);
        let mode = match store.exclusive() {
            true => TailMode::Local { max_held: options.local_tail_max_events },
            false => TailMode::Off,
        };
        let tails = Arc::new(Tails::new(mode));
        let rollups = Arc::new(RollupPipeline::new(
            store.clone(),
            tails.clone(),
            cache.clone(),
            clock.clone(),
            namespaces.clone(),
            options.rollup_queues,
            options.rollup_queue_capacity,
            options.rollup_batch,
            options.rollup_target_batch_time,
        ));
        let inner = Inner {
            store,
            clock,
            cache,
            namespaces,
            best_effort,
            rollups,
            tails,
            token_sequence: AtomicU64::new(0),
            token_salt: random_salt()?,
            router: OnceLock::new(),
            in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            options,
        };
        let engine = Self { inner: Arc::new(inner) };
        engine.rebuild_tails().await?;
        Ok(engine)
    }

    /// On a store only this process writes, finds what an earlier process left unfolded: those
    /// counters are read and folded through the store until a rollup has folded it (their
    /// rollups are queued now), every other counter from memory.
    async fn rebuild_tails(&self) -> EngineResult<()> {
        let inner = &self.inner;
        if !inner.tails.enabled() {
            return Ok(());
        }
        let now = inner.clock.now();
        let pending = inner
            .rollups
            .scan_states(|key, state| {
                inner.tails.open_scan(key, state);
                if state.has_unfolded_events() {
                    inner.rollups.trigger(key, now);
                }
            })
            .await?;
        if pending > 0 {
            tracing::info!(counters = pending, "counters with unfolded events found at open; rollups queued");
        }
        Ok(())
    }

    /// Starts the rollup workers, the pending scan (which first re-arms the triggers of
    /// counters left unfolded by a crash), retention and the `best_effort` sweep. They stop
    /// when `shutdown` fires; wait for them with [`Background::wait`].
    pub fn start_background(&self, shutdown: CancellationToken) -> Background {
        let tracker = TaskTracker::new();
        let inner = &self.inner;
        inner.rollups.spawn_workers(&tracker, &shutdown);

        let engine = self.clone();
        let period = inner.options.pending_scan_interval;
        tracker.spawn(every(period, shutdown.clone(), move || {
            let engine = engine.clone();
            async move {
                metrics::gauge!("tally_local_tail_counters").set(engine.inner.tails.counters() as f64);
                metrics::gauge!("tally_local_tail_events").set(engine.inner.tails.events_held() as f64);
                if let Err(e) = engine.inner.namespaces.refresh().await {
                    tracing::warn!(error = %e, "namespace refresh failed");
                }
                match engine.inner.rollups.recover_pending().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(counters = n, "re-armed rollups of counters with unfolded events")
                    }
                    Err(e) => tracing::warn!(error = %e, "pending scan failed"),
                }
            }
        }));

        let engine = self.clone();
        tracker.spawn(every(inner.options.retention_interval, shutdown.clone(), move || {
            let engine = engine.clone();
            async move {
                match engine.run_retention().await {
                    Ok(r) if r.events_deleted > 0 => {
                        tracing::info!(deleted = r.events_deleted, "retention pass")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention pass failed"),
                }
            }
        }));

        let engine = self.clone();
        tracker.spawn(every(BEST_EFFORT_SWEEP, shutdown, move || {
            let engine = engine.clone();
            async move {
                engine.inner.best_effort.sweep(engine.inner.clock.now());
            }
        }));
        tracker.close();
        Background { tracker }
    }

    /// Counter operations admitted and not yet answered: read when metrics are scraped, where
    /// a gauge moved by every operation cost each two look-ups in the metrics registry.
    pub fn operations_in_flight(&self) -> usize {
        let limit = self.inner.options.max_in_flight.max(1);
        limit.saturating_sub(self.inner.in_flight.available_permits())
    }

    /// The engine's clock now: the generation time of a mutation whose client gave none.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The rollup pipeline, to drive it by hand in tests or inspect its depth.
    pub fn rollups(&self) -> &RollupPipeline {
        &self.inner.rollups
    }

    /// Runs one retention pass now.
    pub async fn run_retention(&self) -> EngineResult<RetentionReport> {
        let inner = &self.inner;
        retention::run(&inner.store, &inner.namespaces, &inner.rollups, &inner.clock).await
    }

    /// The stored checkpoint of a counter, read without triggering a rollup. For inspection.
    pub async fn stored_checkpoint(&self, key: &CounterKey) -> EngineResult<Option<Checkpoint>> {
        Ok(self.inner.store.counter_state(key).await?.checkpoint)
    }

    // ---- counters ----

    /// `AddCount`: adds `delta` to the counter.
    ///
    /// With a token, a retry of it within the namespace's `idempotency_window` changes nothing
    /// and answers `applied: false`, whatever generation time it carries; the answer's token
    /// carries the generation time the first arrival fixed. Without one, the server makes a
    /// token, and a retry adds again.
    pub async fn add_count(
        &self,
        key: &CounterKey,
        delta: i64,
        token: Option<IdempotencyToken>,
    ) -> EngineResult<Mutated> {
        let _permit = self.admit()?;
        self.add_count_admitted(key, delta, token).await
    }

    /// [`Engine::add_count`] once admitted.
    async fn add_count_admitted(
        &self,
        key: &CounterKey,
        delta: i64,
        token: Option<IdempotencyToken>,
    ) -> EngineResult<Mutated> {
        let config = self.config_for_write(&key.namespace).await?;
        if config.counter_type == CounterType::BestEffort {
            self.inner.best_effort.add(key, delta, config.best_effort_ttl, self.inner.clock.now()).await?;
            return Ok(Mutated { token: None, applied: true });
        }
        let add = EventKind::Add(delta);
        Ok(self.append(key, &config, add, token, StoreCheck::Needed).await?.0)
    }

    /// `AddAndGetCount`: adds `delta` and returns a count that includes this add.
    ///
    /// On a store only this process writes, every durable type answers the exact count once
    /// the add is durable (with whatever concurrent adds finished before it). On a shared
    /// store, `accurate`: the exact count just before the add, plus the add (adds of concurrent
    /// requests may or may not be included); `eventual`: the last checkpoint plus this add, so
    /// other adds of the last few seconds may be missing. `best_effort`: the new value.
    pub async fn add_and_get_count(
        &self,
        key: &CounterKey,
        delta: i64,
        token: Option<IdempotencyToken>,
    ) -> EngineResult<(Mutated, Count)> {
        let _permit = self.admit()?;
        let config = self.config_for_write(&key.namespace).await?;
        let now = self.inner.clock.now();
        // A mutation the window refuses is answered by `append` (a refusal, or a retry of a
        // taken token) before anything is read for it.
        let late = !window_accepts(&config, token.as_ref(), now);
        match config.counter_type {
            CounterType::BestEffort => {
                let value = self.inner.best_effort.add(key, delta, config.best_effort_ttl, now).await?;
                let count = Count { value, counter_type: config.counter_type, as_of: Some(now) };
                Ok((Mutated { token: None, applied: true }, count))
            }
            CounterType::Eventual | CounterType::Accurate if self.inner.tails.enabled() => {
                // Memory checks the add against the exact count in `append` (the store, for a
                // counter memory is not exact for yet), and answers the count after it.
                let add = EventKind::Add(delta);
                let (mutated, after) = self.append(key, &config, add, token, StoreCheck::Needed).await?;
                let local = match exact_of(after) {
                    Some(value) => Some(value),
                    None => self.local_count(key, &config).await?,
                };
                let count = self.count_after_add(key, &config, delta, &mutated, local, 0).await?;
                Ok((mutated, count))
            }
            CounterType::Eventual if late => {
                let mutated =
                    self.append(key, &config, EventKind::Add(delta), token, StoreCheck::Done).await?.0;
                let checkpoint = self.checkpoint(key, &config).await?;
                Ok((
                    mutated,
                    Count {
                        value: checkpoint.count,
                        counter_type: config.counter_type,
                        as_of: as_of(checkpoint),
                    },
                ))
            }
            CounterType::Accurate if late => {
                let mutated =
                    self.append(key, &config, EventKind::Add(delta), token, StoreCheck::Done).await?.0;
                Ok((mutated, self.accurate_count(key, &config).await?))
            }
            CounterType::Eventual => {
                let checkpoint = self.checkpoint(key, &config).await?;
                check_overflow(key, checkpoint.count, delta)?;
                let mutated =
                    self.append(key, &config, EventKind::Add(delta), token, StoreCheck::Done).await?.0;
                let folded = mutated.token.as_ref().is_some_and(|t| t.generation_time() < checkpoint.until);
                // A retry of an add already in the checkpoint must not count it twice. With one
                // clock a retry inside the write window is never folded yet; instances whose
                // clocks differ can get here.
                let value = if folded { checkpoint.count } else { checkpoint.count.saturating_add(delta) };
                Ok((mutated, Count { value, counter_type: config.counter_type, as_of: as_of(checkpoint) }))
            }
            CounterType::Accurate => {
                // One scan of the tail, before the add: the answer is that count plus this add
                // (a retry's add is in the tail already). A second scan after the add would
                // only add what concurrent requests appended meanwhile, at twice the cost.
                let before = self.accurate_count(key, &config).await?;
                check_overflow(key, before.value, delta)?;
                let mutated =
                    self.append(key, &config, EventKind::Add(delta), token, StoreCheck::Done).await?.0;
                let value = if mutated.applied { before.value.saturating_add(delta) } else { before.value };
                Ok((mutated, Count { value, ..before }))
            }
        }
    }

    /// `GetCount`: the counter's count, as fresh as its type promises.
    ///
    /// With a local tail (a store only this process writes) every durable type answers the
    /// exact count from memory, or from the stored checkpoint when memory holds nothing
    /// unfolded, and asks for no rollup. Otherwise, a read that had to go to the store (a counter not in the cache) and an `accurate` read
    /// also ask for a rollup, as a safety net for a trigger that was lost (a full queue). An
    /// `eventual` read served from the cache does not: the cached checkpoint was put there by
    /// a rollup or a store read within `cache_ttl`, every write since asked for its own
    /// rollup, and the pending scan re-arms lost triggers. Asking on every read made each read
    /// cost a rollup's two store reads as well.
    pub async fn get_count(&self, key: &CounterKey) -> EngineResult<Count> {
        let _permit = self.admit()?;
        self.read_count(key).await
    }

    /// [`Engine::get_count`] once admitted.
    async fn read_count(&self, key: &CounterKey) -> EngineResult<Count> {
        let config =
            match (self.inner.namespaces.get(&key.namespace).await, self.inner.options.auto_create_type()) {
                // A namespace its first write would make holds nothing yet; reading makes nothing.
                (Err(EngineError::NamespaceNotFound(_)), Some(counter_type)) => {
                    return Ok(Count { value: 0, counter_type, as_of: None });
                }
                (config, _) => config?,
            };
        let now = self.inner.clock.now();
        if config.counter_type.is_durable()
            && let Some(value) = self.local_count(key, &config).await?
        {
            return Ok(Count { value, counter_type: config.counter_type, as_of: Some(now) });
        }
        match config.counter_type {
            CounterType::BestEffort => {
                let value = self.inner.best_effort.get(key, now).await?;
                Ok(Count { value, counter_type: config.counter_type, as_of: Some(now) })
            }
            // On a store only this process writes, an eventual read includes every
            // acknowledged add: where memory cannot tell (after a failed write whose event may
            // have landed, after a restart, with memory full) the store's events after the
            // checkpoint are folded, as for an accurate counter, until a rollup passes them.
            CounterType::Eventual if self.inner.tails.enabled() => {
                let count = self.accurate_count(key, &config).await?;
                self.request_rollup(key, now.saturating_add(config.coalesce));
                Ok(count)
            }
            CounterType::Eventual => {
                let (checkpoint, cached) = self.checkpoint_and_source(key, &config).await?;
                if !cached {
                    self.request_rollup(key, now.saturating_add(config.coalesce));
                }
                Ok(Count {
                    value: checkpoint.count,
                    counter_type: config.counter_type,
                    as_of: as_of(checkpoint),
                })
            }
            CounterType::Accurate => {
                let count = self.accurate_count(key, &config).await?;
                self.request_rollup(key, now.saturating_add(config.coalesce));
                Ok(count)
            }
        }
    }

    /// `ListCounters`: the durable counters of `namespace` whose names start with `prefix`,
    /// after `after`, with their counts (as [`Engine::get_count`] reads them), at most
    /// `limit` of them. `best_effort` counters live outside the store and are not listed.
    ///
    /// Cost: a page reads at most [`LIST_SCAN_BUDGET`] counters of the namespace from the store,
    /// whatever the prefix (names are not stored in prefix order), so a page may come back
    /// short, or empty, with a `next` to go on from.
    pub async fn list_counters(
        &self,
        namespace: &Namespace,
        prefix: &str,
        after: Option<&CounterName>,
        limit: usize,
    ) -> EngineResult<CounterPage> {
        let _permit = self.admit()?;
        let names = self.scan_names(namespace, &|name: &str| name.starts_with(prefix), after, limit).await?;
        let mut page = CounterPage { counters: Vec::with_capacity(names.names.len()), next: names.next };
        for name in names.names {
            let count = self.read_count(&CounterKey::new(namespace.clone(), name.clone())).await?;
            page.counters.push((name, count));
        }
        Ok(page)
    }

    /// The names of the durable counters of `namespace` that `wanted` accepts, after `after`,
    /// at most `limit`, reading at most [`LIST_SCAN_BUDGET`] counters (for `SCAN` and `KEYS`,
    /// which need no counts). A namespace that does not exist holds none when namespaces are
    /// made on their first write.
    pub async fn counter_names(
        &self,
        namespace: &Namespace,
        wanted: &(dyn Fn(&str) -> bool + Sync),
        after: Option<&CounterName>,
        limit: usize,
    ) -> EngineResult<NamePage> {
        let _permit = self.admit()?;
        self.scan_names(namespace, wanted, after, limit).await
    }

    async fn scan_names(
        &self,
        namespace: &Namespace,
        wanted: &(dyn Fn(&str) -> bool + Sync),
        after: Option<&CounterName>,
        limit: usize,
    ) -> EngineResult<NamePage> {
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let mut page = NamePage::default();
        match self.inner.namespaces.get(namespace).await {
            Err(EngineError::NamespaceNotFound(_)) if self.inner.options.auto_create_type().is_some() => {
                return Ok(page);
            }
            found => found?,
        };
        let mut cursor = after.map(|name| CounterKey::new(namespace.clone(), name.clone()));
        let mut scanned = 0;
        while page.names.len() < limit && scanned < LIST_SCAN_BUDGET {
            let chunk = (limit - page.names.len()).max(64).min(LIST_SCAN_BUDGET - scanned);
            let found = self.inner.store.scan_counters(Some(namespace), cursor.as_ref(), chunk).await?;
            scanned += found.len();
            let exhausted = found.len() < chunk;
            for (key, _) in found {
                cursor = Some(key.clone());
                if wanted(key.counter.as_str()) {
                    page.names.push(key.counter);
                    if page.names.len() == limit {
                        break;
                    }
                }
            }
            if exhausted && page.names.len() < limit {
                return Ok(page);
            }
        }
        page.next = cursor.map(|key| key.counter);
        Ok(page)
    }

    /// Whether the counter was ever written: a durable counter with events or a checkpoint in
    /// the store (a cleared one too, at count 0), a `best_effort` one with a count in memory.
    pub async fn counter_exists(&self, key: &CounterKey) -> EngineResult<bool> {
        let _permit = self.admit()?;
        let config = match self.inner.namespaces.get(&key.namespace).await {
            Err(EngineError::NamespaceNotFound(_)) => return Ok(false),
            config => config?,
        };
        if config.counter_type == CounterType::BestEffort {
            return Ok(self.inner.best_effort.get(key, self.inner.clock.now()).await? != 0);
        }
        let state = self.inner.store.counter_state(key).await?;
        Ok(state.last_write.is_some() || state.checkpoint.is_some())
    }

    /// Why this engine cannot write until the process restarts, if so (see
    /// [`tally_store::EventLog::stopped`]); readiness reports it.
    pub fn stopped(&self) -> Option<String> {
        self.inner.store.stopped()
    }

    /// A guess of how many durable counters the store holds, where it can tell cheaply.
    pub fn approximate_counters(&self) -> Option<u64> {
        self.inner.store.approximate_counters()
    }

    /// `ClearCount`: sets the counter to zero as of the token's generation time. Events ordered
    /// after the clear still count.
    pub async fn clear_count(
        &self,
        key: &CounterKey,
        token: Option<IdempotencyToken>,
    ) -> EngineResult<Mutated> {
        let _permit = self.admit()?;
        let config = self.config_for_write(&key.namespace).await?;
        if config.counter_type == CounterType::BestEffort {
            self.inner.best_effort.clear(key).await?;
            return Ok(Mutated { token: None, applied: true });
        }
        Ok(self.append(key, &config, EventKind::Clear, token, StoreCheck::Done).await?.0)
    }

    /// The namespace a mutation writes to: made on its first write when
    /// `auto_create_namespaces` is set, with that counter type and default settings.
    async fn config_for_write(&self, namespace: &Namespace) -> EngineResult<Arc<NamespaceConfig>> {
        match self.inner.options.auto_create_type() {
            Some(counter_type) => self.inner.namespaces.get_or_create(namespace, counter_type).await,
            None => self.inner.namespaces.get(namespace).await,
        }
    }

    /// Appends one mutation, and answers with what memory said of its counter's count right
    /// after it, where the append went through memory.
    async fn append(
        &self,
        key: &CounterKey,
        config: &NamespaceConfig,
        kind: EventKind,
        token: Option<IdempotencyToken>,
        store_check: StoreCheck,
    ) -> EngineResult<(Mutated, Option<Read>)> {
        let now = self.inner.clock.now();
        let (event, server_made) = match self.event_of(key, config, kind, token, now) {
            Ok(made) => made,
            Err(refused) => return Ok((self.answer_retry_or(refused, config, now).await?, None)),
        };
        let mut after = None;
        let appended = match self.begin_append(&event, config, server_made, store_check, now).await? {
            Prepared::Answered(appended) => appended,
            Prepared::Append(check) => {
                let deadline = config.commit_deadline(event.token.generation_time());
                let store = &self.inner.store;
                let result = match check {
                    IdentityCheck::KnownNew => store.append_new(&event, deadline).await,
                    IdentityCheck::Claim { window } => store.append(&event, deadline, window).await,
                };
                after = Some(self.inner.tails.finish(&event, self.settle(&event, config, &result, now)));
                result?
            }
            Prepared::Untracked => {
                let deadline = config.commit_deadline(event.token.generation_time());
                let result = self.inner.store.append(&event, deadline, config.token_window()).await;
                self.settle(&event, config, &result, now);
                result?
            }
        };
        Ok((self.appended(&event, config, appended, now), after))
    }

    /// A mutation the write window refused: a client's token generated too long ago may be a
    /// retry of a mutation its token already holds, which is answered as the duplicate it is.
    /// The store answers that (its `append` past the deadline finds a taken token, and makes
    /// sure the event it stands for is stored), not a bare token lookup: on a store that takes
    /// the token before writing the event, a token can outlive a failed append.
    async fn answer_retry_or(
        &self,
        refused: Box<Refused>,
        config: &NamespaceConfig,
        now: Timestamp,
    ) -> EngineResult<Mutated> {
        let Refused { event, error } = *refused;
        let Some(event) = event else { return Err(error) };
        if let Some(stored) = self.inner.tails.find(&event, now) {
            return Ok(self.appended(&event, config, Appended::judge(&event, stored)?, now));
        }
        // A deadline already passed: the store answers a taken token and writes nothing new
        // (the window refused this generation time, even where the commit margin would not).
        match self.inner.store.append(&event, now, config.token_window()).await {
            Ok(appended) => Ok(self.appended(&event, config, appended, now)),
            Err(StoreError::DeadlinePassed { .. }) => Err(error),
            Err(e) => Err(e.into()),
        }
    }

    /// The event a mutation becomes, and whether the server made its token: the client's token
    /// once the write window accepts it, else one made now. A client's token the window
    /// refuses comes back with the refusal (it may be a retry).
    fn event_of(
        &self,
        key: &CounterKey,
        config: &NamespaceConfig,
        kind: EventKind,
        token: Option<IdempotencyToken>,
        now: Timestamp,
    ) -> Result<(Event, bool), Box<Refused>> {
        let (token, server_made) = match token {
            Some(token) => {
                if let Err(e) = config.check_window(token.generation_time(), now) {
                    let error = window_error(key, token.clone(), e);
                    let retry = matches!(e, WindowError::TooOld { .. });
                    let event = retry.then(|| Event { key: key.clone(), token, kind });
                    return Err(Box::new(Refused { event, error }));
                }
                (token, false)
            }
            None => {
                let sequence = self.inner.token_sequence.fetch_add(1, Ordering::Relaxed);
                let token = server_token(now, sequence, self.inner.token_salt)
                    .map_err(|error| Box::new(Refused { event: None, error }))?;
                (token, true)
            }
        };
        Ok((Event { key: key.clone(), token, kind }, server_made))
    }

    /// What follows an answered append: the rollup that will fold it, and the answer, which
    /// carries the generation time the token holds (a retry's own may differ).
    fn appended(
        &self,
        event: &Event,
        config: &NamespaceConfig,
        appended: Appended,
        now: Timestamp,
    ) -> Mutated {
        match appended {
            Appended::New => {
                // No rollup can fold this event before its window closes: ask for one then.
                let due = now
                    .saturating_add(config.coalesce)
                    .max(first_foldable(event.token.generation_time(), config));
                self.request_rollup(&event.key, due);
                Mutated { token: Some(event.token.clone()), applied: true }
            }
            Appended::Duplicate { generation_time } => {
                let token = IdempotencyToken::new(event.token.token(), generation_time)
                    .unwrap_or_else(|_| event.token.clone());
                Mutated { token: Some(token), applied: false }
            }
        }
    }

    /// What an append's result says about the event (see [`finished`]); one whose outcome is
    /// unknown may have been written with its answer lost, so it asks for the rollup that
    /// would fold it, as a written one does in [`Engine::appended`]: a retry may never come.
    fn settle(
        &self,
        event: &Event,
        config: &NamespaceConfig,
        result: &StoreResult<Appended>,
        now: Timestamp,
    ) -> Finished {
        let outcome = finished(result);
        if outcome == Finished::Unknown {
            let due = now
                .saturating_add(config.coalesce)
                .max(first_foldable(event.token.generation_time(), config));
            self.request_rollup(&event.key, due);
        }
        outcome
    }

    /// Registers an event in the local tail before its append: memory recognises a retry and
    /// checks the count (the store checks it where memory cannot, unless `store_check` says
    /// the caller did), and tells whether the store must look the identity up.
    /// `server_made`: the token was made for this call, so nothing can hold it yet. `now`: the
    /// caller's clock reading (read again after each wait here). Every `Prepared::Append` must
    /// be followed by `Tails::finish`.
    async fn begin_append(
        &self,
        event: &Event,
        config: &NamespaceConfig,
        server_made: bool,
        mut store_check: StoreCheck,
        mut now: Timestamp,
    ) -> EngineResult<Prepared> {
        let tails = &self.inner.tails;
        loop {
            let origin = match server_made {
                true => Origin::Server,
                false => Origin::Client { now, window: config.token_window() },
            };
            match tails.begin(event, origin, store_check) {
                Begin::Append(Lookup::Skip) => return Ok(Prepared::Append(IdentityCheck::KnownNew)),
                Begin::Append(Lookup::Store) => {
                    return Ok(Prepared::Append(IdentityCheck::Claim { window: config.token_window() }));
                }
                Begin::Untracked => return Ok(Prepared::Untracked),
                Begin::Known(stored) => return Ok(Prepared::Answered(Appended::judge(event, stored)?)),
                // The first attempt's answer decides this one's: wait for it.
                Begin::InFlight => tokio::time::sleep(IN_FLIGHT_RECHECK).await,
                Begin::NeedCheckpoint => self.load_checkpoint(&event.key, config).await?,
                Begin::CheckInStore => {
                    if let EventKind::Add(delta) = event.kind {
                        self.check_overflow_in_store(&event.key, config, delta).await?;
                    }
                    store_check = StoreCheck::Done;
                }
                Begin::Overflow { count } => {
                    let delta = match event.kind {
                        EventKind::Add(delta) => delta,
                        EventKind::Clear => 0,
                    };
                    return Err(EngineError::Overflow { key: event.key.clone(), count, delta });
                }
            }
            // Every arm that did not answer waited: begin again at a fresh reading.
            now = self.inner.clock.now();
        }
    }

    /// The count to answer for an add that `mutated` answered, when adds summing to `later`
    /// follow it in its batch (0 alone), on an engine with a local tail: memory's exact count
    /// (`local`, which the caller got from memory); for a counter memory is not exact for
    /// yet, the store's (`accurate`) or the checkpoint plus this add (`eventual`).
    async fn count_after_add(
        &self,
        key: &CounterKey,
        config: &NamespaceConfig,
        delta: i64,
        mutated: &Mutated,
        local: Option<i64>,
        later: i128,
    ) -> EngineResult<Count> {
        let counter_type = config.counter_type;
        let now = self.inner.clock.now();
        let exact = match local {
            Some(value) => value,
            // As for reads: a store only this process writes answers every acknowledged add.
            None if counter_type == CounterType::Accurate || self.inner.tails.enabled() => {
                self.accurate_count(key, config).await?.value
            }
            None => {
                let checkpoint = self.checkpoint(key, config).await?;
                let own = if mutated.applied { delta } else { 0 };
                let value = checkpoint.count.saturating_add(own);
                return Ok(Count { value, counter_type, as_of: as_of(checkpoint) });
            }
        };
        Ok(count_before_later(exact, later, counter_type, now))
    }

    /// Gives the local tail the counter's stored checkpoint.
    async fn load_checkpoint(&self, key: &CounterKey, config: &NamespaceConfig) -> EngineResult<()> {
        let checkpoint = self.checkpoint(key, config).await?;
        self.inner.tails.set_checkpoint(key, checkpoint);
        Ok(())
    }

    /// The exact count from memory, when memory holds it (an exclusive store, and the
    /// counter not uncertain).
    async fn local_count(&self, key: &CounterKey, config: &NamespaceConfig) -> EngineResult<Option<i64>> {
        loop {
            match self.inner.tails.read(key) {
                Read::Exact(value) => return Ok(Some(value)),
                Read::Folded => return Ok(Some(self.checkpoint(key, config).await?.count)),
                Read::NeedCheckpoint => self.load_checkpoint(key, config).await?,
                Read::Uncertain => return Ok(None),
            }
        }
    }

    /// The overflow check of a counter whose count memory does not hold (memory asks for it
    /// with [`Begin::CheckInStore`]). Accurate counters check against their exact count,
    /// eventual ones against the cached checkpoint only: there the check is approximate anyway
    /// (adds racing past it saturate at the bound when folded, and are counted as such), and
    /// reading the store on every add to a cold counter would double the write path's reads.
    /// Where memory holds the count, [`Tails::begin`] checks it exactly instead.
    async fn check_overflow_in_store(
        &self,
        key: &CounterKey,
        config: &NamespaceConfig,
        delta: i64,
    ) -> EngineResult<()> {
        let current = match config.counter_type {
            CounterType::Accurate => Some(self.accurate_count(key, config).await?.value),
            _ => self.inner.cache.get(key, self.inner.clock.now()).await.map(|cp| cp.count),
        };
        match current {
            Some(current) => check_overflow(key, current, delta),
            None => Ok(()),
        }
    }

    /// Sends rollup triggers of writes and reads through `router` from now on (once; later
    /// calls are ignored). Pending scans and retention keep triggering locally, so a counter
    /// whose owner is gone is still rolled up.
    pub fn route_rollups_with(&self, router: Arc<dyn RollupRouter>) {
        if self.inner.router.set(router).is_err() {
            tracing::warn!("a rollup router is already set; keeping the first");
        }
    }

    /// Queues a rollup of `key` on this instance, due at `due`.
    pub fn trigger_rollup(&self, key: &CounterKey, due: Timestamp) {
        self.inner.rollups.trigger(key, due);
    }

    /// A handle that queues rollups on this instance without keeping the engine alive, for a
    /// router's fallback.
    pub fn local_rollup_trigger(&self) -> LocalTrigger {
        let rollups = self.inner.rollups.clone();
        Arc::new(move |key, due| {
            rollups.trigger(key, due);
        })
    }

    /// A permit to run one counter operation, or `Overloaded` at once when `max_in_flight`
    /// operations are already waiting: load beyond what the store absorbs is shed, not queued.
    fn admit(&self) -> EngineResult<Admitted> {
        let permit = self.inner.in_flight.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("tally_requests_shed_total").increment(1);
            EngineError::Overloaded { limit: self.inner.options.max_in_flight }
        })?;
        Ok(Admitted { _permit: permit })
    }

    fn request_rollup(&self, key: &CounterKey, due: Timestamp) {
        let routed = self.inner.router.get().is_some_and(|router| router.route(key, due));
        if !routed {
            self.inner.tails.ask_rollup(key, due, || self.inner.rollups.trigger(key, due));
        }
    }

    /// The counter's checkpoint from the cache, else from the store (and then cached).
    async fn checkpoint(&self, key: &CounterKey, config: &NamespaceConfig) -> EngineResult<Checkpoint> {
        Ok(self.checkpoint_and_source(key, config).await?.0)
    }

    /// [`Engine::checkpoint`], and whether it came from the cache.
    async fn checkpoint_and_source(
        &self,
        key: &CounterKey,
        config: &NamespaceConfig,
    ) -> EngineResult<(Checkpoint, bool)> {
        let now = self.inner.clock.now();
        // With a local tail the cache is not used: memory holds the unfolded events and the
        // checkpoints of counters folded lately, rollups do not refresh the cache, and a
        // checkpoint read here may become a rollup's base, which must be the store's.
        if self.inner.tails.enabled() {
            return Ok((self.inner.store.checkpoint(key).await?.unwrap_or(Checkpoint::ZERO), false));
        }
        if let Some(cp) = self.inner.cache.get(key, now).await {
            metrics::counter!("tally_checkpoint_cache_total", "result" => "hit").increment(1);
            return Ok((cp, true));
        }
        metrics::counter!("tally_checkpoint_cache_total", "result" => "miss").increment(1);
        let cp = self.inner.store.counter_state(key).await?.checkpoint.unwrap_or(Checkpoint::ZERO);
        self.inner.cache.put(key, cp, now, config.cache_ttl).await;
        Ok((cp, false))
    }

    /// The checkpoint plus every event after it, up to now.
    async fn accurate_count(&self, key: &CounterKey, config: &NamespaceConfig) -> EngineResult<Count> {
        let checkpoint = self.checkpoint(key, config).await?;
        let now = self.inner.clock.now();
        let tail = self.inner.store.fold(key, checkpoint.until, Timestamp::MAX).await?;
        Ok(Count {
            value: tail.apply_to(checkpoint.count),
            counter_type: config.counter_type,
            as_of: Some(now),
        })
    }

    // ---- namespaces ----

    /// `CreateNamespace`.
    pub async fn create_namespace(
        &self,
        name: &Namespace,
        config: NamespaceConfig,
    ) -> EngineResult<NamespaceConfig> {
        Ok((*self.inner.namespaces.create(name, config).await?).clone())
    }

    /// The counter type of namespace `name`, from the engine's namespace cache.
    pub async fn counter_type(&self, name: &Namespace) -> EngineResult<CounterType> {
        Ok(self.inner.namespaces.get(name).await?.counter_type)
    }

    /// `GetNamespace`.
    pub async fn get_namespace(&self, name: &Namespace) -> EngineResult<NamespaceConfig> {
        Ok((*self.inner.namespaces.get(name).await?).clone())
    }

    /// `ListNamespaces`, ordered by name.
    pub async fn list_namespaces(&self) -> EngineResult<Vec<(Namespace, NamespaceConfig)>> {
        self.inner.namespaces.list().await
    }

    /// `UpdateNamespace`: replaces the configuration; the counter type cannot change.
    pub async fn update_namespace(
        &self,
        name: &Namespace,
        config: NamespaceConfig,
    ) -> EngineResult<NamespaceConfig> {
        Ok((*self.inner.namespaces.update(name, config).await?).clone())
    }

    /// `DeleteNamespace`: deletes the namespace with every counter in it.
    pub async fn delete_namespace(&self, name: &Namespace) -> EngineResult<()> {
        if !self.inner.namespaces.delete(name).await? {
            return Err(EngineError::NamespaceNotFound(name.clone()));
        }
        self.inner.best_effort.clear_namespace(name).await?;
        self.inner.tails.forget_namespace(name);
        // Cached checkpoints of the deleted counters must not resurface if the name is reused.
        self.inner.cache.clear().await;
        Ok(())
    }
}

/// Whether the write window accepts a mutation with `token` at `now` (one without a token gets
/// `now`). Checked before anything is read for the mutation: one the window refuses costs no
/// store read (`append` answers it, as a refusal or as a retry of a taken token).
fn window_accepts(config: &NamespaceConfig, token: Option<&IdempotencyToken>, now: Timestamp) -> bool {
    token.is_none_or(|t| config.check_window(t.generation_time(), now).is_ok())
}

/// What an append's result says about the store holding the event.
fn finished(result: &StoreResult<Appended>) -> Finished {
    match result {
        Ok(Appended::New) => Finished::Written,
        Ok(Appended::Duplicate { .. })
        | Err(
            StoreError::Conflict { .. } | StoreError::DeadlinePassed { .. } | StoreError::Overloaded { .. },
        ) => Finished::NotWritten,
        Err(_) => Finished::Unknown,
    }
}

/// The count an add answers when memory's exact count after its batch is `exact` and adds
/// summing to `later` follow it there: read at `now`.
fn count_before_later(exact: i64, later: i128, counter_type: CounterType, now: Timestamp) -> Count {
    let value = i64::try_from(i128::from(exact) - later).unwrap_or(exact);
    Count { value, counter_type, as_of: Some(now) }
}

/// The exact count in what memory answered, if it is one.
fn exact_of(read: Option<Read>) -> Option<i64> {
    match read {
        Some(Read::Exact(value)) => Some(value),
        _ => None,
    }
}

fn as_of(checkpoint: Checkpoint) -> Option<Timestamp> {
    (checkpoint.until > Timestamp::MIN).then_some(checkpoint.until)
}

fn check_overflow(key: &CounterKey, count: i64, delta: i64) -> EngineResult<()> {
    match count.checked_add(delta) {
        Some(_) => Ok(()),
        None => Err(EngineError::Overflow { key: key.clone(), count, delta }),
    }
}

fn window_error(key: &CounterKey, token: IdempotencyToken, e: WindowError) -> EngineError {
    let namespace = key.namespace.clone();
    match e {
        WindowError::TooOld { oldest, accept_limit } => {
            EngineError::TokenTooOld { namespace, token, oldest, accept_limit }
        }
        WindowError::TooNew { latest, clock_skew } => {
            EngineError::TokenInFuture { namespace, token, latest, clock_skew }
        }
    }
}

/// A token for a mutation that came without one, generated now: this engine's sequence
/// number, so that mutations made in the same microsecond keep their arrival order (a clear
/// then an add must not fold as an add then a clear), then the engine's random salt, so that
/// tokens of different instances (or of one instance before and after a restart) never
/// collide. The salt is drawn once, not per token: a draw is a system call, and the sequence
/// already makes one engine's tokens distinct.
///
/// Written as `srv-{sequence:016x}-{salt:016x}` into a stack buffer rather than through
/// `format!`: every tokenless add makes one, and `format!` with the token's validation was
/// 7.6 % of a random-key RESP pipeline's request-thread time.
fn server_token(now: Timestamp, sequence: u64, salt: u64) -> EngineResult<IdempotencyToken> {
    let mut text = *b"srv-0000000000000000-0000000000000000";
    write_hex(&mut text[4..20], sequence);
    write_hex(&mut text[21..37], salt);
    let token = std::str::from_utf8(&text).expect("hex digits and dashes are ASCII");
    debug_assert_eq!(token, format!("srv-{sequence:016x}-{salt:016x}"));
    IdempotencyToken::new(token, now)
        .map_err(|e| EngineError::Internal(Failure::caused_by(format!("server-made token {token:?}"), e)))
}

/// `value` as lower-case hex digits, most significant first, filling `out`.
fn write_hex(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for digit in out.iter_mut().rev() {
        *digit = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// 64 random bits for [`server_token`].
fn random_salt() -> EngineResult<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| EngineError::Internal(Failure::caused_by("no randomness for server-made tokens", e)))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Runs `step` now and then every `period` until `shutdown` fires.
async fn every<F, Fut>(period: Duration, shutdown: CancellationToken, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => step().await,
            () = shutdown.cancelled() => return,
        }
    }
}
