//! Namespace configurations on CQL, created and changed with lightweight transactions. Each
//! creation gets an incarnation of its own (see `incarnations.rs`); a deleted namespace keeps
//! its row, without a configuration, until it is created again.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use tally_core::{CounterKey, Namespace, NamespaceConfig, Timestamp};
use tally_store::{NamespaceStore, StoreError, StoreResult};

use crate::codec::{applied, decode_config, encode_config};
use crate::driver;
use crate::incarnations::{Incarnation, NamespaceRow, RESOLVED_FOR, stored_name};
use crate::layout::COUNTER_SHARDS;
use crate::store::{CassandraStore, FAN_OUT};

/// How often a create or a delete reads the row again after losing a race for it.
const ATTEMPTS: usize = 3;

impl CassandraStore {
    /// One attempt at creating `name` over what `row` holds (`None`: no row).
    async fn create_over(
        &self,
        name: &Namespace,
        json: &str,
        row: Option<&NamespaceRow>,
    ) -> StoreResult<Option<i64>> {
        let now = self.clock.now();
        if let Some(row) = row {
            if row.config.is_some() {
                return Err(StoreError::NamespaceExists(name.clone()));
            }
            if let Some(until) = row.recreate_after.filter(|until| now < *until) {
                return Err(StoreError::NamespaceRecentlyDeleted { name: name.clone(), until });
            }
        }
        // Creation times in µs: a new incarnation is always greater than the last one.
        let previous = row.map_or(0, |row| row.incarnation);
        let incarnation = now.as_micros().max(previous.saturating_add(1));
        let recreate_after = row.and_then(|row| row.recreate_after).map(Timestamp::as_micros);
        let context = format!("creating namespace {name}");
        let result = self
            .session
            .execute_unpaged(&self.fixed.ns_create, (json, incarnation, name.as_str(), recreate_after))
            .await
            .map_err(|e| driver::unavailable(&context, e))?;
        let created = applied(result).map_err(|e| driver::unavailable(&context, e))?;
        Ok(created.then_some(incarnation))
    }

    /// Deletes the rows of `name`'s incarnation: events first, then the counters that list
    /// them, so that an interrupted deletion can be repeated and still finds every counter.
    async fn delete_rows(&self, name: &Namespace, incarnation: i64) -> StoreResult<()> {
        let stored = stored_name(name, incarnation);
        let slices = self.slices_between(Timestamp::MIN, Timestamp::MAX).await?;
        let mut after = None::<CounterKey>;
        loop {
            let scanned = vec![(name.clone(), stored.clone())];
            let page = self.scan_stored(scanned, after.as_ref(), 500).await?;
            let targets: Vec<(CounterKey, i64)> =
                page.iter().flat_map(|(key, _)| slices.iter().map(|s| (key.clone(), *s))).collect();
            futures::stream::iter(targets)
                .map(|(key, slice)| self.delete_partitions(&stored, key, slice))
                .buffer_unordered(FAN_OUT)
                .try_collect::<()>()
                .await?;
            match page.last() {
                Some((last, _)) if page.len() == 500 => after = Some(last.clone()),
                _ => break,
            }
        }
        for shard in 0..COUNTER_SHARDS {
            self.session
                .execute_unpaged(&self.fixed.delete_shard, (stored.as_str(), shard))
                .await
                .map_err(|e| driver::unavailable(&format!("deleting counters of {name}"), e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl NamespaceStore for CassandraStore {
    async fn create_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()> {
        let json = encode_config(config)?;
        for _ in 0..ATTEMPTS {
            let row = self.namespace_row(name).await?;
            if let Some(incarnation) = self.create_over(name, &json, row.as_ref()).await? {
                self.incarnations.remember(name, Incarnation::Live(incarnation), self.clock.now());
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(
            format!("namespace {name} is being created and deleted concurrently; retry").into(),
        ))
    }

    async fn update_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()> {
        let json = encode_config(config)?;
        let result = self
            .session
            .execute_unpaged(&self.fixed.ns_update, (json, name.as_str()))
            .await
            .map_err(|e| driver::unavailable(&format!("updating namespace {name}"), e))?;
        if applied(result).map_err(|e| driver::unavailable(&format!("updating namespace {name}"), e))? {
            Ok(())
        } else {
            Err(StoreError::NamespaceNotFound(name.clone()))
        }
    }

    async fn get_namespace(&self, name: &Namespace) -> StoreResult<Option<NamespaceConfig>> {
        Ok(self.namespace_row(name).await?.and_then(|row| row.config))
    }

    async fn list_namespaces(&self) -> StoreResult<Vec<(Namespace, NamespaceConfig)>> {
        let pager = self
            .session
            .execute_iter(self.fixed.ns_list.clone(), ())
            .await
            .map_err(|e| driver::unavailable("listing namespaces", e))?;
        let rows: Vec<(String, Option<String>)> = pager
            .rows_stream::<(String, Option<String>)>()
            .map_err(|e| driver::corrupt("namespaces", e))?
            .try_collect()
            .await
            .map_err(|e| driver::unavailable("listing namespaces", e))?;
        let mut list = rows
            .into_iter()
            .filter_map(|(name, json)| Some((name, json?)))
            .map(|(name, json)| {
                let ns =
                    Namespace::new(&name).map_err(|e| driver::corrupt(&format!("namespace {name:?}"), e))?;
                Ok((ns, decode_config(&name, &json)?))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        list.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(list)
    }

    async fn delete_namespace(&self, name: &Namespace) -> StoreResult<bool> {
        let context = format!("deleting namespace {name}");
        for _ in 0..ATTEMPTS {
            let Some(row) = self.namespace_row(name).await? else {
                // Rows written without a namespace (incarnation 0) are still removed.
                self.delete_rows(name, 0).await?;
                return Ok(false);
            };
            let Some(config) = &row.config else {
                // Deleted already: finish what an interrupted deletion left.
                self.delete_rows(name, row.incarnation).await?;
                return Ok(false);
            };
            let now = self.clock.now();
            let recreate_after = now.saturating_add(RESOLVED_FOR).saturating_add(config.clock_skew);
            let result = self
                .session
                .execute_unpaged(&self.fixed.ns_delete, (recreate_after.as_micros(), name.as_str()))
                .await
                .map_err(|e| driver::unavailable(&context, e))?;
            if applied(result).map_err(|e| driver::unavailable(&context, e))? {
                self.incarnations.remember(name, Incarnation::Deleted(row.incarnation), now);
                self.delete_rows(name, row.incarnation).await?;
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(format!("namespace {name} is being changed concurrently; retry").into()))
    }
}
