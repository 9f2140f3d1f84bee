//! Retention: events older than their namespace's retention are deleted, never before they
//! are folded into a checkpoint.
//!
//! For each counter the deletion bound is `min(now - retention, checkpoint.until)`: whatever
//! lies before the checkpoint is already counted, and nothing after it is touched. A counter
//! whose checkpoint lags behind the retention bound is left as it is and triggered instead.

use std::collections::HashMap;
use std::sync::Arc;

use tally_core::{Clock, CounterKey, Namespace, NamespaceConfig, Timestamp};
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
    /// Events deleted one by one.
    pub events_deleted: u64,
    /// Counters holding expired events that are not folded yet; triggered, not deleted.
    pub awaiting_rollup: u64,
    /// Whole time slices dropped (stores that reclaim by slice).
    pub slices_dropped: u64,
}

/// Runs one retention pass over every counter in the store.
///
/// Stores that reclaim whole time slices get one call with the smallest bound over all
/// counters; a counter in a namespace this instance does not know (created elsewhere a moment
/// ago, say) keeps every slice for this pass.
pub async fn run(
    store: &Arc<dyn Store>,
    namespaces: &NamespaceRegistry,
    rollups: &RollupPipeline,
    clock: &Arc<dyn Clock>,
) -> EngineResult<RetentionReport> {
    let mut report = RetentionReport::default();
    let configs: HashMap<Namespace, Arc<NamespaceConfig>> = namespaces.snapshot().into_iter().collect();
    let by_slice = store.reclaims_whole_slices();
    let start = clock.now();
    // The oldest time any counter still needs; `None` once a counter forbids dropping anything.
    let mut keep_from = configs
        .values()
        .filter(|c| c.counter_type.is_durable())
        .map(|c| start.saturating_sub(c.retention))
        .min()
        .map(Some)
        .unwrap_or(None);
    let mut after = None::<CounterKey>;
    loop {
        let page = store.scan_counters(None, after.as_ref(), SCAN_PAGE).await?;
        for (key, state) in &page {
            let Some(config) = configs.get(&key.namespace) else {
                keep_from = None;
                continue;
            };
            report.counters += 1;
            let now = clock.now();
            let cutoff = now.saturating_sub(config.retention);
            let folded_until = state.checkpoint.map_or(Timestamp::MIN, |cp| cp.until);
            if folded_until < cutoff && state.has_unfolded_events() {
                report.awaiting_rollup += 1;
                rollups.trigger(key, now);
            }
            let before = cutoff.min(folded_until);
            keep_from = keep_from.map(|k| k.min(before));
            if by_slice {
                continue;
            }
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
    if by_slice && let Some(before) = keep_from {
        report.slices_dropped = store.drop_slices_before(before).await? as u64;
    }
    metrics::counter!("tally_retention_events_deleted_total").increment(report.events_deleted);
    metrics::counter!("tally_retention_slices_dropped_total").increment(report.slices_dropped);
    Ok(report)
}
