//! The four operations on each counter type, and the refusals that change nothing.

use std::sync::Arc;
use std::time::Duration;

use tally_core::{
    Clock, CounterType, ErrorCode, IdempotencyToken, ManualClock, Namespace, NamespaceConfig, Timestamp,
};
use tally_engine::{BatchAdd, EngineError, EngineOptions};
use tally_store::{CounterState, MemoryStore};

use crate::support::{TestEngine, key};

/// On one instance (a store only this process writes) every acknowledged add is in the
/// next read at once, whatever the counter type, as Redis users expect of `INCR` then `GET`.
#[tokio::test]
async fn eventual_reads_on_one_instance_include_every_acknowledged_add_at_once() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let k = key(&ns, "views");
    for i in 0..5 {
        let (_, count) =
            t.engine.add_and_get_count(&k, 10, Some(t.token(&format!("t{i}")))).await.expect("add");
        assert_eq!(count.value, 10 * (i + 1), "add-and-get answers the count after the add");
    }
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 50);
    // A clear in the same microsecond would be ordered by token among the adds.
    t.clock.advance(Duration::from_millis(1));
    t.engine.clear_count(&k, None).await.expect("clear");
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 0);
    // (An add in the very microsecond of a clear is ordered by its token, which memory does
    // not keep: that counter is read through the store until folded. Hence the step.)
    t.clock.advance(Duration::from_millis(1));
    t.engine.add_count(&k, 3, None).await.expect("add");
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 3);
    t.converge(&NamespaceConfig::default()).await;
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 3);
    assert_eq!(t.engine.stored_checkpoint(&k).await.expect("cp").map(|c| c.count), Some(3));
}

/// On a store several instances share, an eventual read is the checkpoint.
#[tokio::test]
async fn eventual_reads_the_checkpoint_and_converges_after_the_window() {
    let t = TestEngine::shared_memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let k = key(&ns, "views");
    for i in 0..5 {
        t.engine.add_count(&k, 10, Some(t.token(&format!("t{i}")))).await.expect("add");
    }
    let before = t.engine.get_count(&k).await.expect("get");
    assert_eq!((before.value, before.as_of), (0, None), "nothing is folded inside the write window");
    t.converge(&NamespaceConfig::default()).await;
    let after = t.engine.get_count(&k).await.expect("get");
    assert_eq!(after.value, 50);
    assert_eq!(after.counter_type, CounterType::Eventual);
    assert!(after.as_of.is_some_and(|t0| t0 <= t.clock.now()));
}

#[tokio::test]
async fn accurate_reads_include_the_live_tail() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("acc", CounterType::Accurate).await;
    let k = key(&ns, "c");
    t.engine.add_count(&k, 7, None).await.expect("add");
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 7);
    t.converge(&NamespaceConfig::default()).await;
    t.engine.add_count(&k, -2, None).await.expect("add");
    let count = t.engine.get_count(&k).await.expect("get");
    assert_eq!(count.value, 5, "checkpoint 7 plus tail -2");
    assert_eq!(t.engine.stored_checkpoint(&k).await.expect("cp").map(|c| c.count), Some(7));
}

#[tokio::test]
async fn add_and_get_includes_its_own_add_on_every_type() {
    let t = TestEngine::memory().await;
    for (name, ty) in
        [("be", CounterType::BestEffort), ("ev", CounterType::Eventual), ("acc", CounterType::Accurate)]
    {
        let ns = t.namespace(name, ty).await;
        let k = key(&ns, "c");
        let (_, first) = t.engine.add_and_get_count(&k, 4, None).await.expect("add-and-get");
        assert_eq!(first.value, 4, "{name}");
        assert_eq!(first.counter_type, ty);
    }
    // On an accurate counter the answer also includes earlier adds not yet folded.
    let ns = tally_core::Namespace::new("acc").expect("ns");
    let (_, second) = t.engine.add_and_get_count(&key(&ns, "c"), 6, None).await.expect("add-and-get");
    assert_eq!(second.value, 10);
}

#[tokio::test]
async fn a_retry_with_the_same_token_counts_once_and_says_so() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let k = key(&ns, "c");
    let token = t.token("only-once");
    let first = t.engine.add_count(&k, 3, Some(token.clone())).await.expect("add");
    let retry = t.engine.add_count(&k, 3, Some(token.clone())).await.expect("retry");
    assert!(first.applied);
    assert!(!retry.applied);
    assert_eq!(retry.token, Some(token));
    t.converge(&NamespaceConfig::default()).await;
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 3);
}

#[tokio::test]
async fn mutations_without_a_token_get_a_server_token_and_are_not_deduplicated() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("acc", CounterType::Accurate).await;
    let k = key(&ns, "c");
    let a = t.engine.add_count(&k, 1, None).await.expect("add");
    let b = t.engine.add_count(&k, 1, None).await.expect("add again");
    let (ta, tb) = (a.token.expect("server token"), b.token.expect("server token"));
    assert_ne!(ta, tb);
    assert!(ta.token().starts_with("srv-"));
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 2);
}

/// An eventual read served from the cache used to queue a rollup each time: at 10,000 reads
/// a second that was 10,000 rollups a second, each with two store reads.
#[tokio::test]
async fn regression_an_eventual_read_from_the_cache_queues_no_rollup() {
    let t = TestEngine::shared_memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let k = key(&ns, "c");
    t.engine.add_count(&k, 4, None).await.expect("add");
    t.converge(&NamespaceConfig::default()).await;
    assert_eq!(t.engine.rollups().depth(), 0);
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 4);
    assert_eq!(t.engine.rollups().depth(), 0, "a cached read queued a rollup");

    // A counter read from the store still asks for one, in case its trigger was lost.
    let cold = key(&ns, "cold");
    assert_eq!(t.engine.get_count(&cold).await.expect("get").value, 0);
    assert_eq!(t.engine.rollups().depth(), 1);
}

/// Two engines on one store (two instances, or one before and after a restart) number their
/// tokens from the same sequence at the same instant; their salts keep the tokens apart, so
/// neither add is taken for a retry of the other.
#[tokio::test]
async fn server_tokens_of_two_engines_on_one_store_never_collide() {
    let first = TestEngine::shared_memory().await;
    let second = TestEngine::over(first.store.clone(), first.clock.clone()).await;
    let ns = first.namespace("acc", CounterType::Accurate).await;
    let k = key(&ns, "c");
    let a = first.engine.add_count(&k, 1, None).await.expect("add on the first");
    let b = second.engine.add_count(&k, 1, None).await.expect("add on the second");
    let (ta, tb) = (a.token.expect("server token"), b.token.expect("server token"));
    assert_eq!(ta.generation_time(), tb.generation_time());
    assert_ne!(ta, tb);
    assert!(a.applied && b.applied);
    assert_eq!(second.engine.get_count(&k).await.expect("get").value, 2);
}

#[tokio::test]
async fn tokens_outside_the_write_window_are_refused_and_write_nothing() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let k = key(&ns, "c");
    let now = t.clock.now();
    let too_old = IdempotencyToken::new("old", now.saturating_sub(Duration::from_secs(6))).expect("token");
    let err = t.engine.add_count(&k, 1, Some(too_old)).await.expect_err("too old");
    assert!(matches!(err, EngineError::TokenTooOld { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::OutOfRange);
    assert!(err.to_string().contains("accept_limit 5s"), "{err}");
    let too_new = IdempotencyToken::new("new", now.saturating_add(Duration::from_secs(2))).expect("token");
    let err = t.engine.clear_count(&k, Some(too_new)).await.expect_err("too new");
    assert!(matches!(err, EngineError::TokenInFuture { .. }), "{err}");
    assert!(err.to_string().contains("clock_skew 1s"), "{err}");
    assert_eq!(t.store.counter_state(&k).await.expect("state"), CounterState::default());
}

#[tokio::test]
async fn a_token_reused_for_another_mutation_is_refused() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("acc", CounterType::Accurate).await;
    let k = key(&ns, "c");
    let token = t.token("t");
    t.engine.add_count(&k, 5, Some(token.clone())).await.expect("add");
    let err = t.engine.add_count(&k, 6, Some(token.clone())).await.expect_err("reused");
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    assert!(err.to_string().contains("an add of 5"), "{err}");
    let err = t.engine.clear_count(&k, Some(token)).await.expect_err("reused for a clear");
    assert!(matches!(err, EngineError::TokenReused { .. }));
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 5);
}

/// `INCRBY k 9223372036854775807` twice answered the maximum twice on an eventual counter: the
/// check read only the cached checkpoint, which knew neither add. On one instance memory holds
/// the exact count and every add in flight, so the second add is refused, even when both are
/// sent at once.
#[tokio::test]
async fn regression_eventual_overflow_is_refused_before_any_rollup_even_for_concurrent_adds() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let k = key(&ns, "c");
    let (_, count) = t.engine.add_and_get_count(&k, i64::MAX, None).await.expect("first");
    assert_eq!(count.value, i64::MAX);
    let err = t.engine.add_and_get_count(&k, i64::MAX, None).await.expect_err("second overflows");
    assert_eq!(err.code(), ErrorCode::OutOfRange);

    let racing = key(&ns, "racing");
    let (a, b) =
        tokio::join!(t.engine.add_count(&racing, i64::MAX, None), t.engine.add_count(&racing, 1, None));
    assert!(a.is_ok() != b.is_ok(), "exactly one of two adds past the range is refused: {a:?} {b:?}");
    t.converge(&NamespaceConfig::default()).await;
    let value = t.engine.get_count(&racing).await.expect("get").value;
    assert!(value == i64::MAX || value == 1, "no saturation: {value}");
}

#[tokio::test]
async fn an_add_that_would_overflow_is_refused() {
    let t = TestEngine::memory().await;
    for (name, ty) in
        [("be", CounterType::BestEffort), ("ev", CounterType::Eventual), ("acc", CounterType::Accurate)]
    {
        let ns = t.namespace(name, ty).await;
        let k = key(&ns, "c");
        t.engine.add_count(&k, i64::MAX, None).await.expect("add max");
        t.converge(&NamespaceConfig::default()).await;
        let err = t.engine.add_and_get_count(&k, 1, None).await.expect_err("overflow");
        assert!(matches!(err, EngineError::Overflow { count: i64::MAX, delta: 1, .. }), "{name}: {err}");
        assert_eq!(err.code(), ErrorCode::OutOfRange);
        t.converge(&NamespaceConfig::default()).await;
        assert_eq!(t.engine.get_count(&k).await.expect("get").value, i64::MAX, "{name}");
    }
}

/// Where memory cannot check an add against the count (a store other instances share, or a
/// counter memory is unsure of), `AddCount` checks it against the store's: an `accurate`
/// counter's exact count, an `eventual` one's cached checkpoint.
#[tokio::test]
async fn on_a_shared_store_add_count_is_checked_against_the_stores_count() {
    let t = TestEngine::shared_memory().await;
    let ns = t.namespace("acc", CounterType::Accurate).await;
    let k = key(&ns, "c");
    t.engine.add_count(&k, i64::MAX, None).await.expect("add max");
    let err = t.engine.add_count(&k, 1, None).await.expect_err("overflow");
    assert!(matches!(err, EngineError::Overflow { count: i64::MAX, delta: 1, .. }), "{err}");
    t.converge(&NamespaceConfig::default()).await;
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, i64::MAX, "nothing was added");
}

#[tokio::test]
async fn a_clear_discards_events_ordered_before_it_even_if_they_arrive_later() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("acc", CounterType::Accurate).await;
    let k = key(&ns, "c");
    let t0 = t.clock.now();
    let at = |ms: u64, name: &str| {
        IdempotencyToken::new(name, t0.saturating_add(Duration::from_millis(ms))).expect("token")
    };
    t.clock.advance(Duration::from_millis(500));
    t.engine.add_count(&k, 100, Some(at(0, "before"))).await.expect("add");
    t.engine.clear_count(&k, Some(at(200, "clear"))).await.expect("clear");
    t.engine.add_count(&k, 7, Some(at(300, "after"))).await.expect("add");
    // Arrives after the clear but was generated before it: discarded.
    t.engine.add_count(&k, 1000, Some(at(100, "late-but-earlier"))).await.expect("add");
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 7);
    t.converge(&NamespaceConfig::default()).await;
    assert_eq!(t.engine.stored_checkpoint(&k).await.expect("cp").map(|c| c.count), Some(7));
}

#[tokio::test]
async fn best_effort_counters_live_in_memory_with_a_ttl() {
    let t = TestEngine::memory().await;
    let ns = tally_core::Namespace::new("be").expect("ns");
    let config = NamespaceConfig {
        counter_type: CounterType::BestEffort,
        best_effort_ttl: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    t.engine.create_namespace(&ns, config).await.expect("create");
    let k = key(&ns, "c");
    let token = t.token("ignored");
    t.engine.add_count(&k, 2, Some(token.clone())).await.expect("add");
    t.engine.add_count(&k, 2, Some(token)).await.expect("best_effort does not deduplicate");
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 4);
    t.engine.clear_count(&k, None).await.expect("clear");
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 0);
    t.engine.add_count(&k, 1, None).await.expect("add");
    t.clock.advance(Duration::from_secs(30));
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 0, "expired");
    assert!(t.store.counter_state(&k).await.expect("state").last_write.is_none(), "nothing is stored");
}

#[tokio::test]
async fn operations_on_an_unknown_namespace_are_refused() {
    let t = TestEngine::memory().await;
    let ns = tally_core::Namespace::new("nope").expect("ns");
    let k = key(&ns, "c");
    let err = t.engine.add_count(&k, 1, None).await.expect_err("unknown");
    assert_eq!(err, EngineError::NamespaceNotFound(ns.clone()));
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert!(t.engine.get_count(&k).await.is_err());
    assert!(t.engine.clear_count(&k, None).await.is_err());
    assert!(t.engine.add_and_get_count(&k, 1, None).await.is_err());
    assert_eq!(t.store.counter_state(&k).await.expect("state"), CounterState::default());
}

/// Found by the end-to-end tests: a clear and an add sent without tokens in the same
/// microsecond got random server tokens, so the add was ordered before the clear half the time
/// and discarded.
#[tokio::test]
async fn regression_server_tokens_in_one_microsecond_keep_arrival_order() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("acc", CounterType::Accurate).await;
    let k = key(&ns, "c");
    for round in 0..50 {
        t.engine.add_count(&k, 5, None).await.expect("add");
        t.engine.clear_count(&k, None).await.expect("clear");
        t.engine.add_count(&k, 3, None).await.expect("add");
        assert_eq!(t.engine.get_count(&k).await.expect("get").value, 3, "round {round}");
    }
}

/// A batch answers each add as if sent one by one: counts in order on one key, a repeated
/// token applied once, a refusal for its item only, and every type.
#[tokio::test]
async fn a_batch_answers_each_add_in_order_and_refuses_only_what_is_wrong() {
    for t in [TestEngine::memory().await, TestEngine::shared_memory().await] {
        let ev = t.namespace("ev", CounterType::Eventual).await;
        let be = t.namespace("be", CounterType::BestEffort).await;
        let acc = t.namespace("acc", CounterType::Accurate).await;
        let add = |k: &tally_core::CounterKey, delta, token: Option<IdempotencyToken>| {
            tally_engine::BatchAdd { key: k.clone(), delta, token }
        };
        let (hot, other, fast, exact) = (key(&ev, "hot"), key(&ev, "other"), key(&be, "c"), key(&acc, "c"));
        let unknown = key(&tally_core::Namespace::new("nope").expect("ns"), "c");
        let batch = [
            add(&hot, 1, None),
            add(&hot, 1, Some(t.token("once"))),
            add(&other, 5, None),
            add(&hot, 1, Some(t.token("once"))),
            add(&unknown, 1, None),
            add(&hot, i64::MAX, None),
            add(&fast, 2, None),
            add(&exact, 3, None),
            add(&hot, 1, None),
        ];
        let results = t.engine.add_batch(&batch).await;
        let exclusive = t.store.exclusive();
        let got: Vec<_> = results.iter().map(|r| r.as_ref().map(|(m, c)| (m.applied, c.value))).collect();
        assert_eq!(got[4].expect_err("unknown namespace").code(), ErrorCode::NotFound);
        assert_eq!(got[6], Ok((true, 2)));
        assert_eq!(got[7], Ok((true, 3)));
        assert!(matches!(got[3], Ok((false, _))), "the repeated token applies once: {:?}", got[3]);
        if exclusive {
            assert_eq!(got[0], Ok((true, 1)));
            assert_eq!(got[1], Ok((true, 2)));
            assert_eq!(got[2], Ok((true, 5)));
            assert_eq!(got[5].expect_err("overflow").code(), ErrorCode::OutOfRange);
            assert_eq!(got[8], Ok((true, 3)));
        }
        t.converge(&NamespaceConfig::default()).await;
        let hot_count = t.engine.get_count(&hot).await.expect("get").value;
        let expected = if exclusive { 3 } else { i64::MAX };
        assert_eq!(hot_count, expected, "exclusive={exclusive}");
        assert_eq!(t.engine.get_count(&other).await.expect("get").value, 5);
    }
}

/// A batch tells a token repeated on one counter (applied once) from the same token string on
/// other counters (each its own mutation), also past the first items of a long batch.
#[tokio::test]
async fn a_batch_applies_a_token_once_per_counter_however_long_the_batch() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let add = |name: &str, token: &str| tally_engine::BatchAdd {
        key: key(&ns, name),
        delta: 1,
        token: Some(t.token(token)),
    };
    let mut batch: Vec<_> = (0..200).map(|i| add(&format!("c{i}"), "shared")).collect();
    batch.extend((0..200).map(|i| add(&format!("c{i}"), "shared")));
    let results = t.engine.add_batch(&batch).await;
    let applied: Vec<bool> = results.iter().map(|r| r.as_ref().expect("answered").0.applied).collect();
    assert!(applied[..200].iter().all(|a| *a), "each counter's first add of the token applies");
    assert!(applied[200..].iter().all(|a| !*a), "its repeat does not");
    for i in [0, 199] {
        assert_eq!(t.engine.get_count(&key(&ns, &format!("c{i}"))).await.expect("get").value, 1);
    }
}

/// A pipeline of `INCR k` costs the store one event: tokenless adds to one counter in one
/// batch are summed, yet each answers the count after it; a sum that would overflow falls back
/// to the adds one by one.
#[tokio::test]
async fn tokenless_adds_to_one_counter_in_a_batch_are_one_event_and_answer_in_order() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let hot = key(&ns, "hot");
    let add = |delta| tally_engine::BatchAdd { key: hot.clone(), delta, token: None };
    let results = t.engine.add_batch(&[add(1), add(2), add(3), add(4)]).await;
    let counts: Vec<i64> = results.iter().map(|r| r.as_ref().expect("add").1.value).collect();
    assert_eq!(counts, [1, 3, 6, 10]);
    let tail =
        t.store.fold(&hot, tally_core::Timestamp::MIN, tally_core::Timestamp::MAX).await.expect("fold");
    assert_eq!((tail.sum, tail.events), (10, 1), "one event for the four adds");

    let results = t.engine.add_batch(&[add(i64::MAX - 20), add(5), add(100)]).await;
    let got: Vec<_> =
        results.iter().map(|r| r.as_ref().map(|(_, c)| c.value).map_err(|e| e.code())).collect();
    assert_eq!(got, [Ok(i64::MAX - 10), Ok(i64::MAX - 5), Err(ErrorCode::OutOfRange)]);
    t.converge(&NamespaceConfig::default()).await;
    assert_eq!(t.engine.get_count(&hot).await.expect("get").value, i64::MAX - 5);
}

/// Memory holds at most `local_tail_max_events` unfolded events: past it the store keeps the
/// rest alone, and the counters they touch are read, deduplicated and folded through it.
#[tokio::test]
async fn past_the_local_tail_bound_counts_stay_exact_through_the_store() {
    let clock =
        tally_core::ManualClock::new(tally_core::Timestamp::from_millis(crate::support::START_MILLIS));
    let store: std::sync::Arc<dyn tally_store::Store> =
        std::sync::Arc::new(tally_store::MemoryStore::new(std::sync::Arc::new(clock.clone())));
    let options = tally_engine::EngineOptions { local_tail_max_events: 3, ..Default::default() };
    let t = TestEngine::over_with(store, clock, options).await;
    let ns = t.namespace("acc", CounterType::Accurate).await;
    let k = key(&ns, "c");
    let mut tokens = Vec::new();
    for i in 0..10 {
        let token = t.token(&format!("t{i}"));
        let (_, count) = t.engine.add_and_get_count(&k, 1, Some(token.clone())).await.expect("add");
        assert_eq!(count.value, i + 1);
        tokens.push(token);
    }
    for token in tokens {
        assert!(!t.engine.add_count(&k, 1, Some(token)).await.expect("retry").applied, "a retry counts once");
    }
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 10);
    t.converge(&NamespaceConfig::default()).await;
    t.engine.add_count(&k, 5, None).await.expect("add after the fold");
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 15);
}

#[tokio::test]
async fn namespaces_are_made_on_their_first_write_when_auto_create_is_on() {
    let clock = ManualClock::new(Timestamp::from_millis(crate::support::START_MILLIS));
    let store: Arc<dyn tally_store::Store> = Arc::new(MemoryStore::new(Arc::new(clock.clone())));
    let options = EngineOptions {
        auto_create_namespaces: Some(tally_engine::AutoCreate::Accurate),
        ..Default::default()
    };
    let t = TestEngine::over_with(store, clock, options).await;
    let ns = Namespace::new("user").expect("ns");
    let k = key(&ns, "1000:visits");
    let read = t.engine.get_count(&k).await.expect("a read of a missing namespace");
    assert_eq!((read.value, read.counter_type), (0, CounterType::Accurate));
    assert!(
        matches!(t.engine.get_namespace(&ns).await, Err(EngineError::NamespaceNotFound(_))),
        "reads make nothing"
    );
    let (_, count) = t.engine.add_and_get_count(&k, 2, None).await.expect("first write makes it");
    assert_eq!(count.value, 2);
    assert_eq!(t.engine.get_namespace(&ns).await.expect("made").counter_type, CounterType::Accurate);
    let other = key(&Namespace::new("pages").expect("ns"), "home");
    let added = t.engine.add_batch(&[BatchAdd { key: other.clone(), delta: 1, token: None }]).await;
    assert!(added[0].is_ok(), "{added:?}");
    assert_eq!(t.engine.get_count(&other).await.expect("get").value, 1);
}

#[tokio::test]
async fn without_auto_create_a_write_to_a_missing_namespace_is_refused() {
    let t = TestEngine::memory().await;
    let k = key(&Namespace::new("nowhere").expect("ns"), "c");
    assert!(matches!(t.engine.add_count(&k, 1, None).await, Err(EngineError::NamespaceNotFound(_))));
    assert!(matches!(t.engine.get_count(&k).await, Err(EngineError::NamespaceNotFound(_))));
}

#[tokio::test]
async fn list_counters_pages_through_a_namespace_with_a_prefix_and_counts() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("shop", CounterType::Eventual).await;
    let other = t.namespace("other", CounterType::Eventual).await;
    for i in 0..25 {
        let name = if i % 2 == 0 { format!("orders:{i:02}") } else { format!("views:{i:02}") };
        t.engine.add_count(&key(&ns, &name), i, None).await.expect("add");
    }
    t.engine.add_count(&key(&other, "orders:99"), 1, None).await.expect("add");
    let (mut listed, mut after) = (Vec::new(), None);
    loop {
        let page = t.engine.list_counters(&ns, "orders:", after.as_ref(), 5).await.expect("list");
        assert!(page.counters.len() <= 5);
        listed.extend(page.counters.iter().map(|(name, count)| (name.to_string(), count.value)));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    listed.sort();
    let expected: Vec<_> = (0..25).step_by(2).map(|i| (format!("orders:{i:02}"), i)).collect();
    assert_eq!(listed, expected, "every counter with the prefix once, none of another namespace");
    let missing = Namespace::new("missing").expect("ns");
    assert!(matches!(
        t.engine.list_counters(&missing, "", None, 5).await,
        Err(EngineError::NamespaceNotFound(_))
    ));
}

/// No test listed past one page of the store's scan: a page stops once it has read
/// `LIST_SCAN_BUDGET` counters, short (here empty) but with where to go on, and paging on finds
/// every counter beyond the budget once.
#[tokio::test]
async fn list_counters_pages_on_past_the_scan_budget() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("wide", CounterType::Eventual).await;
    let adds: Vec<BatchAdd> = (0..tally_engine::LIST_SCAN_BUDGET + 50)
        .map(|i| BatchAdd { key: key(&ns, &format!("a:{i:06}")), delta: 1, token: None })
        .chain((0..5).map(|i| BatchAdd { key: key(&ns, &format!("z:{i}")), delta: 2, token: None }))
        .collect();
    for chunk in adds.chunks(1_000) {
        for result in t.engine.add_batch(chunk).await {
            result.expect("add");
        }
    }
    let first = t.engine.list_counters(&ns, "z:", None, 100).await.expect("list");
    assert!(first.counters.is_empty(), "the first page read only a: counters: {:?}", first.counters);
    let mut after = Some(first.next.expect("a page cut by the budget says where to go on"));
    let mut listed = Vec::new();
    while let Some(from) = after {
        let page = t.engine.list_counters(&ns, "z:", Some(&from), 100).await.expect("list");
        listed.extend(page.counters.iter().map(|(name, count)| (name.to_string(), count.value)));
        after = page.next;
    }
    let expected: Vec<_> = (0..5).map(|i| (format!("z:{i}"), 2)).collect();
    assert_eq!(listed, expected);
}

/// `list_events` gives a counter's history in order, a page at a time, and says which events
/// a checkpoint has folded: none before the rollup, every one in its window after it.
#[tokio::test]
async fn list_events_gives_the_history_in_pages_marking_what_is_folded() {
    for t in [TestEngine::memory().await, TestEngine::shared_memory().await] {
        let ns = t.namespace("audit", CounterType::Eventual).await;
        let k = key(&ns, "c");
        t.engine.add_count(&k, 3, Some(t.token("a"))).await.expect("add");
        t.engine.clear_count(&k, Some(t.token("b"))).await.expect("clear");
        t.engine.add_count(&k, 5, Some(t.token("c"))).await.expect("add");
        let all = |after| {
            let k = k.clone();
            let engine = t.engine.clone();
            async move { engine.list_events(&k, Timestamp::MIN, Timestamp::MAX, after, 2).await.expect("list") }
        };
        let first = all(None).await;
        let tokens: Vec<_> = first.events.iter().map(|e| e.event.token.token().to_owned()).collect();
        assert_eq!(tokens, ["a", "b"]);
        assert_eq!(first.events[1].event.kind, tally_core::EventKind::Clear);
        assert!(first.events.iter().all(|e| !e.folded), "nothing is folded yet");
        let second = all(first.next.as_ref()).await;
        assert_eq!(second.events.len(), 1);
        assert_eq!(second.events[0].event.kind, tally_core::EventKind::Add(5));
        assert_eq!(second.next, None, "the range is exhausted");
        t.converge(&tally_core::NamespaceConfig::default()).await;
        assert!(all(None).await.events.iter().all(|e| e.folded), "the rollup folded them");
    }
}

/// `recount` refolds what the checkpoint covers from the events still kept: it agrees after
/// rollups, and tells a checkpoint that does not match them (here one written by hand).
#[tokio::test]
async fn recount_checks_the_checkpoint_against_the_kept_events() {
    let clock = tally_core::ManualClock::new(Timestamp::from_millis(1_764_000_000_000));
    let store = Arc::new(MemoryStore::new(Arc::new(clock.clone())));
    let t = TestEngine::over(store.clone(), clock).await;
    let ns = t.namespace("recount", CounterType::Accurate).await;
    let k = key(&ns, "c");
    let before = t.engine.recount(&k).await.expect("recount");
    assert_eq!((before.events, before.recounted, before.oldest), (0, 0, None), "never rolled up");
    for (token, delta) in [("a", 3), ("b", 4)] {
        t.engine.add_count(&k, delta, Some(t.token(token))).await.expect("add");
    }
    t.converge(&tally_core::NamespaceConfig::default()).await;
    let after = t.engine.recount(&k).await.expect("recount");
    assert!(after.agrees() && after.events == 2 && after.checkpoint.count == 7, "{after:?}");
    assert!(after.oldest.is_some_and(|t| t <= after.checkpoint.until), "{after:?}");
    // A checkpoint that lost an event: the recount says so, and changes nothing.
    let wrong = tally_core::Checkpoint {
        count: 6,
        until: after.checkpoint.until.saturating_add(Duration::from_micros(1)),
    };
    use tally_store::CounterStore;
    store.put_checkpoint(&k, wrong).await.expect("put");
    let off = t.engine.recount(&k).await.expect("recount");
    assert!(!off.agrees() && off.recounted == 7 && off.checkpoint.count == 6, "{off:?}");
    assert_eq!(store.checkpoint(&k).await.expect("checkpoint"), Some(wrong), "recount changed nothing");
    let be = t.namespace("fleeting", CounterType::BestEffort).await;
    let refused = t.engine.recount(&key(&be, "c")).await.expect_err("no events");
    assert_eq!(refused.code(), tally_core::ErrorCode::FailedPrecondition);
}

/// `series` sums each bucket's adds from the event log: a clear is counted in its bucket, not
/// subtracted, so the buckets before it still show what happened; the total is the windowed
/// count; buckets the checkpoint covers are marked folded.
#[tokio::test]
async fn series_sums_adds_per_bucket_and_keeps_what_came_before_a_clear() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("series", CounterType::Eventual).await;
    let k = key(&ns, "c");
    let start = t.clock.now();
    let minute = Duration::from_secs(60);
    for (i, delta) in [(0, 3), (0, 4), (1, 5), (2, -2)] {
        let at = start.saturating_add(minute * i + Duration::from_millis(u64::from(i) + 1));
        let token = IdempotencyToken::new(&format!("t{i}:{delta}"), at).expect("token");
        t.clock.set(at);
        t.engine.add_count(&k, delta, Some(token)).await.expect("add");
    }
    t.clock.advance(Duration::from_millis(1));
    t.engine.clear_count(&k, None).await.expect("clear");
    let range =
        tally_engine::SeriesRange::new(start, start.saturating_add(minute * 4), minute).expect("range");
    let series = t.engine.series(&k, range).await.expect("series");
    let sums: Vec<_> = series.buckets.iter().map(|b| (b.added, b.adds, b.clears)).collect();
    assert_eq!(sums, [(7, 2, 0), (5, 1, 0), (-2, 1, 1), (0, 0, 0)]);
    assert_eq!(series.total, 10, "the windowed count: what was added in the range");
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 0, "the count is the value now");
    assert!(series.buckets.iter().all(|b| !b.folded && b.retained), "{series:?}");
    t.converge(&NamespaceConfig::default()).await;
    let folded = t.engine.series(&k, range).await.expect("series");
    // The checkpoint now covers the events up to the write window's end, a few seconds ago:
    // the buckets that ended before it are folded, the one still open is not.
    let marks: Vec<_> = folded.buckets.iter().map(|b| b.folded).collect();
    assert_eq!(marks, [true, true, false, false], "{folded:?}");
    assert_eq!(folded.total, 10, "folding changes no bucket");

    let be = t.namespace("fleeting", CounterType::BestEffort).await;
    let refused = t.engine.series(&key(&be, "c"), range).await.expect_err("no events");
    assert_eq!(refused.code(), ErrorCode::FailedPrecondition);
}
