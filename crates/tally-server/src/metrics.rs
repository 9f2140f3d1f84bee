//! Prometheus metrics: the process-wide recorder and per-request observation.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tally_core::Operation;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, in seconds: 50 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Checkpoint ages, in seconds: a second to a day, so that the ages after a restart (the time
/// the server was down) land in a bucket, not in `+Inf`.
const AGE_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0];
/// Group-commit batch sizes.
const BATCH_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];

/// The recorder's handle, installing the recorder on first use. A process has one recorder,
/// shared by every server it runs (tests run several).
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("tally_checkpoint_age_seconds".into()),
                        AGE_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("tally_group_commit_batch_requests".into()),
                        BATCH_BUCKETS,
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metric buckets refused; using summaries");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

/// Every metric the server exports, with its help text: what `# HELP` says on `/metrics`.
/// A metric recorded anywhere must be listed here (a test checks every exported metric has
/// its help line).
pub const DESCRIBED: &[(&str, Kind, &str)] = &[
    (
        "tally_store_shed_total",
        Kind::Counter,
        "Writes the embedded store shed unwritten because they waited longer than [store] max_queue_wait.",
    ),
    (
        "tally_http_parse_refusals_total",
        Kind::Counter,
        "HTTP/1 requests refused before routing because they could not be parsed (malformed, or a head over 64 KiB), by code.",
    ),
    (
        "tally_grpc_messages_late_total",
        Kind::Counter,
        "gRPC calls refused DEADLINE_EXCEEDED because their request message did not arrive whole within body_read_timeout.",
    ),
    (
        "tally_auth_failures_total",
        Kind::Counter,
        "Failed authentications (missing, malformed or unknown tokens), by door.",
    ),
    (
        "tally_auth_throttled_total",
        Kind::Counter,
        "Authentications refused without a check because the client's address failed too often lately, by door.",
    ),
    (
        "tally_requests_total",
        Kind::Counter,
        "Requests answered, by transport, operation and code (OK or the error code).",
    ),
    (
        "tally_request_duration_seconds",
        Kind::Histogram,
        "Time to answer a request, by transport, operation and code.",
    ),
    (
        "tally_requests_shed_total",
        Kind::Counter,
        "Counter operations refused at once because max_in_flight were already waiting.",
    ),
    (
        "tally_group_commit_seconds",
        Kind::Histogram,
        "Time one group commit (one fdatasync) of the embedded store took.",
    ),
    (
        "tally_group_commit_batch_requests",
        Kind::Histogram,
        "Requests one group commit of the embedded store took.",
    ),
    (
        "tally_store_staged_events_moved_total",
        Kind::Counter,
        "Events the embedded store moved from its journal of staged events into its events table.",
    ),
    (
        "tally_store_staged_move_prepare_seconds",
        Kind::Histogram,
        "Time a thread of its own took to write a move's staged events and tokens into new tables of the embedded store (appends go on meanwhile).",
    ),
    (
        "tally_store_staged_move_slice_seconds",
        Kind::Histogram,
        "Time one slice of a move of staged events took: the moved counters' last_write, and the journal entries' deletion (appends wait meanwhile).",
    ),
    (
        "tally_store_reopens_total",
        Kind::Counter,
        "Times the embedded store was reopened after a failed write.",
    ),
    ("tally_rollups_total", Kind::Counter, "Rollups run, by outcome."),
    ("tally_rollup_events_folded_total", Kind::Counter, "Events folded into checkpoints."),
    ("tally_rollup_lag_seconds", Kind::Histogram, "How far behind now a rollup's window ended."),
    ("tally_rollup_queue_depth", Kind::Gauge, "Counters waiting in the rollup queues."),
    (
        "tally_rollup_triggers_dropped_total",
        Kind::Counter,
        "Rollup triggers dropped by a full queue (the pending scan finds their counters later).",
    ),
    (
        "tally_rollup_triggers_forwarded_total",
        Kind::Counter,
        "Rollup triggers handed to the instance that owns the counter.",
    ),
    ("tally_rollup_triggers_received_total", Kind::Counter, "Rollup triggers taken from other instances."),
    (
        "tally_rollup_triggers_unrouted_total",
        Kind::Counter,
        "Rollup triggers rolled up here because their owner could not take them.",
    ),
    ("tally_checkpoint_age_seconds", Kind::Histogram, "Age of the checkpoint a read or rollup started from."),
    (
        "tally_count_saturated_total",
        Kind::Counter,
        "Folds whose count left the signed 64-bit range and was held at the bound.",
    ),
    ("tally_retention_events_deleted_total", Kind::Counter, "Events deleted by retention."),
    (
        "tally_retention_slices_dropped_total",
        Kind::Counter,
        "Whole event slices (Cassandra tables) dropped by retention.",
    ),
    (
        "tally_local_tail_counters",
        Kind::Gauge,
        "Counters with unfolded events in the local tail (embedded store).",
    ),
    ("tally_local_tail_events", Kind::Gauge, "Unfolded events held in the local tail (embedded store)."),
    ("tally_memcached_failures_total", Kind::Counter, "memcached calls that failed (each is a cache miss)."),
    (
        "tally_memcached_skipped_total",
        Kind::Counter,
        "memcached calls skipped while a failed server backs off.",
    ),
    (
        "tally_namespaces_auto_created_total",
        Kind::Counter,
        "Namespaces made on their first write (auto_create_namespaces).",
    ),
    ("tally_connections", Kind::Gauge, "Open connections, by door (http, grpc, resp, ops)."),
    (
        "tally_operations_in_flight",
        Kind::Gauge,
        "Counter operations admitted and not yet answered (at most max_in_flight).",
    ),
    (
        "tally_checkpoint_cache_total",
        Kind::Counter,
        "Checkpoint cache lookups, by result (hit or miss); the embedded store's engine uses its local tail instead.",
    ),
    (
        "tally_store_seconds",
        Kind::Histogram,
        "Time one store call took, by operation (append, fold, counter_state, ...).",
    ),
    (
        "tally_build_info",
        Kind::Gauge,
        "Always 1; the labels name the version, the commit and the enabled build features.",
    ),
    ("process_resident_memory_bytes", Kind::Gauge, "Resident memory of the process."),
    ("process_cpu_seconds_total", Kind::Gauge, "CPU time the process used, user and system."),
    ("process_open_fds", Kind::Gauge, "Open file descriptors."),
    ("process_max_fds", Kind::Gauge, "The soft limit on open file descriptors."),
    ("process_start_time_seconds", Kind::Gauge, "When the process started, in seconds since the Unix epoch."),
];

/// What kind of metric a [`DESCRIBED`] entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Registers the help text of every metric, and `tally_build_info`.
fn describe() {
    for (name, kind, help) in DESCRIBED {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
    let features = if cfg!(feature = "tls") { "tls" } else { "" };
    let (version, commit) = (env!("CARGO_PKG_VERSION"), crate::COMMIT);
    metrics::gauge!("tally_build_info", "version" => version, "commit" => commit, "features" => features)
        .set(1.0);
    record_process();
}

/// Sets the `process_*` gauges from `/proc/self` (Linux; elsewhere they are not exported).
pub fn record_process() {
    let Some(stats) = process::read() else { return };
    metrics::gauge!("process_resident_memory_bytes").set(stats.resident_bytes as f64);
    metrics::gauge!("process_cpu_seconds_total").set(stats.cpu_seconds);
    metrics::gauge!("process_open_fds").set(stats.open_fds as f64);
    if let Some(max) = stats.max_fds {
        metrics::gauge!("process_max_fds").set(max as f64);
    }
    if let Some(start) = stats.start_time_seconds {
        metrics::gauge!("process_start_time_seconds").set(start);
    }
}

mod process {
    /// What `/proc/self` says about this process.
    pub struct Stats {
        pub resident_bytes: u64,
        pub cpu_seconds: f64,
        pub open_fds: usize,
        pub max_fds: Option<u64>,
        pub start_time_seconds: Option<f64>,
    }

    /// Clock ticks per second in `/proc/*/stat` (`USER_HZ`), 100 on every Linux build.
    const TICKS: f64 = 100.0;

    pub fn read() -> Option<Stats> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let rss_kb: u64 =
            status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        let cpu_seconds = (ticks(11)? + ticks(12)?) / TICKS;
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|b| b.trim().parse::<f64>().ok())
        });
        let start_time_seconds = boot.zip(ticks(19)).map(|(boot, start)| boot + start / TICKS);
        let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
        let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
            l.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?.parse().ok()
        });
        Some(Stats { resident_bytes: rss_kb * 1024, cpu_seconds, open_fds, max_fds, start_time_seconds })
    }
}

/// How often recorded histogram samples are folded into their buckets.
pub const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Runs `upkeep` every `period` until `shutdown` fires.
///
/// Why not the exporter's own upkeep (`PrometheusBuilder::install_recorder`): it runs on a
/// thread of its own for the life of the process, with no way to stop it, where this task
/// belongs to the server and ends with its shutdown token, as every background task does.
///
/// The recorder keeps every histogram sample until an upkeep folds it into its buckets; a
/// scrape of `/metrics` does one, but a server nobody scrapes would otherwise keep them all:
/// without this task its memory grew by about 60 MB per million requests, without bound.
pub async fn run_upkeep_every(period: Duration, shutdown: CancellationToken, upkeep: impl Fn()) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => upkeep(),
            () = shutdown.cancelled() => return,
        }
    }
}

/// Runs one request and records its outcome: `tally_requests_total{transport, operation, code}`
/// and `tally_request_duration_seconds{transport, operation, code}`.
pub async fn observe<T>(
    transport: &'static str,
    operation: Operation,
    request: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let started = Instant::now();
    let result = request.await;
    let code = match &result {
        Ok(_) => "OK",
        Err(e) => e.code.as_str(),
    };
    record(transport, operation, code, started);
    result
}

/// Records one request that ended with `code` (a code name, or `"OK"`), begun at `started`.
pub fn record(transport: &'static str, operation: Operation, code: &'static str, started: Instant) {
    record_many(transport, operation, code, started.elapsed(), 1);
}

/// The requests of one batch by how they ended, recorded together: the adds of one pipeline
/// share one clock read and one look-up of their metrics per operation and code (nearly
/// always one pair).
#[derive(Debug, Default)]
pub struct Outcomes(Vec<(Operation, &'static str, usize)>);

impl Outcomes {
    /// Counts a request that ended with `code`.
    pub fn note(&mut self, operation: Operation, code: &'static str) {
        match self.0.iter_mut().find(|(o, c, _)| *o == operation && *c == code) {
            Some((_, _, count)) => *count += 1,
            None => self.0.push((operation, code, 1)),
        }
    }

    /// Records every request counted, each as taking `took`.
    pub fn record(self, transport: &'static str, took: Duration) {
        for (operation, code, count) in self.0 {
            record_many(transport, operation, code, took, count);
        }
    }
}

/// Records `count` requests that each ended with `code` after `took`.
fn record_many(
    transport: &'static str,
    operation: Operation,
    code: &'static str,
    took: Duration,
    count: usize,
) {
    let seconds = took.as_secs_f64();
    let observe = |(requests, duration): &RequestMetrics| {
        requests.increment(count as u64);
        duration.record_many(seconds, count);
    };
    // Once the recorder is installed, each thread keeps the handles it used: building a
    // labelled key and finding it in the registry was a few per cent of a pipelined add.
    // Before (a handle made then would stay a no-op), they are looked up every time.
    if HANDLE.get().is_none() {
        return observe(&request_metrics(transport, operation, code));
    }
    REQUEST_METRICS.with_borrow_mut(|cached| {
        observe(
            cached
                .entry((transport, operation, code))
                .or_insert_with(|| request_metrics(transport, operation, code)),
        )
    });
}

type RequestMetrics = (metrics::Counter, metrics::Histogram);

thread_local! {
    /// Per thread, the request metrics of each `(transport, operation, code)` seen: a few
    /// hundred at most, since all three are from fixed lists.
    static REQUEST_METRICS: std::cell::RefCell<foldhash::HashMap<(&'static str, Operation, &'static str), RequestMetrics>> =
        std::cell::RefCell::new(foldhash::HashMap::default());
}

fn request_metrics(transport: &'static str, operation: Operation, code: &'static str) -> RequestMetrics {
    let operation = operation.as_str();
    (
        metrics::counter!("tally_requests_total", "transport" => transport, "operation" => operation, "code" => code),
        metrics::histogram!("tally_request_duration_seconds", "transport" => transport, "operation" => operation, "code" => code),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn outcomes_record_each_request_of_a_batch_once() {
        let handle = handle();
        // A transport no server uses, so that other tests' requests do not count here.
        let mut batch = Outcomes::default();
        for code in ["OK", "OVERFLOW", "OK", "OK"] {
            batch.note(Operation::Recount, code);
        }
        batch.note(Operation::ClearCount, "OK");
        assert_eq!(
            batch.0,
            [
                (Operation::Recount, "OK", 3),
                (Operation::Recount, "OVERFLOW", 1),
                (Operation::ClearCount, "OK", 1)
            ]
        );
        batch.record("batch-test", Duration::from_millis(2));
        let mut late = Outcomes::default();
        late.note(Operation::Recount, "OK");
        late.record("batch-test", Duration::from_millis(20));
        let text = handle.render();
        let labels = r#"transport="batch-test",operation="Recount",code="OK""#;
        for line in [
            format!("tally_requests_total{{{labels}}} 4"),
            format!("tally_request_duration_seconds_count{{{labels}}} 4"),
            format!(r#"tally_request_duration_seconds_bucket{{{labels},le="0.0025"}} 3"#),
            format!(r#"tally_request_duration_seconds_bucket{{{labels},le="0.025"}} 4"#),
            r#"tally_requests_total{transport="batch-test",operation="Recount",code="OVERFLOW"} 1"#
                .to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line} in:\n{text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn regression_histograms_are_drained_without_a_scrape() {
        let runs = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let counted = runs.clone();
        let task = tokio::spawn(run_upkeep_every(UPKEEP_PERIOD, shutdown.clone(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        tokio::time::sleep(UPKEEP_PERIOD * 3 + UPKEEP_PERIOD / 2).await;
        // The first tick is immediate, then one per period.
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        shutdown.cancel();
        task.await.expect("upkeep task");
        tokio::time::sleep(UPKEEP_PERIOD * 2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4, "no upkeep after shutdown");
    }
}
