//! Retention: events older than their namespace's retention are deleted, never before they
//! are folded into a checkpoint.
//!
//! For each counter the deletion bound is `min(now - retention, checkpoint.until)`: whatever
//! lies before the checkpoint is already counted, and nothing after it is touched. A counter
//! whose checkpoint lags behind the retention bound is left as it is and triggered instead.

use std::sync::Arc;

use tally_core::{Clock, CounterKey};
use tally_store::Store;

use crate::error::EngineResult;
use crate::namespaces::NamespaceRegistry;
use crate::rollup::RollupPipeline;

/// Counters read per page.
const SCAN_PAGE: usize = 1_000;
/// Events deleted per store call.
const DELETE_STEP: usize = 10_000;

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Counters looked at.
    pub counters: u64,
    /// Events deleted.
    pub events_deleted: u64,
    /// Counters holding expired events that are not folded yet; triggered, not deleted.
    pub awaiting_rollup: u64,
}

/// Runs one retention pass over every namespace that keeps events.
pub async fn run(
    store: &Arc<dyn Store>,
    namespaces: &NamespaceRegistry,
    rollups: &RollupPipeline,
    clock: &Arc<dyn Clock>,
) -> EngineResult<RetentionReport> {
    let mut report = RetentionReport::default();
    for (namespace, config) in namespaces.snapshot() {
        if !config.counter_type.is_durable() {
            continue;
        }
        let mut after = None::<CounterKey>;
        loop {
            let page = store.scan_counters(Some(&namespace), after.as_ref(), SCAN_PAGE).await?;
            for (key, state) in &page {
                report.counters += 1;
                let now = clock.now();
                let cutoff = now.saturating_sub(config.retention);
                let folded_until = state.checkpoint.map_or(tally_core::Timestamp::MIN, |cp| cp.until);
                if folded_until < cutoff && state.has_unfolded_events() {
                    report.awaiting_rollup += 1;
                    rollups.trigger(key, now);
                }
                let before = cutoff.min(folded_until);
                loop {
                    let deleted = store.delete_events_before(key, before, DELETE_STEP).await?;
                    report.events_deleted += deleted as u64;
                    if deleted < DELETE_STEP {
                        break;
                    }
                }
            }
            match page.last() {
                Some((last, _)) if page.len() == SCAN_PAGE => after = Some(last.clone()),
                _ => break,
            }
        }
    }
    metrics::counter!("tally_retention_events_deleted_total").increment(report.events_deleted);
    Ok(report)
}
