//! Folds longer than one chunk (4096 events) resume exactly where the previous chunk ended.

use std::sync::Arc;

use futures::StreamExt;
use tally_core::{CounterKey, Event, EventKind, Fold, IdempotencyToken, ManualClock, Timestamp};
use tally_store::EventLog;
use tally_store_fjall::{FjallOptions, FjallStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_across_chunks_sees_every_event_once_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let store = FjallStore::open(dir.path(), Arc::new(clock), FjallOptions::default()).expect("open");
    let key = CounterKey::parse_joined("ns:long").expect("key");
    let kinds: Vec<EventKind> =
        (0..10_000i64).map(|i| if i == 5_000 { EventKind::Clear } else { EventKind::Add(i) }).collect();
    futures::stream::iter(kinds.iter().enumerate())
        .for_each_concurrent(256, |(i, kind)| {
            let (store, key) = (&store, key.clone());
            async move {
                let token = IdempotencyToken::new("t", Timestamp::from_micros(i as i64)).expect("token");
                store.append_new(&Event { key, token, kind: *kind }, Timestamp::MAX).await.expect("append");
            }
        })
        .await;
    let whole = store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
    assert_eq!(whole, Fold::of(kinds.iter().copied()));
    assert_eq!(whole.sum, (5_001..10_000i128).sum::<i128>());
    let window =
        store.fold(&key, Timestamp::from_micros(100), Timestamp::from_micros(9_100)).await.expect("fold");
    assert_eq!(window, Fold::of(kinds[100..9_100].iter().copied()));
}
