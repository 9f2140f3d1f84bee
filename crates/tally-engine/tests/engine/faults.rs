//! A store slower than the load, and a store that fails: load is shed with
//! RESOURCE_EXHAUSTED instead of queueing without bound, a failing store is UNAVAILABLE and
//! nothing unacknowledged is counted, and both recover without a restart.

use std::sync::Arc;
use std::time::Duration;

use tally_core::{CounterKey, CounterName, CounterType, ErrorCode, ManualClock, Timestamp};
use tally_engine::EngineOptions;
use tally_store::MemoryStore;
use tally_store::faulty::FaultyStore;

use crate::support::{START_MILLIS, TestEngine};

async fn faulty_engine(max_in_flight: usize) -> (TestEngine, Arc<FaultyStore>) {
    let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
    let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new(Arc::new(clock.clone())))));
    let options = EngineOptions { max_in_flight, ..EngineOptions::default() };
    let t = TestEngine::over_with(faulty.clone(), clock, options).await;
    (t, faulty)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_slower_than_the_load_sheds_the_excess_with_resource_exhausted() {
    let (t, faulty) = faulty_engine(8).await;
    let ns = t.namespace("slow", CounterType::Accurate).await;
    let key = CounterKey::new(ns, CounterName::new("c").expect("name"));
    faulty.hold_appends();
    let waiting: Vec<_> = (0..8)
        .map(|i| {
            let (engine, key, token) = (t.engine.clone(), key.clone(), t.token(&format!("held-{i}")));
            tokio::spawn(async move { engine.add_count(&key, 1, Some(token)).await })
        })
        .collect();
    // All eight reach the store and wait there; bounded wait for the tasks to get that far.
    for _ in 0..500 {
        if faulty.waiting() == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(faulty.waiting(), 8);
    assert_eq!(t.engine.operations_in_flight(), 8, "what tally_operations_in_flight reports");

    // The ninth is refused at once, for every operation, and never reaches the store.
    // (A timeout turns a missing admission check into a failure instead of a hang.)
    let shed =
        tokio::time::timeout(Duration::from_secs(5), t.engine.add_count(&key, 100, Some(t.token("shed"))));
    let err = shed.await.expect("refused at once, not queued").expect_err("shed");
    assert_eq!(err.code(), ErrorCode::ResourceExhausted, "{err}");
    assert_eq!(t.engine.get_count(&key).await.expect_err("shed").code(), ErrorCode::ResourceExhausted);
    assert_eq!(faulty.waiting(), 8, "the refused add did not queue");

    faulty.release();
    for w in waiting {
        assert!(w.await.expect("task").expect("held add completes").applied);
    }
    assert_eq!(
        t.engine.get_count(&key).await.expect("after the load").value,
        8,
        "the shed add counted nothing"
    );
    assert_eq!(t.engine.operations_in_flight(), 0, "every answered operation left");
    assert!(t.engine.add_count(&key, 1, Some(t.token("after"))).await.expect("admitted again").applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_unavailable_counts_nothing_and_recovers_without_restart() {
    let (t, faulty) = faulty_engine(64).await;
    let ns = t.namespace("disk", CounterType::Accurate).await;
    let key = CounterKey::new(ns, CounterName::new("c").expect("name"));
    assert!(t.engine.add_count(&key, 5, Some(t.token("before"))).await.expect("healthy").applied);

    faulty.fail_appends(true);
    let token = t.token("during");
    let err = t.engine.add_count(&key, 7, Some(token.clone())).await.expect_err("store failing");
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    let err = t.engine.clear_count(&key, Some(t.token("clear"))).await.expect_err("store failing");
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert_eq!(t.engine.get_count(&key).await.expect("reads still work").value, 5);

    faulty.fail_appends(false);
    // The client retries the unacknowledged add with its token: applied once.
    assert!(t.engine.add_count(&key, 7, Some(token.clone())).await.expect("recovered").applied);
    assert!(!t.engine.add_count(&key, 7, Some(token)).await.expect("retry").applied);
    assert_eq!(t.engine.get_count(&key).await.expect("count").value, 12);
}

/// An add whose event was written but whose answer was lost (`UNAVAILABLE`, as the client
/// sees it) is retried with its token: it counts once, on a store this process alone writes
/// (where counts come from the local tail) and on a shared one. Two bugs: on the embedded
/// store an eventual read left it out until a rollup (memory was unsure of the counter and
/// the read answered the checkpoint alone), and on a shared store no rollup was asked for (the
/// failed attempt asked none, the duplicate answer neither), so it waited for the pending scan.
#[tokio::test]
async fn regression_an_add_written_before_its_failure_counts_once_and_is_read_at_once_when_retried() {
    for shared in [false, true] {
        let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
        let inner = match shared {
            true => MemoryStore::shared(Arc::new(clock.clone())),
            false => MemoryStore::new(Arc::new(clock.clone())),
        };
        let faulty = Arc::new(FaultyStore::new(Arc::new(inner)));
        let t = TestEngine::over_with(faulty.clone(), clock, EngineOptions::default()).await;
        let ns = t.namespace("lost", CounterType::Eventual).await;
        let key = CounterKey::new(ns, CounterName::new("c").expect("name"));
        let token = t.token("order-1");
        faulty.fail_after_writing(true);
        let lost = t.engine.add_count(&key, 7, Some(token.clone())).await.expect_err("answer lost");
        assert_eq!(lost.code(), ErrorCode::Unavailable, "shared {shared}: {lost}");
        faulty.fail_after_writing(false);
        let retry = t.engine.add_count(&key, 7, Some(token.clone())).await.expect("retried");
        assert!(!retry.applied, "shared {shared}: the first attempt was written");
        assert!(!t.engine.add_count(&key, 7, Some(token)).await.expect("again").applied);
        if !shared {
            // One process: its reads include every acknowledged add at once.
            assert_eq!(t.engine.get_count(&key).await.expect("get").value, 7, "counted once, read at once");
        }
        t.converge(&tally_core::NamespaceConfig::default()).await;
        assert_eq!(t.engine.get_count(&key).await.expect("get").value, 7, "shared {shared}: counted once");
    }
}

/// A token taken by an append that then failed before its event was written (possible on
/// Cassandra) must not make a late retry look applied: within the event's deadline the retry
/// writes it, past it the retry is refused as too old and nothing claims the add counted.
#[tokio::test]
async fn regression_a_late_retry_of_a_token_whose_event_never_landed_is_refused_not_acknowledged() {
    for retry_late in [false, true] {
        let (t, faulty) = faulty_engine(64).await;
        let ns = t.namespace("half", CounterType::Accurate).await;
        let key = CounterKey::new(ns, CounterName::new("c").expect("name"));
        let token = t.token("order-1");
        faulty.take_tokens_then_fail(true);
        let first =
            t.engine.add_count(&key, 7, Some(token.clone())).await.expect_err("failed after the token");
        assert_eq!(first.code(), ErrorCode::Unavailable);
        faulty.take_tokens_then_fail(false);
        if retry_late {
            t.clock.advance(Duration::from_secs(60));
            let retry = t.engine.add_count(&key, 7, Some(token)).await;
            assert!(matches!(&retry, Err(e) if e.code() == ErrorCode::OutOfRange), "{retry:?}");
            assert_eq!(t.engine.get_count(&key).await.expect("get").value, 0);
        } else {
            let retry = t.engine.add_count(&key, 7, Some(token)).await.expect("retried in time");
            assert!(!retry.applied, "the token was taken by the first attempt");
            assert_eq!(t.engine.get_count(&key).await.expect("get").value, 7, "and its event is now stored");
        }
    }
}

/// An `accurate` add on a shared store read the counter's events (its overflow check) before
/// the write window refused its `generation_time`: under overload, late requests still cost a
/// scan each before being refused.
#[tokio::test]
async fn regression_a_late_add_is_refused_before_any_store_read() {
    let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
    let shared = Arc::new(MemoryStore::shared(Arc::new(clock.clone())));
    let faulty = Arc::new(FaultyStore::new(shared));
    let t = TestEngine::over_with(faulty.clone(), clock.clone(), EngineOptions::default()).await;
    let ns = t.namespace("late", CounterType::Accurate).await;
    let key = CounterKey::new(ns, CounterName::new("c").expect("name"));
    let late = t.token("late-1");
    clock.advance(Duration::from_secs(60));
    let before = faulty.folds();
    let refused = t.engine.add_count(&key, 1, Some(late)).await.expect_err("too old");
    assert_eq!(refused.code(), ErrorCode::OutOfRange, "{refused}");
    assert_eq!(faulty.folds(), before, "the refused add read no events");
    let old =
        tally_core::IdempotencyToken::new("late-2", Timestamp::from_millis(START_MILLIS)).expect("token");
    let refused = t.engine.add_and_get_count(&key, 1, Some(old)).await;
    assert_eq!(refused.expect_err("too old").code(), ErrorCode::OutOfRange);
    assert_eq!(faulty.folds(), before, "nor did add-and-get");
}

/// Rollups from memory whose checkpoints the store cannot write (a batch of them, in one
/// request) lose nothing: memory keeps the events, reads stay exact, and once the store heals
/// the rollups are tried again and the store gets every checkpoint.
#[tokio::test]
async fn a_batch_of_rollups_whose_checkpoints_fail_loses_nothing_and_is_tried_again() {
    let (t, faulty) = faulty_engine(64).await;
    let ns = t.namespace("rolled", CounterType::Eventual).await;
    let keys: Vec<CounterKey> = (1..=3).map(|i| crate::support::key(&ns, &format!("c{i}"))).collect();
    for (delta, key) in (1..).zip(&keys) {
        t.engine.add_count(key, delta, Some(t.token(&format!("add-{delta}")))).await.expect("add");
    }
    let config = tally_core::NamespaceConfig::default();
    faulty.fail_checkpoints(true);
    assert!(t.converge(&config).await >= keys.len(), "the rollups ran, and failed");
    for (delta, key) in (1..).zip(&keys) {
        assert_eq!(t.engine.get_count(key).await.expect("read").value, delta, "{key} while failing");
        assert_eq!(t.store.checkpoint(key).await.expect("store"), None, "{key} has no checkpoint yet");
    }
    faulty.fail_checkpoints(false);
    t.converge(&config).await;
    for (delta, key) in (1..).zip(&keys) {
        let stored = t.store.checkpoint(key).await.expect("store").expect("a checkpoint once healed");
        assert_eq!(stored.count, delta, "{key}");
        assert_eq!(t.engine.get_count(key).await.expect("read").value, delta, "{key} once healed");
    }
}
