//! Durable appends through group commit, at several concurrency levels.
//!
//! Each level runs `concurrency` tasks that append distinct events to 1,000 counters, every
//! append acknowledged only after its batch is synced. Printed after each level: the mean
//! number of appends one `fdatasync` covered.
//!
//! Run: `cargo bench -p tally-store-fjall --bench group_commit`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tally_core::{CounterKey, Event, EventKind, IdempotencyToken, SystemClock, Timestamp};
use tally_store::EventLog;
use tally_store_fjall::{FjallOptions, FjallStore};

fn appends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let store =
        Arc::new(FjallStore::open(dir.path(), Arc::new(SystemClock), FjallOptions::default()).expect("open"));
    let keys: Arc<Vec<CounterKey>> =
        Arc::new((0..1000).map(|i| CounterKey::parse_joined(&format!("bench:c{i}")).expect("key")).collect());
    let sequence = Arc::new(AtomicU64::new(0));

    let mut group = c.benchmark_group("durable_append");
    group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(5));
    for concurrency in [1usize, 16, 64, 256, 1024] {
        let before = store.writer_stats();
        group.bench_with_input(BenchmarkId::from_parameter(concurrency), &concurrency, |b, &concurrency| {
            b.to_async(&runtime).iter_custom(|iters| {
                let (store, keys, sequence) = (store.clone(), keys.clone(), sequence.clone());
                async move {
                    let started = Instant::now();
                    let tasks: Vec<_> = (0..concurrency)
                        .map(|task| {
                            let (store, keys, sequence) = (store.clone(), keys.clone(), sequence.clone());
                            let share = iters / concurrency as u64
                                + u64::from((task as u64) < iters % concurrency as u64);
                            tokio::spawn(async move {
                                for _ in 0..share {
                                    let n = sequence.fetch_add(1, Ordering::Relaxed);
                                    let event = Event {
                                        key: keys[(n % 1000) as usize].clone(),
                                        token: IdempotencyToken::new(
                                            &format!("b{n}"),
                                            Timestamp::from_micros(n as i64),
                                        )
                                        .expect("token"),
                                        kind: EventKind::Add(1),
                                    };
                                    store.append(&event, Timestamp::MAX).await.expect("append");
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("task");
                    }
                    started.elapsed()
                }
            });
        });
        let after = store.writer_stats();
        let (requests, commits) = (after.0 - before.0, after.1 - before.1);
        eprintln!(
            "concurrency {concurrency}: {requests} appends in {commits} syncs, {:.1} appends per sync",
            requests as f64 / commits.max(1) as f64
        );
    }
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
