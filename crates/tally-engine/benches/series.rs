//! `GetCountSeries` for a day of minutes on the embedded store: one counter whose events are
//! spread over the last 24 hours, read into 1,440 one-minute buckets.
//!
//! The series is computed from the event log when asked (adds and rollups do no work for it),
//! so what a request costs grows with the events in its range: 1,440, 14,400 and 144,000
//! events here (one, ten and a hundred adds a minute).
//!
//! Run: `cargo bench -p tally-engine --bench series`

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use tally_core::{Clock, CounterKey, Event, EventKind, IdempotencyToken, SystemClock};
use tally_engine::{Engine, EngineOptions, LocalBestEffort, LocalCache, SeriesRange};
use tally_store::EventLog;
use tally_store_fjall::{FjallOptions, FjallStore};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn series(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(FjallStore::open(dir.path(), clock.clone(), FjallOptions::default()).expect("open"));
    let engine = runtime.block_on(async {
        Engine::open(
            store.clone(),
            Arc::new(LocalCache::new(1024)),
            Arc::new(LocalBestEffort::default()),
            clock.clone(),
            EngineOptions::default(),
        )
        .await
        .expect("engine")
    });
    let end = clock.now();
    let start = end.saturating_sub(DAY);
    let range = SeriesRange::new(start, end, Duration::from_secs(60)).expect("range");
    let mut group = c.benchmark_group("series_day_of_minutes");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    for events in [1_440u64, 14_400, 144_000] {
        let key = CounterKey::parse_joined(&format!("default:series{events}")).expect("key");
        let gap = DAY.as_micros() as u64 / events;
        runtime.block_on(futures::stream::iter(0..events).for_each_concurrent(512, |i| {
            let (store, key) = (store.clone(), key.clone());
            async move {
                let at = start.saturating_add(Duration::from_micros(i * gap));
                let token = IdempotencyToken::new(&format!("e{i}"), at).expect("token");
                let event = Event { key, token, kind: EventKind::Add(1) };
                store.append_new(&event, tally_core::Timestamp::MAX).await.expect("append");
            }
        }));
        group.throughput(Throughput::Elements(events));
        group.bench_with_input(BenchmarkId::from_parameter(events), &key, |b, key| {
            b.to_async(&runtime).iter(|| {
                let engine = engine.clone();
                async move {
                    let series = engine.series(key, range).await.expect("series");
                    assert_eq!((series.buckets.len(), series.total), (1_440, events as i64));
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, series);
criterion_main!(benches);
