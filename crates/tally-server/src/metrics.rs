//! Prometheus metrics: the process-wide recorder and per-request observation.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, in seconds: 50 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
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
            handle
        })
        .clone()
}

/// How often recorded histogram samples are folded into their buckets.
pub const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Runs `upkeep` every `period` until `shutdown` fires.
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
    operation: &'static str,
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
pub fn record(transport: &'static str, operation: &'static str, code: &'static str, started: Instant) {
    metrics::counter!("tally_requests_total", "transport" => transport, "operation" => operation, "code" => code)
        .increment(1);
    metrics::histogram!("tally_request_duration_seconds", "transport" => transport, "operation" => operation, "code" => code)
        .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

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
