//! Namespace configurations on CQL, created and changed with lightweight transactions.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use tally_core::{CounterKey, Namespace, NamespaceConfig, Timestamp};
use tally_store::{CounterStore, NamespaceStore, StoreError, StoreResult};

use crate::codec::{applied, decode_config, encode_config};
use crate::driver;
use crate::layout::COUNTER_SHARDS;
use crate::store::{CassandraStore, FAN_OUT};

#[async_trait]
impl NamespaceStore for CassandraStore {
    async fn create_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()> {
        let json = encode_config(config)?;
        let result = self
            .session
            .execute_unpaged(&self.fixed.ns_insert, (name.as_str(), json))
            .await
            .map_err(|e| driver::unavailable(&format!("creating namespace {name}"), e))?;
        if applied(result).map_err(|e| driver::unavailable(&format!("creating namespace {name}"), e))? {
            Ok(())
        } else {
            Err(StoreError::NamespaceExists(name.clone()))
        }
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
        let result = self
            .session
            .execute_unpaged(&self.fixed.ns_get, (name.as_str(),))
            .await
            .map_err(|e| driver::unavailable(&format!("reading namespace {name}"), e))?;
        let rows = result.into_rows_result().map_err(|e| driver::unavailable("reading namespace", e))?;
        match rows.maybe_first_row::<(String,)>().map_err(|e| driver::corrupt("namespaces", e))? {
            Some((json,)) => decode_config(name.as_str(), &json).map(Some),
            None => Ok(None),
        }
    }

    async fn list_namespaces(&self) -> StoreResult<Vec<(Namespace, NamespaceConfig)>> {
        let pager = self
            .session
            .execute_iter(self.fixed.ns_list.clone(), ())
            .await
            .map_err(|e| driver::unavailable("listing namespaces", e))?;
        let rows: Vec<(String, String)> = pager
            .rows_stream::<(String, String)>()
            .map_err(|e| driver::corrupt("namespaces", e))?
            .try_collect()
            .await
            .map_err(|e| driver::unavailable("listing namespaces", e))?;
        let mut list = rows
            .into_iter()
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
        let result = self
            .session
            .execute_unpaged(&self.fixed.ns_delete, (name.as_str(),))
            .await
            .map_err(|e| driver::unavailable(&format!("deleting namespace {name}"), e))?;
        let existed =
            applied(result).map_err(|e| driver::unavailable(&format!("deleting namespace {name}"), e))?;
        // Events first, then the counters that list them, so that an interrupted deletion can
        // be repeated and still finds every counter.
        let slices = self.slices_between(Timestamp::MIN, Timestamp::MAX).await?;
        let mut after = None::<CounterKey>;
        loop {
            let page = self.scan_counters(Some(name), after.as_ref(), 500).await?;
            let targets: Vec<(CounterKey, i64)> =
                page.iter().flat_map(|(key, _)| slices.iter().map(|s| (key.clone(), *s))).collect();
            futures::stream::iter(targets)
                .map(|(key, slice)| self.delete_partitions(key, slice))
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
                .execute_unpaged(&self.fixed.delete_shard, (name.as_str(), shard))
                .await
                .map_err(|e| driver::unavailable(&format!("deleting counters of {name}"), e))?;
        }
        Ok(existed)
    }
}
