//! [`CassandraStore`]: the storage traits over CQL.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::frame::types::{Consistency, SerialConsistency};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use tally_core::{
    Checkpoint, Clock, CounterKey, CounterName, Event, EventKind, Fold, Namespace, NamespaceConfig, Timestamp,
};
use tally_store::{
    Appended, CounterState, CounterStore, EventLog, NamespaceStore, StoreError, StoreResult, Stored,
};
use tokio::sync::Mutex;

use crate::driver;
use crate::layout::{COUNTER_SHARDS, Layout, counter_shard, events_table};
use crate::options::CassandraOptions;
use crate::schema;

/// How many statements one operation keeps in flight at once.
const FAN_OUT: usize = 16;
/// Folds spanning fewer slices than this skip the slice listing.
const DIRECT_SLICES: i64 = 4;

/// The store on an Apache Cassandra or ScyllaDB cluster. Any number of Tally instances may
/// share one keyspace.
///
/// How the contract is kept:
/// - Clients' tokens: an append takes its token with a lightweight transaction on the
///   `tokens` table (one partition per counter and token, so nothing hot is serialised but
///   retries of one mutation). Exactly one of racing appends of a token takes it; the others
///   read what it holds and answer `Duplicate` or `Conflict`. The event row is written after
///   the token is taken, so an append that fails between the two leaves a token without its
///   event: a later duplicate writes the event row on its behalf (the same row, with the
///   stored generation time, so it is never counted twice) before it answers. Server-made
///   tokens (`append_new`) take nothing.
/// - Deadline: an event is sent only if `now + write_timeout <= deadline`; the driver gives up
///   at `write_timeout` and the cluster drops writes older than its own request timeouts, so no
///   event lands after its deadline (assuming clocks agree within the namespace's clock skew).
/// - `last_write` and checkpoints are written `USING TIMESTAMP` of the time they carry, so the
///   greatest wins on every replica regardless of arrival order.
pub struct CassandraStore {
    session: Arc<Session>,
    keyspace: String,
    clock: Arc<dyn Clock>,
    layout: Layout,
    write_timeout: Duration,
    consistency: Consistency,
    fixed: Fixed,
    slices: Mutex<HashMap<i64, Arc<SliceStatements>>>,
}

/// Prepared statements on the fixed tables.
struct Fixed {
    ns_insert: PreparedStatement,
    ns_update: PreparedStatement,
    ns_get: PreparedStatement,
    ns_list: PreparedStatement,
    ns_delete: PreparedStatement,
    last_write: PreparedStatement,
    checkpoint_put: PreparedStatement,
    state_get: PreparedStatement,
    scan_shard: PreparedStatement,
    scan_namespaces: PreparedStatement,
    delete_shard: PreparedStatement,
    slices_in: PreparedStatement,
    token_take: PreparedStatement,
    token_retake: PreparedStatement,
    token_release: PreparedStatement,
    token_get: PreparedStatement,
}

/// Prepared statements on one slice's events table.
struct SliceStatements {
    insert: PreparedStatement,
    identity: PreparedStatement,
    range: PreparedStatement,
    delete_row: PreparedStatement,
    delete_partitions: PreparedStatement,
}

/// One event row as read back.
struct Row4 {
    time: i64,
    token: String,
    mutation: String,
    kind: EventKind,
}

impl CassandraStore {
    /// Connects, creates the keyspace and tables if missing, and prepares the statements.
    pub async fn open(options: CassandraOptions, clock: Arc<dyn Clock>) -> Result<Self, String> {
        options.layout.validate()?;
        let session = SessionBuilder::new()
            .known_nodes(&options.nodes)
            .connection_timeout(Duration::from_secs(5))
            .build()
            .await
            .map_err(|e| format!("connecting to Cassandra at {}: {e}", options.nodes.join(",")))?;
        let layout = schema::ensure(&session, &options).await?;
        let ks = options.keyspace.clone();
        let p =
            Preparer { session: &session, consistency: options.consistency, timeout: options.read_timeout };
        let w = Preparer { timeout: options.write_timeout, ..p };
        let fixed = Fixed::prepare(&p, &w, &ks).await.map_err(|e| e.to_string())?;
        Ok(Self {
            session: Arc::new(session),
            keyspace: ks,
            clock,
            layout,
            write_timeout: options.write_timeout,
            consistency: options.consistency,
            fixed,
            slices: Mutex::new(HashMap::new()),
        })
    }

    /// The partitioning in force in this keyspace.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The statements of `slice`'s table; creates the table first if `create` and it is not
    /// known to exist.
    async fn slice(&self, slice: i64, create: bool) -> StoreResult<Arc<SliceStatements>> {
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
    async fn slices_between(&self, from: Timestamp, until: Timestamp) -> StoreResult<Vec<i64>> {
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
    async fn events_in_slice(
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
        let values = (
            key.namespace.as_str(),
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

    /// Deletes every partition of `key` in `slice`.
    async fn delete_partitions(&self, key: CounterKey, slice: i64) -> StoreResult<()> {
        let statements = self.slice(slice, false).await?;
        let values = (
            key.namespace.as_str(),
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
    async fn delete_row(&self, key: &CounterKey, slice: i64, row: Row4) -> StoreResult<()> {
        let statements = self.slice(slice, false).await?;
        let time = Timestamp::from_micros(row.time);
        let values = (
            key.namespace.as_str(),
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
    async fn mutations_of(
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

    async fn last_write_of(&self, key: &CounterKey) -> StoreResult<Option<Timestamp>> {
        Ok(self.counter_state(key).await?.last_write)
    }

    fn counter_values(key: &CounterKey) -> (&str, i32, &str) {
        (key.namespace.as_str(), counter_shard(key.counter.as_str()), key.counter.as_str())
    }

    /// The columns that identify an event: namespace, counter, time bucket, event bucket,
    /// generation time and token.
    fn identity<'a>(&self, event: &'a Event) -> Identity<'a> {
        let (key, time, token) = (&event.key, event.token.generation_time(), event.token.token());
        (
            key.namespace.as_str(),
            key.counter.as_str(),
            self.layout.time_bucket(time),
            self.layout.event_bucket(token),
            time.as_micros(),
            token,
        )
    }

    /// Inserts the event row `identity` with its `mutation` into the slice of `statements`.
    async fn insert_event(
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

    /// Takes the event's token for `window`, or finds the mutation that holds it. A token whose
    /// window has passed is taken over with a compare-and-set on its `until`.
    async fn take_token(&self, event: &Event, window: Duration) -> StoreResult<Taken> {
        let key = &event.key;
        let (ns, counter, token) = (key.namespace.as_str(), key.counter.as_str(), event.token.token());
        let time = event.token.generation_time().as_micros();
        let mutation = encode_mutation(event.kind);
        let context = format!("taking token {token:?} of {key}");
        // The TTL only collects rows; a minute past the window keeps clocks out of it.
        let ttl = i32::try_from(window.as_secs().saturating_add(60)).unwrap_or(i32::MAX);
        for _ in 0..3 {
            let now = self.clock.now();
            let until = now.saturating_add(window).as_micros();
            let values = (ns, counter, token, time, mutation.as_str(), until, ttl);
            let result = self
                .session
                .execute_unpaged(&self.fixed.token_take, values)
                .await
                .map_err(|e| driver::unavailable(&context, e))?;
            if applied(result).map_err(|e| driver::unavailable(&context, e))? {
                return Ok(Taken::Now { until });
            }
            let Some((stored, held_until)) = self.token_row(key, token).await? else {
                continue; // collected by its TTL meanwhile: try again
            };
            if held_until > now {
                return Ok(Taken::Already(stored));
            }
            let values = (ttl, time, mutation.as_str(), until, ns, counter, token, held_until.as_micros());
            let result = self
                .session
                .execute_unpaged(&self.fixed.token_retake, values)
                .await
                .map_err(|e| driver::unavailable(&context, e))?;
            if applied(result).map_err(|e| driver::unavailable(&context, e))? {
                return Ok(Taken::Now { until });
            }
        }
        Err(StoreError::Unavailable(format!("token {token:?} of {key} is contended; retry").into()))
    }

    /// Frees a token this append took but did not use (its deadline passed before the event
    /// was written). Best effort: a token left taken only makes later retries duplicates of an
    /// event that was never written, which they then write if their deadline allows.
    async fn release_token(&self, event: &Event, until: i64) {
        let key = &event.key;
        let values = (key.namespace.as_str(), key.counter.as_str(), event.token.token(), until);
        if let Err(e) = self.session.execute_unpaged(&self.fixed.token_release, values).await {
            tracing::warn!(counter = %key, error = %e, "could not free an unused token");
        }
    }

    /// What a token's row holds, and until when, read with serial consistency.
    async fn token_row(&self, key: &CounterKey, token: &str) -> StoreResult<Option<(Stored, Timestamp)>> {
        let values = (key.namespace.as_str(), key.counter.as_str(), token);
        let context = format!("reading token {token:?} of {key}");
        let result = self
            .session
            .execute_unpaged(&self.fixed.token_get, values)
            .await
            .map_err(|e| driver::unavailable(&context, e))?;
        let rows = result.into_rows_result().map_err(|e| driver::unavailable(&context, e))?;
        let Some(row) =
            rows.maybe_first_row::<(i64, String, i64)>().map_err(|e| driver::corrupt("tokens", e))?
        else {
            return Ok(None);
        };
        let (time, mutation, until) = row;
        let kind = decode_mutation(&mutation).map_err(|e| driver::corrupt("tokens", e))?;
        let stored = Stored { generation_time: Timestamp::from_micros(time), kind };
        Ok(Some((stored, Timestamp::from_micros(until))))
    }

    /// The answer to an append of a token another append holds with `stored`: a conflict, or a
    /// duplicate once the event it stands for is stored (the append that took the token may
    /// have failed before writing it). Rewriting the event is harmless (the same row); where
    /// its deadline has passed, the row is looked up instead, and a missing one is refused.
    async fn duplicate_of(
        &self,
        event: &Event,
        stored: Stored,
        deadline: Timestamp,
    ) -> StoreResult<Appended> {
        let answer = Appended::judge(event, stored)?;
        let (original, deadline) = stored.original(event, deadline)?;
        if self.before_deadline(&event.key, deadline).is_ok() {
            self.append_new(&original, deadline).await?;
            return Ok(answer);
        }
        let statements = self.slice(self.layout.slice_of(stored.generation_time), false).await?;
        match self.mutations_of(&statements, self.identity(&original)).await?.is_empty() {
            false => Ok(answer),
            true => Err(StoreError::DeadlinePassed { key: event.key.clone(), deadline }),
        }
    }

    /// `DeadlinePassed` unless a write sent now is sure to be answered before `deadline`.
    fn before_deadline(&self, key: &CounterKey, deadline: Timestamp) -> StoreResult<()> {
        if self.clock.now().saturating_add(self.write_timeout) > deadline {
            return Err(StoreError::DeadlinePassed { key: key.clone(), deadline });
        }
        Ok(())
    }
}

/// What [`CassandraStore::take_token`] found.
enum Taken {
    /// This append took the token; its row says `until` (µs).
    Now { until: i64 },
    /// Another append holds it, with this mutation.
    Already(Stored),
}

/// See [`CassandraStore::identity`].
type Identity<'a> = (&'a str, &'a str, i64, i32, i64, &'a str);

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
        match self.take_token(event, window).await? {
            Taken::Now { until } => {
                let written = self.append_new(event, deadline).await;
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
        // No identity to look up and no other writer of it to race: `last_write` first, then
        // the event, so that a stored event is always covered by its counter's `last_write`.
        let key = &event.key;
        let time = event.token.generation_time();
        self.before_deadline(key, deadline)?;
        let statements = self.slice(self.layout.slice_of(time), true).await?;
        let (ns, shard, counter) = Self::counter_values(key);
        self.session
            .execute_unpaged(&self.fixed.last_write, (time.as_micros(), time.as_micros(), ns, shard, counter))
            .await
            .map_err(|e| driver::unavailable(&format!("recording the last write of {key}"), e))?;
        self.before_deadline(key, deadline)?;
        self.insert_event(&statements, self.identity(event), &encode_mutation(event.kind), key).await?;
        Ok(Appended::New)
    }

    async fn fold(&self, key: &CounterKey, from: Timestamp, until: Timestamp) -> StoreResult<Fold> {
        if from >= until {
            return Ok(Fold::default());
        }
        // An open-ended fold (accurate reads) stops at the counter's last write.
        let until = if until == Timestamp::MAX {
            let Some(last_write) = self.last_write_of(key).await? else { return Ok(Fold::default()) };
            until.min(Timestamp::from_micros(last_write.as_micros().saturating_add(1)))
        } else {
            until
        };
        if from >= until {
            return Ok(Fold::default());
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
        Ok(Fold::of(rows.into_iter().map(|r| r.kind)))
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

#[async_trait]
impl CounterStore for CassandraStore {
    async fn counter_state(&self, key: &CounterKey) -> StoreResult<CounterState> {
        let result = self
            .session
            .execute_unpaged(&self.fixed.state_get, Self::counter_values(key))
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
        let (ns, shard, counter) = Self::counter_values(key);
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
        let namespaces: Vec<Namespace> = match namespace {
            Some(ns) => vec![ns.clone()],
            None => {
                let pager = self
                    .session
                    .execute_iter(self.fixed.scan_namespaces.clone(), ())
                    .await
                    .map_err(|e| driver::unavailable("listing namespaces with counters", e))?;
                let names: BTreeSet<String> = pager
                    .rows_stream::<(String, i32)>()
                    .map_err(|e| driver::corrupt("counters", e))?
                    .map_ok(|(ns, _)| ns)
                    .try_collect()
                    .await
                    .map_err(|e| driver::unavailable("listing namespaces with counters", e))?;
                names
                    .iter()
                    .map(|n| Namespace::new(n).map_err(|e| driver::corrupt(&format!("namespace {n:?}"), e)))
                    .collect::<StoreResult<_>>()?
            }
        };
        let start =
            after.map(|k| (k.namespace.clone(), counter_shard(k.counter.as_str()), k.counter.as_str()));
        let mut page = Vec::new();
        for ns in namespaces {
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
                        .execute_unpaged(&self.fixed.scan_shard, (ns.as_str(), shard, from.as_str(), ask))
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

impl Fixed {
    /// Prepares every statement that names no slice: reads with `p`, writes with `w`.
    async fn prepare(p: &Preparer<'_>, w: &Preparer<'_>, ks: &str) -> StoreResult<Self> {
        Ok(Self {
                ns_insert: w
                    .lwt(&format!("INSERT INTO {ks}.namespaces (name, config) VALUES (?, ?) IF NOT EXISTS"))
                    .await?,
                ns_update: w
                    .lwt(&format!("UPDATE {ks}.namespaces SET config = ? WHERE name = ? IF EXISTS"))
                    .await?,
                ns_get: p.serial(&format!("SELECT config FROM {ks}.namespaces WHERE name = ?")).await?,
                ns_list: p.plain(&format!("SELECT name, config FROM {ks}.namespaces")).await?,
                ns_delete: w.lwt(&format!("DELETE FROM {ks}.namespaces WHERE name = ? IF EXISTS")).await?,
                last_write: w
                    .plain(&format!(
                        "UPDATE {ks}.counters USING TIMESTAMP ? SET last_write = ? \
                         WHERE namespace = ? AND shard = ? AND counter = ?"
                    ))
                    .await?,
                checkpoint_put: w
                    .plain(&format!(
                        "UPDATE {ks}.counters USING TIMESTAMP ? SET checkpoint = ? \
                         WHERE namespace = ? AND shard = ? AND counter = ?"
                    ))
                    .await?,
                state_get: p
                    .plain(&format!(
                        "SELECT last_write, checkpoint FROM {ks}.counters \
                         WHERE namespace = ? AND shard = ? AND counter = ?"
                    ))
                    .await?,
                scan_shard: p
                    .plain(&format!(
                        "SELECT counter, last_write, checkpoint FROM {ks}.counters \
                         WHERE namespace = ? AND shard = ? AND counter > ? LIMIT ?"
                    ))
                    .await?,
                scan_namespaces: p.plain(&format!("SELECT DISTINCT namespace, shard FROM {ks}.counters")).await?,
                delete_shard: w
                    .plain(&format!("DELETE FROM {ks}.counters WHERE namespace = ? AND shard = ?"))
                    .await?,
                slices_in: p
                    .plain(&format!(
                        "SELECT slice FROM {ks}.slices WHERE kind = 'events' AND slice >= ? AND slice <= ?"
                    ))
                    .await?,
                token_take: w
                    .lwt(&format!(
                        "INSERT INTO {ks}.tokens (namespace, counter, idempotency_token, generation_time, mutation, until) \
                         VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
                    ))
                    .await?,
                token_retake: w
                    .lwt(&format!(
                        "UPDATE {ks}.tokens USING TTL ? SET generation_time = ?, mutation = ?, until = ? \
                         WHERE namespace = ? AND counter = ? AND idempotency_token = ? IF until = ?"
                    ))
                    .await?,
                token_release: w
                    .lwt(&format!(
                        "DELETE FROM {ks}.tokens WHERE namespace = ? AND counter = ? AND idempotency_token = ? IF until = ?"
                    ))
                    .await?,
                token_get: p
                    .serial(&format!(
                        "SELECT generation_time, mutation, until FROM {ks}.tokens \
                         WHERE namespace = ? AND counter = ? AND idempotency_token = ?"
                    ))
                    .await?,
            })
    }
}

/// Prepares statements with the store's consistency and a timeout.
#[derive(Clone, Copy)]
struct Preparer<'a> {
    session: &'a Session,
    consistency: Consistency,
    timeout: Duration,
}

impl Preparer<'_> {
    async fn plain(&self, cql: &str) -> StoreResult<PreparedStatement> {
        let mut statement = self
            .session
            .prepare(cql)
            .await
            .map_err(|e| driver::unavailable(&format!("preparing `{cql}`"), e))?;
        statement.set_consistency(self.consistency);
        statement.set_request_timeout(Some(self.timeout));
        Ok(statement)
    }

    /// A lightweight transaction: linearizable among its kind.
    async fn lwt(&self, cql: &str) -> StoreResult<PreparedStatement> {
        let mut statement = self.plain(cql).await?;
        statement.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        Ok(statement)
    }

    /// A read that sees every completed lightweight transaction.
    async fn serial(&self, cql: &str) -> StoreResult<PreparedStatement> {
        let mut statement = self.plain(cql).await?;
        statement.set_consistency(Consistency::LocalSerial);
        Ok(statement)
    }
}

fn applied(result: scylla::response::query_result::QueryResult) -> Result<bool, String> {
    let rows = result.into_rows_result().map_err(|e| e.to_string())?;
    let row: Row = rows.single_row().map_err(|e| e.to_string())?;
    Ok(matches!(row.columns.first(), Some(Some(CqlValue::Boolean(true)))))
}

/// The stored form of a mutation: `add:<delta>` or `clear`.
fn encode_mutation(kind: EventKind) -> String {
    match kind {
        EventKind::Add(delta) => format!("add:{delta}"),
        EventKind::Clear => "clear".to_owned(),
    }
}

fn decode_mutation(text: &str) -> Result<EventKind, String> {
    match text.strip_prefix("add:") {
        Some(delta) => delta.parse().map(EventKind::Add).map_err(|e| format!("mutation {text:?}: {e}")),
        None if text == "clear" => Ok(EventKind::Clear),
        None => Err(format!("unknown mutation {text:?}")),
    }
}

fn encode_checkpoint(cp: Checkpoint) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&cp.count.to_be_bytes());
    bytes.extend_from_slice(&cp.until.as_micros().to_be_bytes());
    bytes
}

fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, String> {
    let (count, until) = bytes.split_at_checked(8).ok_or("checkpoint shorter than 16 bytes")?;
    let count = <[u8; 8]>::try_from(count).map_err(|_| "checkpoint count is not 8 bytes")?;
    let until = <[u8; 8]>::try_from(until).map_err(|_| "checkpoint time is not 8 bytes")?;
    Ok(Checkpoint {
        count: i64::from_be_bytes(count),
        until: Timestamp::from_micros(i64::from_be_bytes(until)),
    })
}

fn state_of(last_write: Option<i64>, checkpoint: Option<&[u8]>) -> Result<CounterState, String> {
    Ok(CounterState {
        checkpoint: checkpoint.map(decode_checkpoint).transpose()?,
        last_write: last_write.map(Timestamp::from_micros),
    })
}

fn encode_config(config: &NamespaceConfig) -> StoreResult<String> {
    serde_json::to_string(config).map_err(|e| driver::corrupt("encoding namespace config", e))
}

fn decode_config(name: &str, json: &str) -> StoreResult<NamespaceConfig> {
    serde_json::from_str(json).map_err(|e| driver::corrupt(&format!("config of namespace {name}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_short_bytes_are_corrupt() {
        let cp = Checkpoint { count: -42, until: Timestamp::from_micros(1_764_000_000_000_000) };
        assert_eq!(decode_checkpoint(&encode_checkpoint(cp)), Ok(cp));
        assert!(decode_checkpoint(&[1, 2, 3]).is_err());
    }

    #[test]
    fn mutations_round_trip_and_unknown_ones_are_corrupt() {
        for kind in [EventKind::Add(5), EventKind::Add(i64::MIN), EventKind::Clear] {
            assert_eq!(decode_mutation(&encode_mutation(kind)), Ok(kind));
        }
        assert!(decode_mutation("add:x").is_err());
        assert!(decode_mutation("reset").is_err());
    }
}
