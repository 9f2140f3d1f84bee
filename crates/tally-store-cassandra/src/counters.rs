//! Counter state on CQL: `last_write` and checkpoints, written `USING TIMESTAMP` of the time
//! they carry, and the scan of every counter with state.

use std::collections::BTreeSet;

use async_trait::async_trait;
use futures::TryStreamExt;
use tally_core::{Checkpoint, CounterKey, CounterName, Namespace, Timestamp};
use tally_store::{CounterState, CounterStore, StoreResult};

use crate::codec::{encode_checkpoint, state_of};
use crate::driver;
use crate::incarnations::{Incarnation, Purpose, parse_stored_name};
use crate::layout::{COUNTER_SHARDS, counter_shard};
use crate::store::CassandraStore;

impl CassandraStore {
    pub(crate) async fn last_write_of(&self, key: &CounterKey) -> StoreResult<Option<Timestamp>> {
        Ok(self.counter_state(key).await?.last_write)
    }

    /// The key columns of `key`'s row in `counters`: its namespace's stored name (see
    /// [`CassandraStore::stored_namespace`]), shard and counter.
    pub(crate) fn counter_values<'a>(stored: &'a str, key: &'a CounterKey) -> (&'a str, i32, &'a str) {
        (stored, counter_shard(key.counter.as_str()), key.counter.as_str())
    }
}

#[async_trait]
impl CounterStore for CassandraStore {
    async fn counter_state(&self, key: &CounterKey) -> StoreResult<CounterState> {
        let stored = self.stored_namespace(&key.namespace, Purpose::Read).await?;
        let result = self
            .session
            .execute_unpaged(&self.fixed.state_get, Self::counter_values(&stored, key))
            .await
            .map_err(|e| driver::unavailable(&format!("reading the state of {key}"), e))?;
        let rows = result
            .into_rows_result()
            .map_err(|e| driver::unavailable(&format!("reading the state of {key}"), e))?;
        let row = rows
            .maybe_first_row::<(Option<i64>, Option<Vec<u8>>)>()
            .map_err(|e| driver::corrupt(&format!("state of {key}"), e))?;
        let Some((last_write, checkpoint)) = row else { return Ok(CounterState::default()) };
        state_of(last_write, checkpoint.as_deref())
            .map_err(|e| driver::corrupt(&format!("state of {key}"), e))
    }

    async fn put_checkpoint(&self, key: &CounterKey, checkpoint: Checkpoint) -> StoreResult<Checkpoint> {
        let stored = self.stored_namespace(&key.namespace, Purpose::Write).await?;
        let (ns, shard, counter) = Self::counter_values(&stored, key);
        let bytes = encode_checkpoint(checkpoint);
        self.session
            .execute_unpaged(
                &self.fixed.checkpoint_put,
                (checkpoint.until.as_micros(), bytes, ns, shard, counter),
            )
            .await
            .map_err(|e| driver::unavailable(&format!("writing the checkpoint of {key}"), e))?;
        let stored = self.counter_state(key).await?.checkpoint;
        // A concurrent newer checkpoint may have won; with equal `until`s both carry the same count.
        Ok(stored.filter(|s| s.until >= checkpoint.until).unwrap_or(checkpoint))
    }

    async fn scan_counters(
        &self,
        namespace: Option<&Namespace>,
        after: Option<&CounterKey>,
        limit: usize,
    ) -> StoreResult<Vec<(CounterKey, CounterState)>> {
        let scanned = match namespace {
            Some(ns) => vec![(ns.clone(), self.stored_namespace(ns, Purpose::Read).await?)],
            None => self.live_stored_namespaces().await?,
        };
        self.scan_stored(scanned, after, limit).await
    }
}

impl CassandraStore {
    /// Every namespace with counters under its current incarnation, with its stored name, in
    /// name order: rows of deleted incarnations (being deleted, or left by a deletion that was
    /// interrupted) are not scanned.
    async fn live_stored_namespaces(&self) -> StoreResult<Vec<(Namespace, String)>> {
        let pager = self
            .session
            .execute_iter(self.fixed.scan_namespaces.clone(), ())
            .await
            .map_err(|e| driver::unavailable("listing namespaces with counters", e))?;
        let stored: BTreeSet<String> = pager
            .rows_stream::<(String, i32)>()
            .map_err(|e| driver::corrupt("counters", e))?
            .map_ok(|(ns, _)| ns)
            .try_collect()
            .await
            .map_err(|e| driver::unavailable("listing namespaces with counters", e))?;
        let mut live = Vec::new();
        for name in stored {
            let (ns, incarnation) = parse_stored_name(&name)
                .ok_or_else(|| driver::corrupt("counters", format!("namespace {name:?}")))?;
            if self.incarnation(&ns).await? == Incarnation::Live(incarnation) {
                live.push((ns, name));
            }
        }
        live.sort();
        Ok(live)
    }

    /// Counters with a `last_write` in the given stored namespaces, after `after`.
    pub(crate) async fn scan_stored(
        &self,
        namespaces: Vec<(Namespace, String)>,
        after: Option<&CounterKey>,
        limit: usize,
    ) -> StoreResult<Vec<(CounterKey, CounterState)>> {
        let start =
            after.map(|k| (k.namespace.clone(), counter_shard(k.counter.as_str()), k.counter.as_str()));
        let mut page = Vec::new();
        for (ns, stored) in namespaces {
            for shard in 0..COUNTER_SHARDS {
                let mut from = match &start {
                    Some((a_ns, a_shard, a_counter)) => match (&ns, shard).cmp(&(a_ns, *a_shard)) {
                        std::cmp::Ordering::Less => continue,
                        std::cmp::Ordering::Equal => (*a_counter).to_owned(),
                        std::cmp::Ordering::Greater => String::new(),
                    },
                    None => String::new(),
                };
                // Rows without a last write (a checkpoint alone) are skipped, so keep reading
                // until the page is full or the partition is exhausted.
                loop {
                    let want = limit - page.len();
                    if want == 0 {
                        return Ok(page);
                    }
                    let ask = i32::try_from(want).unwrap_or(i32::MAX);
                    let result = self
                        .session
                        .execute_unpaged(&self.fixed.scan_shard, (stored.as_str(), shard, from.as_str(), ask))
                        .await
                        .map_err(|e| driver::unavailable(&format!("scanning counters of {ns}"), e))?;
                    let rows =
                        result.into_rows_result().map_err(|e| driver::unavailable("scanning counters", e))?;
                    let got = rows.rows_num();
                    for row in rows
                        .rows::<(String, Option<i64>, Option<Vec<u8>>)>()
                        .map_err(|e| driver::corrupt("counters", e))?
                    {
                        let (counter, last_write, checkpoint) =
                            row.map_err(|e| driver::corrupt("counters", e))?;
                        let state = state_of(last_write, checkpoint.as_deref())
                            .map_err(|e| driver::corrupt(&format!("state of {ns}:{counter}"), e))?;
                        let name = CounterName::new(&counter)
                            .map_err(|e| driver::corrupt(&format!("counter name {counter:?}"), e))?;
                        from = counter;
                        if state.last_write.is_some() {
                            page.push((CounterKey::new(ns.clone(), name), state));
                        }
                    }
                    if got < want {
                        break;
                    }
                }
            }
        }
        Ok(page)
    }
}
