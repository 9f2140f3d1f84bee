//! The conformance suite every backend must pass.
//!
//! A backend's test file invokes [`store_suite!`](crate::store_suite) with an async function
//! that opens a fresh, empty store judged by the given clock, and returns it with a guard to
//! keep alive (a temporary directory, say). Each case below becomes one `#[tokio::test]`.

use std::collections::BTreeSet;
use std::time::Duration;

use tally_core::{
    Checkpoint, Clock, CounterKey, CounterName, Event, EventKind, Fold, IdempotencyToken, ManualClock,
    Namespace, NamespaceConfig, Timestamp,
};

use crate::{Appended, CounterState, EventCursor, Store, StoreError, StoreResult, Stored};

/// Generates one `#[tokio::test]` per conformance case for a backend.
///
/// `$make` is an `async fn(ManualClock) -> (S, G)` where `S: Store` and `G` is kept alive for
/// the duration of the test.
#[macro_export]
macro_rules! store_suite {
    ($make:path) => {
        $crate::store_suite!(@cases $make;
            append_new_then_duplicate_counts_once,
            append_conflict_changes_nothing,
            a_token_alone_identifies_its_mutation_within_the_window,
            racing_retries_of_one_token_at_different_times_count_once,
            fold_orders_by_time_then_token_and_clear_discards_earlier,
            fold_window_is_half_open,
            fold_and_state_of_unknown_counter_are_empty,
            last_write_is_the_greatest_event_time,
            checkpoint_never_moves_backwards,
            put_checkpoints_answers_each_as_alone,
            scan_counters_visits_every_counter_once,
            delete_events_before_removes_only_older_events,
            append_after_deadline_writes_nothing,
            namespaces_create_get_list_update_delete,
            delete_namespace_removes_its_counters_only,
            names_that_concatenate_alike_stay_apart,
            concurrent_appends_all_land,
            racing_conflicting_appends_acknowledge_at_most_one,
            append_new_lands_like_append_without_taking_its_token,
            append_batch_answers_each_append_as_alone,
            checkpoint_alone_is_the_state_s_checkpoint,
            list_events_pages_through_a_range_in_order,
            a_namespace_created_again_starts_empty_and_sees_every_write
        );
    };
    (@cases $make:path; $($case:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let clock = $crate::testsuite::suite_clock();
            let (store, _guard) = $make(clock.clone()).await;
            $crate::testsuite::$case(&store, &clock).await;
        }
    )*};
}

/// The clock every case starts from: a fixed, realistic time.
pub fn suite_clock() -> ManualClock {
    ManualClock::new(Timestamp::from_millis(1_764_000_000_000))
}

fn key(ns: &str, counter: &str) -> CounterKey {
    CounterKey::new(Namespace::new(ns).expect("valid ns"), CounterName::new(counter).expect("valid name"))
}

fn event(key: &CounterKey, token: &str, micros: i64, kind: EventKind) -> Event {
    Event {
        key: key.clone(),
        token: IdempotencyToken::new(token, Timestamp::from_micros(micros)).expect("valid token"),
        kind,
    }
}

fn far_deadline() -> Timestamp {
    Timestamp::MAX
}

/// The idempotency window the cases append with.
const WINDOW: Duration = Duration::from_secs(600);

async fn append_ok<S: Store>(store: &S, e: &Event) -> Appended {
    store.append(e, far_deadline(), WINDOW).await.expect("append")
}

fn duplicate_at(micros: i64) -> Appended {
    Appended::Duplicate { generation_time: Timestamp::from_micros(micros) }
}

async fn fold_all<S: Store>(store: &S, key: &CounterKey) -> Fold {
    store.fold(key, Timestamp::MIN, Timestamp::MAX).await.expect("fold")
}

/// A new event is stored once; the identical retry is reported as a duplicate and not counted.
pub async fn append_new_then_duplicate_counts_once<S: Store>(store: &S, _clock: &ManualClock) {
    let k = key("ns", "c");
    let e = event(&k, "t1", 100, EventKind::Add(5));
    assert_eq!(append_ok(store, &e).await, Appended::New);
    assert_eq!(append_ok(store, &e).await, duplicate_at(100));
    assert_eq!(fold_all(store, &k).await, Fold { sum: 5, cleared: false, events: 1 });
}

/// Reusing a token for another delta or a clear is refused and leaves the log as it was.
pub async fn append_conflict_changes_nothing<S: Store>(store: &S, _clock: &ManualClock) {
    let k = key("ns", "c");
    append_ok(store, &event(&k, "t1", 100, EventKind::Add(5))).await;
    for other in [EventKind::Add(6), EventKind::Clear] {
        let err =
            store.append(&event(&k, "t1", 100, other), far_deadline(), WINDOW).await.expect_err("conflict");
        assert!(
            matches!(err, StoreError::Conflict { stored: EventKind::Add(5), given, .. } if given == other),
            "{err:?}"
        );
    }
    assert_eq!(fold_all(store, &k).await.sum, 5);
}

/// A client's token alone identifies its mutation for the window after its first append: a
/// retry with another generation time is a duplicate at the stored time (or a conflict), and
/// `find_token` finds it; once the window has passed, the token is free again.
pub async fn a_token_alone_identifies_its_mutation_within_the_window<S: Store>(
    store: &S,
    clock: &ManualClock,
) {
    let k = key("ns", "c");
    let window = Duration::from_secs(60);
    let append = |micros, kind| {
        let e = event(&k, "t1", micros, kind);
        async move { store.append(&e, far_deadline(), window).await }
    };
    assert_eq!(append(100, EventKind::Add(1)).await, Ok(Appended::New));
    assert_eq!(append(101, EventKind::Add(1)).await, Ok(duplicate_at(100)));
    assert!(matches!(append(102, EventKind::Clear).await, Err(StoreError::Conflict { .. })));
    let stored = Stored { generation_time: Timestamp::from_micros(100), kind: EventKind::Add(1) };
    assert_eq!(store.find_token(&k, "t1").await.expect("find"), Some(stored));
    assert_eq!(store.find_token(&k, "t2").await.expect("find"), None);
    assert_eq!(store.find_token(&key("ns", "other"), "t1").await.expect("find"), None);
    assert_eq!(fold_all(store, &k).await.sum, 1);

    clock.advance(window + Duration::from_secs(1));
    assert_eq!(store.find_token(&k, "t1").await.expect("find"), None, "the window has passed");
    assert_eq!(append(103, EventKind::Add(1)).await, Ok(Appended::New));
    assert_eq!(append(104, EventKind::Add(1)).await, Ok(duplicate_at(103)));
    assert_eq!(fold_all(store, &k).await.sum, 2);
}

/// Retries of one token racing with different generation times (clients that restamp each
/// attempt): exactly one lands, every other is a duplicate at its time.
pub async fn racing_retries_of_one_token_at_different_times_count_once<S: Store>(
    store: &S,
    _clock: &ManualClock,
) {
    for round in 0..20 {
        let k = key("ns", &format!("retry-{round}"));
        let appends = (0..4).map(|i| {
            let e = event(&k, "shared", 500 + i, EventKind::Add(1));
            async move { store.append(&e, far_deadline(), WINDOW).await }
        });
        let results = futures::future::join_all(appends).await;
        let landed: Vec<usize> = (0..4).filter(|&i| results[i] == Ok(Appended::New)).collect();
        assert_eq!(landed.len(), 1, "round {round}: {results:?}");
        let at = 500 + landed[0] as i64;
        assert!(results.iter().all(|r| r == &Ok(Appended::New) || r == &Ok(duplicate_at(at))), "{results:?}");
        assert_eq!(fold_all(store, &k).await, Fold { sum: 1, cleared: false, events: 1 }, "round {round}");
    }
}

/// Events fold in `(generation_time, token)` order whatever order they arrived in, and a clear
/// discards exactly the events ordered before it.
pub async fn fold_orders_by_time_then_token_and_clear_discards_earlier<S: Store>(
    store: &S,
    _clock: &ManualClock,
) {
    let k = key("ns", "c");
    // Arrival order differs from event order on purpose.
    append_ok(store, &event(&k, "z-after", 200, EventKind::Add(1000))).await;
    append_ok(store, &event(&k, "m-clear", 200, EventKind::Clear)).await;
    append_ok(store, &event(&k, "a-before", 200, EventKind::Add(7))).await;
    append_ok(store, &event(&k, "early", 100, EventKind::Add(30))).await;
    append_ok(store, &event(&k, "late", 300, EventKind::Add(2))).await;
    let fold = fold_all(store, &k).await;
    assert_eq!(fold, Fold { sum: 1002, cleared: true, events: 5 });
    // Before the clear's time nothing is cleared.
    let fold = store.fold(&k, Timestamp::MIN, Timestamp::from_micros(200)).await.expect("fold");
    assert_eq!(fold, Fold { sum: 30, cleared: false, events: 1 });
}

/// `list_events` gives a counter's events in `(generation_time, token)` order, clears
/// included, within `[from, until)`, and pages through them by cursor: every event once.
pub async fn list_events_pages_through_a_range_in_order<S: Store>(store: &S, _clock: &ManualClock) {
    let k = key("ns", "c");
    append_ok(store, &event(&key("ns", "other"), "x", 150, EventKind::Add(9))).await;
    let written = [
        event(&k, "b", 100, EventKind::Add(1)),
        event(&k, "a", 200, EventKind::Add(2)),
        event(&k, "c", 200, EventKind::Clear),
        event(&k, "d", 300, EventKind::Add(-4)),
        event(&k, "e", 400, EventKind::Add(5)),
    ];
    for e in written.iter().rev() {
        append_ok(store, e).await;
    }
    let (from, until) = (Timestamp::from_micros(100), Timestamp::from_micros(400));
    let mut listed = Vec::new();
    let mut cursor: Option<EventCursor> = None;
    loop {
        let page = store.list_events(&k, from, until, cursor.as_ref(), 2).await.expect("list");
        assert!(page.len() <= 2, "a page holds at most its limit");
        let Some(last) = page.last() else { break };
        cursor = Some(EventCursor::after(last));
        listed.extend(page);
    }
    assert_eq!(listed, written[..4].to_vec(), "in order, `until` excluded, other counters left out");
    let all = store.list_events(&k, Timestamp::MIN, Timestamp::MAX, None, 100).await.expect("list");
    assert_eq!(all, written.to_vec());
    let none = store.list_events(&key("ns", "missing"), Timestamp::MIN, Timestamp::MAX, None, 10).await;
    assert_eq!(none.expect("list"), Vec::new());
}

/// `from` is inclusive and `until` exclusive, so adjacent windows never count an event twice.
pub async fn fold_window_is_half_open<S: Store>(store: &S, _clock: &ManualClock) {
    let k = key("ns", "c");
    for (i, t) in [99, 100, 101, 199, 200].into_iter().enumerate() {
        append_ok(store, &event(&k, &format!("t{i}"), t, EventKind::Add(1 << i))).await;
    }
    let fold = |a, b| store.fold(&k, Timestamp::from_micros(a), Timestamp::from_micros(b));
    assert_eq!(fold(100, 200).await.expect("fold").sum, 0b01110);
    assert_eq!(fold(200, 300).await.expect("fold").sum, 0b10000);
    assert_eq!(fold(0, 100).await.expect("fold").sum, 0b00001);
    assert_eq!(fold(200, 200).await.expect("fold"), Fold::default());
    assert_eq!(fold(300, 100).await.expect("fold"), Fold::default());
}

/// A counter nobody wrote has no events and no state.
pub async fn fold_and_state_of_unknown_counter_are_empty<S: Store>(store: &S, _clock: &ManualClock) {
    let k = key("ns", "nobody");
    assert_eq!(fold_all(store, &k).await, Fold::default());
    assert_eq!(store.counter_state(&k).await.expect("state"), CounterState::default());
}

/// `last_write` tracks the greatest generation time, not the latest arrival.
pub async fn last_write_is_the_greatest_event_time<S: Store>(store: &S, _clock: &ManualClock) {
    let k = key("ns", "c");
    append_ok(store, &event(&k, "a", 500, EventKind::Add(1))).await;
    append_ok(store, &event(&k, "b", 300, EventKind::Clear)).await;
    let state = store.counter_state(&k).await.expect("state");
    assert_eq!(state.last_write, Some(Timestamp::from_micros(500)));
    assert_eq!(state.checkpoint, None);
    assert!(state.has_unfolded_events());
}

/// A stale checkpoint never replaces a newer one.
pub async fn checkpoint_never_moves_backwards<S: Store>(store: &S, _clock: &ManualClock) {
    let k = key("ns", "c");
    append_ok(store, &event(&k, "a", 5, EventKind::Add(1))).await;
    let newer = Checkpoint { count: 10, until: Timestamp::from_micros(200) };
    let older = Checkpoint { count: 3, until: Timestamp::from_micros(100) };
    assert_eq!(store.put_checkpoint(&k, newer).await.expect("put"), newer);
    assert_eq!(store.put_checkpoint(&k, older).await.expect("put"), newer);
    let state = store.counter_state(&k).await.expect("state");
    assert_eq!(state.checkpoint, Some(newer));
    assert!(!state.has_unfolded_events());
    let newest = Checkpoint { count: 11, until: Timestamp::from_micros(300) };
    assert_eq!(store.put_checkpoint(&k, newest).await.expect("put"), newest);
}

/// A list of checkpoints is stored as the single calls would store them, in order, a repeated
/// key included, and each is answered with what is stored afterwards.
pub async fn put_checkpoints_answers_each_as_alone<S: Store>(store: &S, _clock: &ManualClock) {
    let (a, b) = (key("n", "a"), key("n", "b"));
    let at = |count, micros| Checkpoint { count, until: Timestamp::from_micros(micros) };
    assert_eq!(store.put_checkpoint(&b, at(7, 500)).await.expect("put"), at(7, 500));
    let list =
        [(a.clone(), at(2, 100)), (b.clone(), at(3, 300)), (a.clone(), at(1, 50)), (a.clone(), at(4, 200))];
    let answers: Vec<_> = store.put_checkpoints(&list).await.into_iter().map(|r| r.expect("put")).collect();
    assert_eq!(answers, vec![at(2, 100), at(7, 500), at(2, 100), at(4, 200)]);
    assert_eq!(store.checkpoint(&a).await.expect("a"), Some(at(4, 200)));
    assert_eq!(store.checkpoint(&b).await.expect("b"), Some(at(7, 500)));
    assert!(store.put_checkpoints(&[]).await.is_empty());
}

/// Paging through counters visits each once, and the namespace filter holds.
pub async fn scan_counters_visits_every_counter_once<S: Store>(store: &S, _clock: &ManualClock) {
    let mut expected = BTreeSet::new();
    for ns in ["a", "b", "c"] {
        for i in 0..7 {
            let k = key(ns, &format!("counter-{i}"));
            append_ok(store, &event(&k, "t", 1, EventKind::Add(1))).await;
            expected.insert(k.to_string());
        }
    }
    for filter in [None, Some(Namespace::new("b").expect("ns"))] {
        let (mut seen, mut after) = (Vec::new(), None::<CounterKey>);
        loop {
            let page = store.scan_counters(filter.as_ref(), after.as_ref(), 4).await.expect("scan");
            assert!(page.len() <= 4);
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            seen.extend(page.iter().map(|(k, s)| {
                assert_eq!(s.last_write, Some(Timestamp::from_micros(1)));
                k.to_string()
            }));
        }
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "a counter was listed twice");
        let want: BTreeSet<_> = match &filter {
            None => expected.clone(),
            Some(ns) => expected.iter().filter(|k| k.starts_with(&format!("{ns}:"))).cloned().collect(),
        };
        assert_eq!(unique, want);
    }
}

/// Deletion takes only events older than the bound, oldest first, at most `limit` per call.
pub async fn delete_events_before_removes_only_older_events<S: Store>(store: &S, _clock: &ManualClock) {
    let k = key("ns", "c");
    let other = key("ns", "other");
    for t in 1..=10 {
        append_ok(store, &event(&k, &format!("t{t}"), t, EventKind::Add(t))).await;
        append_ok(store, &event(&other, &format!("t{t}"), t, EventKind::Add(t))).await;
    }
    let before = Timestamp::from_micros(8);
    assert_eq!(store.delete_events_before(&k, before, 4).await.expect("delete"), 4);
    assert_eq!(fold_all(store, &k).await.sum, 55 - (1 + 2 + 3 + 4));
    assert_eq!(store.delete_events_before(&k, before, 100).await.expect("delete"), 3);
    assert_eq!(store.delete_events_before(&k, before, 100).await.expect("delete"), 0);
    assert_eq!(fold_all(store, &k).await.sum, 8 + 9 + 10);
    assert_eq!(fold_all(store, &other).await.sum, 55);
    assert_eq!(store.find_token(&k, "t9").await.expect("find").map(|s| s.kind), Some(EventKind::Add(9)));
}

/// An append whose deadline has passed on the store's clock writes nothing.
pub async fn append_after_deadline_writes_nothing<S: Store>(store: &S, clock: &ManualClock) {
    let k = key("ns", "c");
    let now = clock.now();
    let e = event(&k, "late", now.as_micros() - 10, EventKind::Add(1));
    let err = store.append(&e, now, WINDOW).await.expect_err("deadline passed");
    assert!(matches!(err, StoreError::DeadlinePassed { deadline, .. } if deadline == now), "{err:?}");
    assert_eq!(fold_all(store, &k).await, Fold::default());
    assert_eq!(store.counter_state(&k).await.expect("state"), CounterState::default());
    let deadline = now.saturating_add(Duration::from_secs(1));
    assert_eq!(store.find_token(&k, "late").await.expect("find"), None, "a refused append takes no token");
    assert_eq!(store.append(&e, deadline, WINDOW).await.expect("in time"), Appended::New);
}

/// The namespace table keeps what it is given and refuses duplicates and unknown names.
pub async fn namespaces_create_get_list_update_delete<S: Store>(store: &S, _clock: &ManualClock) {
    let (a, b) = (Namespace::new("a").expect("ns"), Namespace::new("b").expect("ns"));
    let config = NamespaceConfig { accept_limit: Duration::from_secs(9), ..Default::default() };
    store.create_namespace(&b, &config).await.expect("create b");
    store.create_namespace(&a, &NamespaceConfig::default()).await.expect("create a");
    let err = store.create_namespace(&a, &config).await.expect_err("exists");
    assert_eq!(err, StoreError::NamespaceExists(a.clone()));
    assert_eq!(store.get_namespace(&a).await.expect("get"), Some(NamespaceConfig::default()));
    let names: Vec<_> = store.list_namespaces().await.expect("list").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec![a.clone(), b.clone()]);
    store.update_namespace(&a, &config).await.expect("update");
    assert_eq!(store.get_namespace(&a).await.expect("get"), Some(config.clone()));
    let missing = Namespace::new("missing").expect("ns");
    let err = store.update_namespace(&missing, &config).await.expect_err("missing");
    assert_eq!(err, StoreError::NamespaceNotFound(missing.clone()));
    assert!(store.delete_namespace(&a).await.expect("delete"));
    assert!(!store.delete_namespace(&a).await.expect("delete again"));
    assert_eq!(store.get_namespace(&a).await.expect("get"), None);
}

/// Deleting a namespace removes its counters' events and state, and no other namespace's.
pub async fn delete_namespace_removes_its_counters_only<S: Store>(store: &S, _clock: &ManualClock) {
    let (gone, kept) = (key("gone", "c"), key("kept", "c"));
    for k in [&gone, &kept] {
        store.create_namespace(&k.namespace, &NamespaceConfig::default()).await.expect("create");
        append_ok(store, &event(k, "t", 1, EventKind::Add(4))).await;
        store.put_checkpoint(k, Checkpoint { count: 4, until: Timestamp::from_micros(2) }).await.expect("cp");
    }
    assert!(store.delete_namespace(&gone.namespace).await.expect("delete"));
    assert_eq!(fold_all(store, &gone).await, Fold::default());
    assert_eq!(store.counter_state(&gone).await.expect("state"), CounterState::default());
    assert_eq!(fold_all(store, &kept).await.sum, 4);
    assert!(store.counter_state(&kept).await.expect("state").checkpoint.is_some());
}

/// Keys are built so that `("ab", "c")` and `("a", "bc")` never share events or state.
pub async fn names_that_concatenate_alike_stay_apart<S: Store>(store: &S, _clock: &ManualClock) {
    let (x, y) = (key("ab", "c"), key("a", "bc"));
    append_ok(store, &event(&x, "t", 1, EventKind::Add(1))).await;
    append_ok(store, &event(&y, "t", 1, EventKind::Add(2))).await;
    assert_eq!(fold_all(store, &x).await.sum, 1);
    assert_eq!(fold_all(store, &y).await.sum, 2);
    let a = Namespace::new("a").expect("ns");
    let listed = store.scan_counters(Some(&a), None, 10).await.expect("scan");
    assert_eq!(listed.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), vec![y]);
}

/// Many appends in flight at once all land, each exactly once. A networked store may refuse
/// some as unavailable when they outlast its timeout (their outcome unknown: a 2-core machine
/// under load made a single Cassandra node do so): each is retried with its token, one at a
/// time, as a client would, and must then land or be found to have landed.
pub async fn concurrent_appends_all_land<S: Store>(store: &S, _clock: &ManualClock) {
    let k = key("ns", "hot");
    let events: Vec<Event> =
        (0..400).map(|i| event(&k, &format!("t{i}"), 1000 + i, EventKind::Add(i))).collect();
    let appends = events.iter().map(|e| store.append(e, far_deadline(), WINDOW));
    let mut results = futures::future::join_all(appends).await;
    for _ in 0..5 {
        for (e, result) in events.iter().zip(&mut results) {
            if matches!(result, Err(StoreError::Unavailable(_))) {
                *result = store.append(e, far_deadline(), WINDOW).await;
            }
        }
    }
    let landed = |(e, r): &(&Event, &StoreResult<Appended>)| match r {
        Ok(Appended::New) => true,
        Ok(Appended::Duplicate { generation_time }) => *generation_time == e.token.generation_time(),
        Err(_) => false,
    };
    let other: Vec<_> = events.iter().zip(&results).filter(|pair| !landed(pair)).collect();
    assert!(other.is_empty(), "appends that did not land: {other:?}");
    assert_eq!(
        fold_all(store, &k).await,
        Fold { sum: (0..400).sum::<i64>().into(), cleared: false, events: 400 }
    );
}

/// Different mutations racing under one identity: at most one is acknowledged, and the log
/// holds exactly what was acknowledged.
pub async fn racing_conflicting_appends_acknowledge_at_most_one<S: Store>(store: &S, _clock: &ManualClock) {
    for round in 0..20 {
        let k = key("ns", &format!("race-{round}"));
        let kinds = [EventKind::Add(1), EventKind::Add(2), EventKind::Clear, EventKind::Add(4)];
        let appends = kinds.map(|kind| {
            let e = event(&k, "shared", 500, kind);
            async move { (kind, store.append(&e, far_deadline(), WINDOW).await) }
        });
        let results = futures::future::join_all(appends).await;
        let acked: Vec<EventKind> =
            results.iter().filter(|(_, r)| r == &Ok(Appended::New)).map(|(kind, _)| *kind).collect();
        assert!(acked.len() <= 1, "round {round}: several acknowledged: {results:?}");
        for (_, r) in &results {
            assert!(
                matches!(r, Ok(Appended::New) | Err(StoreError::Conflict { .. })),
                "round {round}: {r:?}"
            );
        }
        assert_eq!(fold_all(store, &k).await, Fold::of(acked), "round {round}: {results:?}");
    }
}

/// `append_new` (a server-made token) stores the event as `append` would: counted once, covered
/// by `last_write`, refused past its deadline; its token is not taken.
pub async fn append_new_lands_like_append_without_taking_its_token<S: Store>(store: &S, clock: &ManualClock) {
    let k = key("ns", "c");
    let events: Vec<_> =
        (0..20).map(|i| event(&k, &format!("srv-{i}"), 100 + i, EventKind::Add(1))).collect();
    let appends = events.iter().map(|e| store.append_new(e, far_deadline()));
    for appended in futures::future::join_all(appends).await {
        assert_eq!(appended.expect("append_new"), Appended::New);
    }
    assert_eq!(store.find_token(&k, "srv-3").await.expect("find"), None);
    assert_eq!(fold_all(store, &k).await, Fold { sum: 20, cleared: false, events: 20 });
    let state = store.counter_state(&k).await.expect("state");
    assert_eq!(state.last_write, Some(Timestamp::from_micros(119)));

    let late = event(&k, "srv-late", 200, EventKind::Add(7));
    let err = store.append_new(&late, clock.now()).await.expect_err("deadline passed");
    assert!(matches!(err, StoreError::DeadlinePassed { .. }), "{err:?}");
    assert_eq!(fold_all(store, &k).await.sum, 20);
}

/// A batch answers each append as the single call would: new, duplicate (of a stored event or
/// of an earlier one in the same batch), conflict, or a passed deadline; what lands is folded
/// and raises `last_write`.
pub async fn append_batch_answers_each_append_as_alone<S: Store>(store: &S, clock: &ManualClock) {
    use crate::{BatchAppend, IdentityCheck};
    let k = key("ns", "c");
    let stored = event(&k, "stored", 100, EventKind::Add(1));
    append_ok(store, &stored).await;
    let batch = |e: &Event, check, deadline| BatchAppend { event: e.clone(), deadline, check };
    let fresh = event(&k, "srv-1", 110, EventKind::Add(2));
    let new = event(&k, "new", 120, EventKind::Add(4));
    let late = event(&k, "late", 130, EventKind::Add(8));
    let conflicting = event(&k, "stored", 100, EventKind::Clear);
    let appends = [
        batch(&fresh, IdentityCheck::KnownNew, far_deadline()),
        batch(&stored, IdentityCheck::Claim { window: WINDOW }, far_deadline()),
        batch(&new, IdentityCheck::Claim { window: WINDOW }, far_deadline()),
        batch(&new, IdentityCheck::Claim { window: WINDOW }, far_deadline()),
        batch(&conflicting, IdentityCheck::Claim { window: WINDOW }, far_deadline()),
        batch(&late, IdentityCheck::Claim { window: WINDOW }, clock.now()),
    ];
    let results = store.append_batch(&appends).await;
    assert_eq!(results.len(), appends.len());
    assert_eq!(results[0], Ok(Appended::New));
    assert_eq!(results[1], Ok(duplicate_at(100)));
    assert_eq!(results[2], Ok(Appended::New));
    assert_eq!(results[3], Ok(duplicate_at(120)), "the second copy in one batch is a retry");
    assert!(matches!(results[4], Err(StoreError::Conflict { .. })), "{:?}", results[4]);
    assert!(matches!(results[5], Err(StoreError::DeadlinePassed { .. })), "{:?}", results[5]);
    assert_eq!(fold_all(store, &k).await, Fold { sum: 7, cleared: false, events: 3 });
    let state = store.counter_state(&k).await.expect("state");
    assert_eq!(state.last_write, Some(Timestamp::from_micros(120)));
}

/// `checkpoint` answers what `counter_state` holds: nothing for an unknown counter or one with
/// events only, then the stored checkpoint.
pub async fn checkpoint_alone_is_the_state_s_checkpoint<S: Store>(store: &S, _clock: &ManualClock) {
    let k = key("ns", "c");
    assert_eq!(store.checkpoint(&k).await.expect("unknown"), None);
    append_ok(store, &event(&k, "t", 100, EventKind::Add(3))).await;
    assert_eq!(store.checkpoint(&k).await.expect("events only"), None);
    let cp = Checkpoint { count: 3, until: Timestamp::from_micros(200) };
    store.put_checkpoint(&k, cp).await.expect("put");
    assert_eq!(store.checkpoint(&k).await.expect("stored"), Some(cp));
    assert_eq!(store.counter_state(&k).await.expect("state").checkpoint, Some(cp));
}

/// Creates `name` again after its deletion, waiting out (on the store's clock) the time a
/// shared store may ask for before it allows that.
async fn create_again<S: Store>(store: &S, clock: &ManualClock, name: &Namespace, config: &NamespaceConfig) {
    match store.create_namespace(name, config).await {
        Ok(()) => {}
        Err(StoreError::NamespaceRecentlyDeleted { name: refused, until }) => {
            assert_eq!(&refused, name);
            assert!(until > clock.now(), "refused until {until}, which has passed");
            clock.set(until);
            store.create_namespace(name, config).await.expect("create again once allowed");
        }
        Err(e) => panic!("creating {name} again: {e}"),
    }
}

/// A namespace created again after its deletion starts empty: no event, state or token of the
/// deleted one shows through, and writes carrying times before the deletion (a token made
/// just before it) are seen, events, `last_write` and checkpoint alike. Cassandra's deletion
/// tombstones once hid such state writes; the embedded store once remembered the deleted
/// namespace's `last_write`.
pub async fn a_namespace_created_again_starts_empty_and_sees_every_write<S: Store>(
    store: &S,
    clock: &ManualClock,
) {
    let k = key("reborn", "c");
    let config = NamespaceConfig::default();
    let now = clock.now().as_micros();
    store.create_namespace(&k.namespace, &config).await.expect("create");
    append_ok(store, &event(&k, "t", now - 1_000, EventKind::Add(5))).await;
    let old = Checkpoint { count: 5, until: Timestamp::from_micros(now - 999) };
    store.put_checkpoint(&k, old).await.expect("checkpoint");
    assert!(store.delete_namespace(&k.namespace).await.expect("delete"));

    create_again(store, clock, &k.namespace, &config).await;
    assert_eq!(store.counter_state(&k).await.expect("state"), CounterState::default());
    // The deleted namespace's token is free again, and the event is older than all of it.
    let reborn = event(&k, "t", now - 2_000, EventKind::Add(1));
    assert_eq!(append_ok(store, &reborn).await, Appended::New);
    let fresh = Checkpoint { count: 0, until: Timestamp::from_micros(now - 3_000) };
    assert_eq!(store.put_checkpoint(&k, fresh).await.expect("checkpoint"), fresh);
    let state =
        CounterState { checkpoint: Some(fresh), last_write: Some(Timestamp::from_micros(now - 2_000)) };
    assert_eq!(store.counter_state(&k).await.expect("state"), state);
    assert_eq!(fold_all(store, &k).await.sum, 1);
    let scanned = store.scan_counters(Some(&k.namespace), None, 10).await.expect("scan");
    assert_eq!(scanned, vec![(k.clone(), state)]);
    assert_eq!(store.scan_counters(None, None, 10).await.expect("scan all"), vec![(k, state)]);
}
