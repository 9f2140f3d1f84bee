//! Time slices: events spread over per-slice tables, and whole slices dropped by retention.

use std::time::Duration;

use tally_core::{CounterKey, CounterName, Event, EventKind, IdempotencyToken, Namespace, Timestamp};
use tally_store::{EventLog, testsuite::suite_clock};
use tally_store_cassandra::Layout;

fn event(key: &CounterKey, token: &str, secs: i64, delta: i64) -> Event {
    Event {
        key: key.clone(),
        token: IdempotencyToken::new(token, Timestamp::from_millis(secs * 1000)).expect("token"),
        kind: EventKind::Add(delta),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folds_span_slices_and_dropping_a_slice_takes_only_its_events() {
    // One-minute slices of ten-second buckets, so a few events cover three tables.
    let layout = Layout::new(Duration::from_secs(60), Duration::from_secs(10), 3).expect("layout");
    let store = super::support::open_with(suite_clock(), layout).await;
    let key = CounterKey::new(Namespace::new("ns").expect("ns"), CounterName::new("c").expect("name"));
    for (i, secs) in [5, 15, 59, 60, 61, 125].into_iter().enumerate() {
        store.append_new(&event(&key, &format!("t{i}"), secs, 1 << i), Timestamp::MAX).await.expect("append");
    }
    let all = store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
    assert_eq!((all.sum, all.events), (0b111111, 6));
    let middle =
        store.fold(&key, Timestamp::from_millis(15_000), Timestamp::from_millis(61_000)).await.expect("fold");
    assert_eq!(middle.sum, 0b01110);

    // The first slice is [0, 60s): dropping before 90s may take it, not the one still open.
    assert_eq!(store.drop_slices_before(Timestamp::from_millis(90_000)).await.expect("drop"), 1);
    let left = store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
    assert_eq!((left.sum, left.events), (0b111000, 3));
    assert_eq!(store.drop_slices_before(Timestamp::from_millis(90_000)).await.expect("drop again"), 0);
    // Short windows name their slices directly: a dropped or never created table is empty.
    let window = |a: i64, b: i64| store.fold(&key, Timestamp::from_millis(a), Timestamp::from_millis(b));
    assert_eq!(window(0, 59_000).await.expect("fold over the dropped slice").events, 0);
    assert_eq!(window(300_000, 310_000).await.expect("fold over a slice never created").events, 0);
    assert_eq!(window(59_000, 130_000).await.expect("fold across slices").sum, 0b111000);
    // A later append into a dropped slice's time recreates its table.
    store.append_new(&event(&key, "late", 30, 64), Timestamp::MAX).await.expect("append");
    assert_eq!(store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold").sum, 0b1111000);
}
