//! Durable appends through group commit, at several concurrency levels, three ways.
//!
//! Each level runs tasks that append distinct events to 1,000 counters, every append
//! acknowledged only after its batch is synced:
//! - `durable_append`: `concurrency` tasks, one `append` (identity looked up) at a time;
//! - `durable_append_new`: the same with `append_new`, as the engine appends when it knows the
//!   identity is new (server-made tokens, and every add on an exact local tail);
//! - `durable_append_batch`: `concurrency / 64` tasks, each appending 64 events per
//!   `append_batch`, as a Redis pipeline or a `BatchAddCount` does: `concurrency` appends in
//!   flight in all.
//!
//! Printed after each level: the mean number of appends one `fdatasync` covered.
//!
//! Run: `cargo bench -p tally-store-fjall --bench group_commit`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tally_core::{CounterKey, Event, EventKind, IdempotencyToken, SystemClock, Timestamp};
use tally_store::{BatchAppend, EventLog, IdentityCheck};
use tally_store_fjall::{FjallOptions, FjallStore};

/// Events per `append_batch` in the batch mode.
const BATCH: usize = 64;

#[derive(Clone, Copy)]
enum Mode {
    Append,
    AppendNew,
    Batch,
}

impl Mode {
    fn group(self) -> &'static str {
        match self {
            Mode::Append => "durable_append",
            Mode::AppendNew => "durable_append_new",
            Mode::Batch => "durable_append_batch",
        }
    }
}

struct Fixture {
    store: Arc<FjallStore>,
    keys: Arc<Vec<CounterKey>>,
    sequence: Arc<AtomicU64>,
}

impl Fixture {
    fn event(&self) -> Event {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        Event {
            key: self.keys[(n % 1000) as usize].clone(),
            token: IdempotencyToken::new(&format!("b{n}"), Timestamp::from_micros(n as i64)).expect("token"),
            kind: EventKind::Add(1),
        }
    }

    /// Appends `count` events the way `mode` says, one request after another.
    async fn run_task(&self, mode: Mode, count: u64) {
        match mode {
            Mode::Append => {
                for _ in 0..count {
                    self.store
                        .append(&self.event(), Timestamp::MAX, std::time::Duration::from_secs(600))
                        .await
                        .expect("append");
                }
            }
            Mode::AppendNew => {
                for _ in 0..count {
                    self.store.append_new(&self.event(), Timestamp::MAX).await.expect("append_new");
                }
            }
            Mode::Batch => {
                let mut left = count as usize;
                while left > 0 {
                    let n = left.min(BATCH);
                    let batch: Vec<_> = (0..n)
                        .map(|_| BatchAppend {
                            event: self.event(),
                            deadline: Timestamp::MAX,
                            check: IdentityCheck::KnownNew,
                        })
                        .collect();
                    for result in self.store.append_batch(&batch).await {
                        result.expect("batch append");
                    }
                    left -= n;
                }
            }
        }
    }
}

fn appends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let store =
        Arc::new(FjallStore::open(dir.path(), Arc::new(SystemClock), FjallOptions::default()).expect("open"));
    let keys: Arc<Vec<CounterKey>> =
        Arc::new((0..1000).map(|i| CounterKey::parse_joined(&format!("bench:c{i}")).expect("key")).collect());
    let fixture = Arc::new(Fixture { store: store.clone(), keys, sequence: Arc::new(AtomicU64::new(0)) });

    for mode in [Mode::Append, Mode::AppendNew, Mode::Batch] {
        let mut group = c.benchmark_group(mode.group());
        group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(5));
        let levels: &[usize] = match mode {
            Mode::Batch => &[64, 256, 1024],
            _ => &[1, 16, 64, 256, 1024],
        };
        for &concurrency in levels {
            let tasks = match mode {
                Mode::Batch => concurrency / BATCH,
                _ => concurrency,
            };
            let before = store.writer_stats();
            group.bench_with_input(BenchmarkId::from_parameter(concurrency), &tasks, |b, &tasks| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let fixture = fixture.clone();
                    async move {
                        let started = Instant::now();
                        let handles: Vec<_> = (0..tasks)
                            .map(|task| {
                                let fixture = fixture.clone();
                                let share =
                                    iters / tasks as u64 + u64::from((task as u64) < iters % tasks as u64);
                                tokio::spawn(async move { fixture.run_task(mode, share).await })
                            })
                            .collect();
                        for handle in handles {
                            handle.await.expect("task");
                        }
                        started.elapsed()
                    }
                });
            });
            let after = store.writer_stats();
            let (requests, commits) = (after.0 - before.0, after.1 - before.1);
            eprintln!(
                "{} {concurrency}: {requests} writer requests in {commits} syncs, {:.1} requests per sync",
                mode.group(),
                requests as f64 / commits.max(1) as f64
            );
        }
        group.finish();
    }
}

criterion_group!(benches, appends);
criterion_main!(benches);
