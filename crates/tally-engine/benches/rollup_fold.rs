//! The rollup fold on the embedded store: scanning and summing a counter's events.
//!
//! One counter holds 1,000, 10,000 or 100,000 events; each sample folds all of them, which is
//! what the first rollup after a long pause (or an accurate read with a long tail) costs.
//!
//! Run: `cargo bench -p tally-engine --bench rollup_fold`

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use tally_core::{CounterKey, Event, EventKind, IdempotencyToken, SystemClock, Timestamp};
use tally_store::EventLog;
use tally_store_fjall::{FjallOptions, FjallStore};

fn fold(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let store =
        Arc::new(FjallStore::open(dir.path(), Arc::new(SystemClock), FjallOptions::default()).expect("open"));
    let mut group = c.benchmark_group("rollup_fold");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    for events in [1_000u64, 10_000, 100_000] {
        let key = CounterKey::parse_joined(&format!("bench:fold{events}")).expect("key");
        runtime.block_on(futures::stream::iter(0..events).for_each_concurrent(512, |i| {
            let (store, key) = (store.clone(), key.clone());
            async move {
                let token =
                    IdempotencyToken::new(&format!("e{i}"), Timestamp::from_micros(i as i64)).expect("token");
                let event = Event { key, token, kind: EventKind::Add(1) };
                store.append_new(&event, Timestamp::MAX).await.expect("append");
            }
        }));
        group.throughput(Throughput::Elements(events));
        group.bench_with_input(BenchmarkId::from_parameter(events), &key, |b, key| {
            b.to_async(&runtime).iter(|| {
                let store = store.clone();
                async move {
                    let fold = store.fold(key, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
                    assert_eq!(fold.events, events);
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fold);
criterion_main!(benches);
