//! Convergence without reads, after a restart, and retention, all driven by a manual clock.

use std::time::Duration;

use tally_core::{Clock, CounterType, ManualClock, NamespaceConfig};
use tally_engine::retention::RetentionReport;
use tally_engine::rollup::RolledUp;

use crate::support::{TestEngine, key};

#[tokio::test]
async fn an_unread_counter_converges_once_writes_stop() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let k = key(&ns, "c");
    let config = NamespaceConfig::default();
    for i in 0..20 {
        t.engine.add_count(&k, i, None).await.expect("add");
        t.clock.advance(Duration::from_millis(300));
        t.engine.rollups().run_due().await;
    }
    // Writes stopped; nobody reads.
    assert_converges_within_the_bound(&t, &k, &config, (0..20).sum()).await;
}

/// Runs the rollups due in `accept_limit + clock_skew + coalesce` from now (the convergence
/// bound), then checks that the stored checkpoint holds `count` and the counter left the queue.
async fn assert_converges_within_the_bound(
    t: &TestEngine,
    k: &tally_core::CounterKey,
    config: &NamespaceConfig,
    count: i64,
) {
    let bound = config.accept_limit + config.clock_skew + config.coalesce;
    let mut waited = Duration::ZERO;
    while waited < bound {
        t.clock.advance(Duration::from_millis(100));
        waited += Duration::from_millis(100);
        t.engine.rollups().run_due().await;
    }
    let cp = t.engine.stored_checkpoint(k).await.expect("cp").expect("rolled up");
    assert_eq!(cp.count, count);
    assert_eq!(t.engine.rollups().depth(), 0, "a caught-up counter leaves the queue");
}

/// With a local tail, a rollup that leaves events in memory came back once the oldest of them
/// was foldable: a counter written steadily was rolled up every `coalesce`, an event or two
/// at a time, and those checkpoint writes were a large part of the steady-state cost of an
/// add. It now comes back once everything memory held is foldable.
#[tokio::test]
async fn regression_a_counter_written_steadily_is_rolled_up_once_a_window_not_once_a_coalesce() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let k = key(&ns, "c");
    let config = NamespaceConfig::default();
    let writing = Duration::from_secs(30);
    let step = Duration::from_millis(250);
    let (mut rollups, mut written, mut sum) = (0, Duration::ZERO, 0);
    while written < writing {
        t.engine.add_count(&k, 1, None).await.expect("add");
        sum += 1;
        t.clock.advance(step);
        written += step;
        rollups += t.engine.rollups().run_due().await;
    }
    // Once every `immutable_after` (6 s) over 30 s, give or take the first; every `coalesce`
    // (1 s) would be about 24.
    let windows = (writing.as_secs_f64() / config.immutable_after().as_secs_f64()).ceil() as usize;
    assert!(rollups <= windows + 1, "{rollups} rollups in {writing:?} of steady writes");
    assert!(rollups >= windows - 1, "{rollups} rollups: the counter is still rolled up while written");
    // Writes stopped: within the convergence bound the checkpoint holds every add.
    assert_converges_within_the_bound(&t, &k, &config, sum).await;
}

#[tokio::test]
async fn triggers_lost_in_a_restart_are_recovered_from_the_store() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let k = key(&ns, "c");
    t.engine.add_count(&k, 42, None).await.expect("add");
    assert_eq!(t.engine.rollups().depth(), 1);
    // A new engine over the same store: the first one's in-memory queue is gone, and the new
    // one queues the rollup at open, from what the store says is unfolded.
    let restarted = TestEngine::over(t.store.clone(), t.clock.clone()).await;
    assert_eq!(restarted.engine.rollups().depth(), 1);
    assert_eq!(restarted.engine.rollups().recover_pending().await.expect("scan"), 1);
    restarted.converge(&NamespaceConfig::default()).await;
    assert_eq!(restarted.engine.stored_checkpoint(&k).await.expect("cp").map(|c| c.count), Some(42));
    assert_eq!(restarted.engine.rollups().recover_pending().await.expect("scan"), 0, "nothing pending");
}

#[tokio::test]
async fn checkpoints_never_move_backwards_across_instances_with_skewed_clocks() {
    let t = TestEngine::shared_memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let k = key(&ns, "c");
    t.engine.add_count(&k, 1, None).await.expect("add");
    t.clock.advance(Duration::from_secs(10));
    // A second instance whose clock runs 3 s behind.
    let behind = ManualClock::new(t.clock.now().saturating_sub(Duration::from_secs(3)));
    let other = TestEngine::over(t.store.clone(), behind).await;
    let ahead = t.engine.rollups().roll_up(&k).await.expect("rollup");
    let late = other.engine.rollups().roll_up(&k).await.expect("rollup");
    let (RolledUp::Advanced { checkpoint: a, .. }, RolledUp::CaughtUp) = (ahead, late) else {
        panic!("unexpected outcomes {ahead:?} {late:?}");
    };
    let stored = t.engine.stored_checkpoint(&k).await.expect("cp").expect("stored");
    assert_eq!(stored, a);
    assert_eq!(stored.count, 1);
}

/// An `accurate` namespace that keeps events a minute, five adds of 2 to one counter, and two
/// minutes later: the counter and the namespace's settings.
async fn five_adds_of_two_past_a_minute_of_retention(
    t: &TestEngine,
) -> (tally_core::CounterKey, NamespaceConfig) {
    let ns = tally_core::Namespace::new("short").expect("ns");
    let config = NamespaceConfig {
        counter_type: CounterType::Accurate,
        retention: Duration::from_secs(60),
        idempotency_window: Duration::from_secs(60),
        ..Default::default()
    };
    t.engine.create_namespace(&ns, config.clone()).await.expect("create");
    let k = key(&ns, "c");
    for _ in 0..5 {
        t.engine.add_count(&k, 2, None).await.expect("add");
    }
    t.clock.advance(Duration::from_secs(120));
    (k, config)
}

#[tokio::test]
async fn retention_deletes_only_folded_events() {
    let t = TestEngine::memory().await;
    let (k, config) = five_adds_of_two_past_a_minute_of_retention(&t).await;
    // Past retention, but no rollup ran: nothing may be deleted yet.
    let report = t.engine.run_retention().await.expect("retention");
    assert_eq!(
        report,
        RetentionReport { counters: 1, events_deleted: 0, awaiting_rollup: 1, slices_dropped: 0 }
    );
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 10);
    // The retention pass triggered the rollup; once folded, the events go and the count stays.
    t.engine.rollups().run_due().await;
    let report = t.engine.run_retention().await.expect("retention");
    assert_eq!(
        report,
        RetentionReport { counters: 1, events_deleted: 5, awaiting_rollup: 0, slices_dropped: 0 }
    );
    let tail = t.store.fold(&k, tally_core::Timestamp::MIN, tally_core::Timestamp::MAX).await.expect("fold");
    assert_eq!(tail.events, 0);
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 10);
    // Younger events stay.
    t.engine.add_count(&k, 1, None).await.expect("add");
    t.converge(&config).await;
    assert_eq!(t.engine.run_retention().await.expect("retention").events_deleted, 0);
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 11);
}

/// Found by profiling `tally bench`: every add re-queued its counter once per `coalesce` until
/// the window passed it, each time folding nothing and writing a checkpoint, so one add cost
/// about seven rollups and six durable writes.
#[tokio::test]
async fn regression_a_single_add_costs_one_rollup() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let k = key(&ns, "once");
    t.engine.add_count(&k, 1, None).await.expect("add");
    let mut rollups = 0;
    for _ in 0..100 {
        t.clock.advance(Duration::from_millis(100));
        rollups += t.engine.rollups().run_due().await;
    }
    assert_eq!(rollups, 1);
    assert_eq!(t.engine.stored_checkpoint(&k).await.expect("cp").map(|c| c.count), Some(1));
}

/// After a restart memory lacks the events the previous process left unfolded: those counters
/// are read and deduplicated through the store until their first rollup, then from memory.
#[tokio::test]
async fn after_a_restart_unfolded_counters_are_served_through_the_store_until_folded() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("acc", CounterType::Accurate).await;
    let k = key(&ns, "c");
    let before = t.token("before");
    t.engine.add_count(&k, 5, Some(before.clone())).await.expect("add");
    let restarted = TestEngine::over(t.store.clone(), t.clock.clone()).await;
    drop(t);
    // Exact, from the store; the retry of a token memory never saw is found there.
    assert_eq!(restarted.engine.get_count(&k).await.expect("get").value, 5);
    let retry = restarted.engine.add_count(&k, 5, Some(before)).await.expect("retry");
    assert!(!retry.applied, "a retry across the restart applies once");
    restarted.engine.add_count(&k, 2, None).await.expect("add after restart");
    assert_eq!(restarted.engine.get_count(&k).await.expect("get").value, 7);
    restarted.converge(&NamespaceConfig::default()).await;
    // Folded past everything the previous process wrote: memory serves it now.
    restarted.engine.add_count(&k, 1, None).await.expect("add");
    assert_eq!(restarted.engine.get_count(&k).await.expect("get").value, 8);
    assert_eq!(restarted.engine.stored_checkpoint(&k).await.expect("cp").map(|c| c.count), Some(7));
}

/// A `last_write` whose event never landed (the Cassandra store writes `last_write` first; its
/// event write can then fail its deadline) made every rollup of the counter fold nothing,
/// write nothing and queue it again, forever, with its `as_of` stuck.
#[tokio::test]
async fn regression_a_last_write_without_its_event_does_not_requeue_the_counter_forever() {
    use std::sync::Arc;
    use tally_store::{CounterStore, EventLog};
    let clock = ManualClock::new(tally_core::Timestamp::from_millis(crate::support::START_MILLIS));
    let store = Arc::new(tally_store::MemoryStore::shared(Arc::new(clock.clone())));
    let t = TestEngine::over(store.clone(), clock).await;
    let ns = t.namespace("orphan", CounterType::Eventual).await;
    let key = key(&ns, "c");
    let token = t.token("lost");
    let written = token.generation_time();
    t.engine.add_count(&key, 1, Some(token)).await.expect("add");
    // Leave `last_write` without its event, as a failed second write would.
    store
        .delete_events_before(&key, written.saturating_add(Duration::from_micros(1)), 10)
        .await
        .expect("delete");
    assert!(store.counter_state(&key).await.expect("state").has_unfolded_events());
    let config = NamespaceConfig::default();
    t.clock.advance(config.immutable_after() + config.coalesce);
    let rolled = t.engine.rollups().roll_up(&key).await.expect("rollup");
    let RolledUp::Advanced { checkpoint, requeued } = rolled else { panic!("{rolled:?}") };
    assert!(!requeued, "nothing is left to fold: the counter is not queued again");
    assert!(checkpoint.until > written, "the checkpoint moved past the last write: {checkpoint:?}");
    assert!(!store.counter_state(&key).await.expect("state").has_unfolded_events());
}

/// On a store that reclaims whole time slices (Cassandra), retention asks once per pass to
/// drop everything before the oldest time any counter still needs: an unfolded counter holds
/// the bound back to its checkpoint, a counter of a namespace this instance does not know
/// forbids dropping anything, and once every counter is folded the bound is the retention
/// cutoff.
#[tokio::test]
async fn retention_by_slices_drops_only_what_every_counter_has_folded() {
    let clock = ManualClock::new(tally_core::Timestamp::from_millis(1_764_000_000_000));
    let memory = std::sync::Arc::new(tally_store::MemoryStore::new(std::sync::Arc::new(clock.clone())));
    let faulty = std::sync::Arc::new(tally_store::faulty::FaultyStore::new(memory.clone()));
    faulty.reclaim_by_slices();
    let t = TestEngine::over(faulty.clone(), clock).await;
    let (k, _) = five_adds_of_two_past_a_minute_of_retention(&t).await;
    let report = t.engine.run_retention().await.expect("retention");
    assert_eq!((report.awaiting_rollup, report.slices_dropped, report.events_deleted), (1, 0, 0));
    assert_eq!(faulty.slice_drops(), [tally_core::Timestamp::MIN], "the unfolded counter needs everything");
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 10);

    t.engine.rollups().run_due().await;
    // Slices hold every namespace's events: the default namespace's 7 days hold them all back.
    let report = t.engine.run_retention().await.expect("retention");
    let week = t.clock.now().saturating_sub(NamespaceConfig::default().retention);
    assert_eq!((report.awaiting_rollup, report.slices_dropped), (0, 0));
    assert_eq!(faulty.slice_drops().last(), Some(&week), "the longest retention bounds the drop");

    t.clock.advance(NamespaceConfig::default().retention + Duration::from_secs(3600));
    use tally_store::CounterStore;
    let folded = memory.checkpoint(&k).await.expect("checkpoint").expect("rolled up").until;
    let report = t.engine.run_retention().await.expect("retention");
    assert_eq!((report.awaiting_rollup, report.slices_dropped, report.events_deleted), (0, 1, 0));
    assert_eq!(faulty.slice_drops().last(), Some(&folded), "nothing past the counter's checkpoint");
    let left = memory.fold(&k, tally_core::Timestamp::MIN, tally_core::Timestamp::MAX).await.expect("fold");
    assert_eq!(left.events, 0, "the slice went with its events");
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 10, "the checkpoint keeps the count");

    // A counter of a namespace this instance has not loaded (made elsewhere a moment ago):
    // no slice may go this pass.
    let stranger = tally_core::CounterKey::parse_joined("elsewhere:c").expect("key");
    let token = tally_core::IdempotencyToken::new("x", t.clock.now()).expect("token");
    let event = tally_core::Event { key: stranger, token, kind: tally_core::EventKind::Add(1) };
    use tally_store::EventLog;
    memory.append_new(&event, tally_core::Timestamp::MAX).await.expect("append");
    let drops = faulty.slice_drops().len();
    let report = t.engine.run_retention().await.expect("retention");
    assert_eq!(report.slices_dropped, 0);
    assert_eq!(faulty.slice_drops().len(), drops, "no drop asked for");
}

/// The scans that visit every counter (the pending scan after a restart, retention) go page
/// by page, 1,000 counters a page: with 2,500 counters on a shared store, each visits all of
/// them, and after a restart (triggers lost) every counter is found and folded.
#[tokio::test]
async fn scans_over_every_counter_go_past_the_first_page() {
    let t = TestEngine::shared_memory().await;
    let ns = t.namespace("many", CounterType::Eventual).await;
    let keys: Vec<_> = (0..2_500).map(|i| key(&ns, &format!("c{i:04}"))).collect();
    for k in &keys {
        t.engine.add_count(k, 1, None).await.expect("add");
    }
    let restarted = TestEngine::over(t.store.clone(), t.clock.clone()).await;
    assert_eq!(restarted.engine.rollups().recover_pending().await.expect("scan"), 2_500, "every page");
    restarted.converge(&NamespaceConfig::default()).await;
    for k in [&keys[0], &keys[999], &keys[1_000], &keys[2_499]] {
        assert_eq!(restarted.engine.get_count(k).await.expect("get").value, 1, "{k}");
    }
    let report = restarted.engine.run_retention().await.expect("retention");
    assert_eq!(report.counters, 2_500, "retention visits every page");
}

/// After a restart memory meets a counter folded before it with no checkpoint in hand: the
/// rollup of its new events reads the stored checkpoint and folds onto it, with the rest of
/// its batch (fails if a batch folds such a counter onto zero).
#[tokio::test]
async fn a_rollup_of_a_counter_memory_met_after_a_restart_folds_onto_its_stored_checkpoint() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ev", CounterType::Eventual).await;
    let (k, other) = (key(&ns, "c"), key(&ns, "new"));
    t.engine.add_count(&k, 5, Some(t.token("before"))).await.expect("add");
    t.converge(&NamespaceConfig::default()).await;
    assert_eq!(t.engine.stored_checkpoint(&k).await.expect("cp").map(|c| c.count), Some(5));
    let restarted = TestEngine::over(t.store.clone(), t.clock.clone()).await;
    drop(t);
    restarted.engine.add_count(&k, 2, Some(restarted.token("after"))).await.expect("add after restart");
    restarted.engine.add_count(&other, 3, Some(restarted.token("first"))).await.expect("a new counter");
    restarted.converge(&NamespaceConfig::default()).await;
    assert_eq!(restarted.engine.stored_checkpoint(&k).await.expect("cp").map(|c| c.count), Some(7));
    assert_eq!(restarted.engine.stored_checkpoint(&other).await.expect("cp").map(|c| c.count), Some(3));
    assert_eq!(restarted.engine.get_count(&k).await.expect("get").value, 7);
}
