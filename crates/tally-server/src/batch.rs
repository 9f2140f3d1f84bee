//! What `BatchAddCount` and `BatchGetCount` share across gRPC and HTTP: the size limit, the
//! per-item scope check, and running the items.
//!
//! Each item is answered on its own: a bad name, a missing scope or an unknown namespace
//! refuses that item and no other. A batch over [`MAX_BATCH_ITEMS`] is refused whole.

use tally_core::CounterKey;
use tally_engine::{BatchAdd, Count, Engine, EngineError, EngineResult, Mutated};

use crate::auth::{Access, Principal};
use crate::error::ApiError;

/// The most items one batch request may carry.
pub const MAX_BATCH_ITEMS: usize = 1_000;

/// One add of a batch as the wire gives it, before validation.
pub struct WireAdd {
    /// The namespace and counter, validated into a key (or refused).
    pub key: Result<CounterKey, ApiError>,
    /// The delta.
    pub delta: i64,
    /// The token, validated (or refused).
    pub token: Result<Option<tally_core::IdempotencyToken>, ApiError>,
}

impl WireAdd {
    /// An add from its wire fields; a bad name or token refuses this item only.
    pub fn new(
        namespace: &str,
        counter_name: &str,
        delta: i64,
        token: Result<Option<tally_core::IdempotencyToken>, ApiError>,
    ) -> Self {
        Self { key: crate::convert::counter_key(namespace, counter_name), delta, token }
    }
}

/// Refuses a batch with more than [`MAX_BATCH_ITEMS`] items.
pub fn check_size(items: usize) -> Result<(), ApiError> {
    if items > MAX_BATCH_ITEMS {
        return Err(ApiError::invalid(format!(
            "a batch holds at most {MAX_BATCH_ITEMS} items; this one has {items}: split it"
        )));
    }
    Ok(())
}

/// Runs the adds that are valid and allowed as one engine batch, and answers every item in
/// order.
pub async fn add(
    engine: &Engine,
    who: &Principal,
    adds: Vec<WireAdd>,
) -> Vec<Result<(Mutated, Count), ApiError>> {
    let prepared = adds.into_iter().map(|add| {
        let key = add.key?;
        who.require(Access::Write, &key.namespace)?;
        Ok((BatchAdd { key, delta: add.delta, token: add.token? }, ()))
    });
    run_prepared(engine, prepared.collect())
        .await
        .into_iter()
        .map(|answer| answer.and_then(|((), result)| result.map_err(ApiError::from)))
        .collect()
}

/// Runs the adds that could be prepared as one engine batch ([`Engine::add_batch`]) and
/// answers every item in request order: the refusal of an item that could not be prepared,
/// else its tag with the engine's answer. The Redis pipeline and the batch calls share it.
pub async fn run_prepared<T, R>(
    engine: &Engine,
    prepared: Vec<Result<(BatchAdd, T), R>>,
) -> Vec<Result<(T, EngineResult<(Mutated, Count)>), R>> {
    let mut adds = Vec::with_capacity(prepared.len());
    let tags: Vec<Result<T, R>> = prepared
        .into_iter()
        .map(|p| {
            p.map(|(add, tag)| {
                adds.push(add);
                tag
            })
        })
        .collect();
    let mut results = engine.add_batch(&adds).await.into_iter();
    tags.into_iter()
        .map(|tag| {
            tag.map(|tag| {
                let result = results.next().unwrap_or_else(|| {
                    Err(EngineError::Internal("the engine answered fewer adds than the batch held".into()))
                });
                (tag, result)
            })
        })
        .collect()
}

/// Reads every key that is valid and allowed, concurrently, and answers in order.
pub async fn get(
    engine: &Engine,
    who: &Principal,
    keys: Vec<Result<CounterKey, ApiError>>,
) -> Vec<Result<Count, ApiError>> {
    let reads = keys.into_iter().map(|key| async move {
        let key = key?;
        who.require(Access::Read, &key.namespace)?;
        Ok(engine.get_count(&key).await?)
    });
    futures::future::join_all(reads).await
}
