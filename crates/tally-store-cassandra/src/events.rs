//! The event log on CQL: one events table per time slice, appends, folds over the slices
//! a window spans, and retention by dropping whole slices.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use tally_core::{CounterKey, Event, EventKind, Fold, Timestamp};
use tally_store::{Appended, EventCursor, EventLog, StoreError, StoreResult, Stored};

use crate::codec::{decode_mutation, encode_mutation};
use crate::driver;
use crate::incarnations::Purpose;
use crate::layout::events_table;
use crate::schema;
use crate::statements::{Preparer, SliceStatements};
use crate::store::{CassandraStore, DIRECT_SLICES, FAN_OUT};
use crate::tokens::Taken;

/// One event row as read back.
pub(crate) struct Row4 {
    pub(crate) time: i64,
    pub(crate) token: String,
    pub(crate) mutation: String,
    pub(crate) kind: EventKind,
}

/// See [`CassandraStore::identity`].
pub(crate) type Identity<'a> = (&'a str, &'a str, i64, i32, i64, &'a str);

impl CassandraStore {
    /// Every event row of `key` with `from <= time < until`, in `(time, token, mutation)`
    /// order. An open-ended range stops at the counter's last write.
    async fn rows_between(
        &self,
        key: &CounterKey,
        from: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Vec<Row4>> {
        let until = if until == Timestamp::MAX {
            let Some(last_write) = self.last_write_of(key).await? else { return Ok(Vec::new()) };
            until.min(Timestamp::from_micros(last_write.as_micros().saturating_add(1)))
        } else {
            until
        };
        if from >= until {
            return Ok(Vec::new());
        }
        // A short window (a rollup's, an accurate read's tail) names its few slices directly; a
        // table that does not exist holds no events. A long one asks which slices exist.
        let (first, last) =
            (self.layout.slice_of(from), self.layout.slice_of(Timestamp::from_micros(until.as_micros() - 1)));
        let slices = if last.saturating_sub(first) < DIRECT_SLICES {
            (first..=last).collect()
        } else {
            self.slices_between(from, until).await?
        };
        let mut rows: Vec<Row4> = futures::stream::iter(slices)
            .map(|slice| self.events_in_slice(key, slice, from, until))
            .buffered(FAN_OUT)
            .try_concat()
            .await?;
        rows.sort_unstable_by(|a, b| (a.time, &a.token, &a.mutation).cmp(&(b.time, &b.token, &b.mutation)));
        Ok(rows)
    }

    /// The statements of `slice`'s table; creates the table first if `create` and it is not
    /// known to exist.
    pub(crate) async fn slice(&self, slice: i64, create: bool) -> StoreResult<Arc<SliceStatements>> {
        let mut known = self.slices.lock().await;
        if let Some(s) = known.get(&slice) {
            return Ok(s.clone());
        }
        if create {
            schema::ensure_slice(&self.session, &self.keyspace, slice).await?;
        }
        let t = format!("{}.{}", self.keyspace, events_table(slice));
        let p =
            Preparer { session: &self.session, consistency: self.consistency, timeout: self.write_timeout };
        let statements = Arc::new(SliceStatements {
            insert: p
                .plain(&format!(
                    "INSERT INTO {t} (namespace, counter, time_bucket, event_bucket, generation_time, \
                     idempotency_token, mutation) VALUES (?, ?, ?, ?, ?, ?, ?)"
                ))
                .await
                ?,
            identity: p
                .plain(&format!(
                    "SELECT mutation FROM {t} WHERE namespace = ? AND counter = ? AND time_bucket = ? \
                     AND event_bucket = ? AND generation_time = ? AND idempotency_token = ?"
                ))
                .await
                ?,
            range: p
                .plain(&format!(
                    "SELECT generation_time, idempotency_token, mutation FROM {t} WHERE namespace = ? AND counter = ? \
                     AND time_bucket IN ? AND event_bucket IN ? AND generation_time >= ? AND generation_time < ?"
                ))
                .await
                ?,
            delete_row: p
                .plain(&format!(
                    "DELETE FROM {t} WHERE namespace = ? AND counter = ? AND time_bucket = ? \
                     AND event_bucket = ? AND generation_time = ? AND idempotency_token = ? AND mutation = ?"
                ))
                .await
                ?,
            delete_partitions: p
                .plain(&format!(
                    "DELETE FROM {t} WHERE namespace = ? AND counter = ? AND time_bucket IN ? AND event_bucket IN ?"
                ))
                .await
                ?,
        });
        known.insert(slice, statements.clone());
        Ok(statements)
    }

    /// The existing slices that may hold events in `[from, until)`, in time order.
    pub(crate) async fn slices_between(&self, from: Timestamp, until: Timestamp) -> StoreResult<Vec<i64>> {
        if from >= until {
            return Ok(Vec::new());
        }
        let (first, last) =
            (self.layout.slice_of(from), self.layout.slice_of(Timestamp::from_micros(until.as_micros() - 1)));
        let result = self
            .session
            .execute_unpaged(&self.fixed.slices_in, (first, last))
            .await
            .map_err(|e| driver::unavailable("listing event slices", e))?;
        let rows = result.into_rows_result().map_err(|e| driver::unavailable("listing event slices", e))?;
        let mut slices = Vec::with_capacity(rows.rows_num());
        for row in rows.rows::<(i64,)>().map_err(|e| driver::corrupt("slices", e))? {
            slices.push(row.map_err(|e| driver::corrupt("slices", e))?.0);
        }
        slices.sort_unstable();
        Ok(slices)
    }

    /// Every event of `key` in `[from, until)` within one slice, unordered.
    pub(crate) async fn events_in_slice(
        &self,
        key: &CounterKey,
        slice: i64,
        from: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Vec<Row4>> {
        let buckets = self.layout.time_buckets(slice, from, until);
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let statements = match self.slice(slice, false).await {
            Ok(statements) => statements,
            Err(e) if driver::is_missing_table(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let stored = self.stored_namespace(&key.namespace, Purpose::Read).await?;
        let values = (
            stored.as_str(),
            key.counter.as_str(),
            buckets,
            self.layout.all_event_buckets(),
            from.as_micros(),
            until.as_micros(),
        );
        let pager = match self.session.execute_iter(statements.range.clone(), values).await {
            Ok(pager) => pager,
            Err(e) => {
                let e = driver::unavailable(&format!("reading events of {key}"), e);
                if driver::is_missing_table(&e) {
                    // Dropped by retention (maybe on another instance) since we prepared it.
                    self.slices.lock().await.remove(&slice);
                    return Ok(Vec::new());
                }
                return Err(e);
            }
        };
        let mut stream = pager
            .rows_stream::<(i64, String, String)>()
            .map_err(|e| driver::corrupt(&format!("events of {key}"), e))?;
        let mut rows = Vec::new();
        while let Some(row) = stream.next().await {
            let (time, token, mutation) =
                row.map_err(|e| driver::unavailable(&format!("reading events of {key}"), e))?;
            let kind = decode_mutation(&mutation).map_err(|e| driver::corrupt(&key.to_string(), e))?;
            rows.push(Row4 { time, token, mutation, kind });
        }
        Ok(rows)
    }

    /// Deletes every partition of `key`, stored under the namespace name `stored`, in `slice`.
    pub(crate) async fn delete_partitions(
        &self,
        stored: &str,
        key: CounterKey,
        slice: i64,
    ) -> StoreResult<()> {
        let statements = self.slice(slice, false).await?;
        let values = (
            stored,
            key.counter.as_str(),
            self.layout.time_buckets(slice, Timestamp::MIN, Timestamp::MAX),
            self.layout.all_event_buckets(),
        );
        self.session
            .execute_unpaged(&statements.delete_partitions, values)
            .await
            .map_err(|e| driver::unavailable(&format!("deleting events of {key}"), e))
            .map(drop)
    }

    /// Deletes one event row.
    pub(crate) async fn delete_row(&self, key: &CounterKey, slice: i64, row: Row4) -> StoreResult<()> {
        let statements = self.slice(slice, false).await?;
        let time = Timestamp::from_micros(row.time);
        let stored = self.stored_namespace(&key.namespace, Purpose::Read).await?;
        let values = (
            stored.as_str(),
            key.counter.as_str(),
            self.layout.time_bucket(time),
            self.layout.event_bucket(&row.token),
            row.time,
            row.token.as_str(),
            row.mutation.as_str(),
        );
        self.session
            .execute_unpaged(&statements.delete_row, values)
            .await
            .map_err(|e| driver::unavailable(&format!("deleting old events of {key}"), e))
            .map(drop)
    }

    /// The mutations stored under one event identity.
    pub(crate) async fn mutations_of(
        &self,
        statements: &SliceStatements,
        identity: Identity<'_>,
    ) -> StoreResult<Vec<EventKind>> {
        let result = self.session.execute_unpaged(&statements.identity, identity).await.map_err(|e| {
            driver::unavailable(&format!("reading event {}:{}/{}", identity.0, identity.1, identity.5), e)
        })?;
        let rows = result.into_rows_result().map_err(|e| driver::unavailable("reading an event", e))?;
        let mut kinds = Vec::new();
        for row in rows.rows::<(String,)>().map_err(|e| driver::corrupt("events", e))? {
            let (mutation,) = row.map_err(|e| driver::corrupt("events", e))?;
            kinds.push(decode_mutation(&mutation).map_err(|e| driver::corrupt("events", e))?);
        }
        Ok(kinds)
    }

    /// The columns that identify an event: stored namespace, counter, time bucket, event
    /// bucket, generation time and token.
    pub(crate) fn identity<'a>(&self, stored: &'a str, event: &'a Event) -> Identity<'a> {
        let (key, time, token) = (&event.key, event.token.generation_time(), event.token.token());
        (
            stored,
            key.counter.as_str(),
            self.layout.time_bucket(time),
            self.layout.event_bucket(token),
            time.as_micros(),
            token,
        )
    }

    /// Inserts the event row `identity` with its `mutation` into the slice of `statements`.
    pub(crate) async fn insert_event(
        &self,
        statements: &SliceStatements,
        identity: Identity<'_>,
        mutation: &str,
        key: &CounterKey,
    ) -> StoreResult<()> {
        let (ns, counter, time_bucket, event_bucket, micros, token) = identity;
        self.session
            .execute_unpaged(
                &statements.insert,
                (ns, counter, time_bucket, event_bucket, micros, token, mutation),
            )
            .await
            .map_err(|e| driver::unavailable(&format!("appending to {key}"), e))?;
        Ok(())
    }
}

impl CassandraStore {
    /// Writes `event` with a token nobody else can hold (server-made, or just taken), its
    /// namespace stored as `namespace`. No identity to look up and no other writer of it to
    /// race: `last_write` first, then the event, so that a stored event is always covered by
    /// its counter's `last_write`.
    pub(crate) async fn write_event(
        &self,
        namespace: &str,
        event: &Event,
        deadline: Timestamp,
    ) -> StoreResult<Appended> {
        let key = &event.key;
        let time = event.token.generation_time();
        self.before_deadline(key, deadline)?;
        let statements = self.slice(self.layout.slice_of(time), true).await?;
        let (ns, shard, counter) = Self::counter_values(namespace, key);
        self.session
            .execute_unpaged(&self.fixed.last_write, (time.as_micros(), time.as_micros(), ns, shard, counter))
            .await
            .map_err(|e| driver::unavailable(&format!("recording the last write of {key}"), e))?;
        self.before_deadline(key, deadline)?;
        let identity = self.identity(namespace, event);
        self.insert_event(&statements, identity, &encode_mutation(event.kind), key).await?;
        Ok(Appended::New)
    }
}

#[async_trait]
impl EventLog for CassandraStore {
    async fn append(&self, event: &Event, deadline: Timestamp, window: Duration) -> StoreResult<Appended> {
        // A refused append takes no token: the deadline is checked before taking it. Past it,
        // a retry of the mutation the token holds is still answered as the duplicate it is.
        if let Err(passed) = self.before_deadline(&event.key, deadline) {
            let held = self.token_row(&event.key, event.token.token()).await?;
            let now = self.clock.now();
            return match held.filter(|(_, until)| *until > now) {
                Some((stored, _)) => self.duplicate_of(event, stored, deadline).await,
                None => Err(passed),
            };
        }
        // Resolved once for both writes.
        let namespace = self.stored_namespace(&event.key.namespace, Purpose::Write).await?;
        match self.take_token(&namespace, event, window).await? {
            Taken::Now { until } => {
                let written = self.write_event(&namespace, event, deadline).await;
                if matches!(written, Err(StoreError::DeadlinePassed { .. })) {
                    self.release_token(event, until).await;
                }
                written
            }
            Taken::Already(stored) => self.duplicate_of(event, stored, deadline).await,
        }
    }

    async fn find_token(&self, key: &CounterKey, token: &str) -> StoreResult<Option<Stored>> {
        let held = self.token_row(key, token).await?;
        let now = self.clock.now();
        Ok(held.filter(|(_, until)| *until > now).map(|(stored, _)| stored))
    }

    async fn append_new(&self, event: &Event, deadline: Timestamp) -> StoreResult<Appended> {
        let namespace = self.stored_namespace(&event.key.namespace, Purpose::Write).await?;
        self.write_event(&namespace, event, deadline).await
    }

    async fn fold(&self, key: &CounterKey, from: Timestamp, until: Timestamp) -> StoreResult<Fold> {
        let rows = self.rows_between(key, from, until).await?;
        Ok(Fold::of(rows.into_iter().map(|r| r.kind)))
    }

    async fn list_events(
        &self,
        key: &CounterKey,
        from: Timestamp,
        until: Timestamp,
        after: Option<&EventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        let from = match after {
            Some(c) => from.max(c.generation_time),
            None => from,
        };
        if from >= until || limit == 0 {
            return Ok(Vec::new());
        }
        // The rows of every slice the range spans, sorted: a page reads the whole range from
        // its cursor on (event tables are partitioned by hour, not ordered by counter).
        let rows = self.rows_between(key, from, until).await?;
        rows.into_iter()
            .filter(|r| after.is_none_or(|c| c.precedes(Timestamp::from_micros(r.time), &r.token)))
            .take(limit)
            .map(|r| tally_store::stored_event(key, Timestamp::from_micros(r.time), &r.token, r.kind))
            .collect()
    }

    async fn delete_events_before(
        &self,
        key: &CounterKey,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<usize> {
        let mut doomed = Vec::new();
        for slice in self.slices_between(Timestamp::MIN, before).await? {
            let mut rows = self.events_in_slice(key, slice, Timestamp::MIN, before).await?;
            rows.sort_unstable_by(|a, b| {
                (a.time, &a.token, &a.mutation).cmp(&(b.time, &b.token, &b.mutation))
            });
            doomed.extend(rows.into_iter().map(|r| (slice, r)));
            if doomed.len() >= limit {
                break;
            }
        }
        doomed.truncate(limit);
        let deleted = doomed.len();
        futures::stream::iter(doomed)
            .map(|(slice, row)| self.delete_row(key, slice, row))
            .buffer_unordered(FAN_OUT)
            .try_collect::<()>()
            .await?;
        Ok(deleted)
    }

    fn reclaims_whole_slices(&self) -> bool {
        true
    }

    async fn drop_slices_before(&self, before: Timestamp) -> StoreResult<usize> {
        let mut dropped = 0;
        for slice in self.slices_between(Timestamp::MIN, before).await? {
            if self.layout.slice_range(slice).1 > before {
                continue;
            }
            self.slices.lock().await.remove(&slice);
            schema::drop_slice(&self.session, &self.keyspace, slice).await?;
            tracing::info!(keyspace = %self.keyspace, slice, table = %events_table(slice), "dropped an expired event slice");
            dropped += 1;
        }
        Ok(dropped)
    }
}
