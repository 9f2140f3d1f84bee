//! Building engines for tests: a store, a manual clock, and helpers to move time.

use std::sync::Arc;
use std::time::Duration;

use tally_core::{
    Clock, CounterKey, CounterType, IdempotencyToken, ManualClock, Namespace, NamespaceConfig, Timestamp,
};
use tally_engine::{Engine, EngineOptions, LocalBestEffort, LocalCache};
use tally_store::{MemoryStore, Store};

/// A realistic starting time for manual clocks.
pub const START_MILLIS: i64 = 1_764_000_000_000;

/// An engine under test, with its clock and store.
pub struct TestEngine {
    pub engine: Engine,
    pub clock: ManualClock,
    pub store: Arc<dyn Store>,
}

impl TestEngine {
    /// An engine over a fresh in-memory store.
    pub async fn memory() -> Self {
        let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(clock.clone())));
        Self::over(store, clock).await
    }

    /// An engine over a fresh in-memory store that further engines may share at once, as
    /// instances share Cassandra: every engine reads and folds through the store.
    pub async fn shared_memory() -> Self {
        let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::shared(Arc::new(clock.clone())));
        Self::over(store, clock).await
    }

    /// A new engine over an existing store, as after a restart.
    pub async fn over(store: Arc<dyn Store>, clock: ManualClock) -> Self {
        Self::over_with(store, clock, EngineOptions::default()).await
    }

    /// A new engine over an existing store with `options`.
    pub async fn over_with(store: Arc<dyn Store>, clock: ManualClock, options: EngineOptions) -> Self {
        let engine = Engine::open(
            store.clone(),
            Arc::new(LocalCache::new(10_000)),
            Arc::new(LocalBestEffort::default()),
            Arc::new(clock.clone()),
            options,
        )
        .await
        .expect("engine opens");
        Self { engine, clock, store }
    }

    /// Creates a namespace of the given type with default windows.
    pub async fn namespace(&self, name: &str, counter_type: CounterType) -> Namespace {
        let ns = Namespace::new(name).expect("valid namespace");
        let config = NamespaceConfig { counter_type, ..Default::default() };
        self.engine.create_namespace(&ns, config).await.expect("namespace created");
        ns
    }

    /// A token generated now.
    pub fn token(&self, name: &str) -> IdempotencyToken {
        IdempotencyToken::new(name, self.clock.now()).expect("valid token")
    }

    /// Moves time past the window of `config` and runs every rollup that becomes due, until
    /// no rollup is due any more. Returns how many rollups ran.
    pub async fn converge(&self, config: &NamespaceConfig) -> usize {
        let step = config.coalesce;
        let horizon = config.immutable_after() + config.coalesce * 2;
        let mut ran = 0;
        let mut waited = Duration::ZERO;
        while waited <= horizon {
            self.clock.advance(step);
            waited += step;
            ran += self.engine.rollups().run_due().await;
        }
        ran
    }
}

/// `ns:counter` as a key.
pub fn key(ns: &Namespace, counter: &str) -> CounterKey {
    CounterKey::new(ns.clone(), tally_core::CounterName::new(counter).expect("valid counter name"))
}
