//! The storage traits and the contract each backend keeps.

use std::time::Duration;

use async_trait::async_trait;
use tally_core::{Checkpoint, CounterKey, Event, EventKind, Fold, Namespace, NamespaceConfig, Timestamp};

use crate::error::{StoreError, StoreResult};

/// The mutation a client's token of a counter is stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The generation time the first arrival fixed: the event's place in the counter's history.
    pub generation_time: Timestamp,
    /// What the mutation does.
    pub kind: EventKind,
}

impl Stored {
    /// The event this token holds, named by `retry` (another append of the same token), with
    /// the deadline `retry`'s `deadline` becomes for it: a deadline moves with the generation
    /// time. What a store that takes tokens before writing events writes on a duplicate's
    /// behalf.
    pub fn original(&self, retry: &Event, deadline: Timestamp) -> StoreResult<(Event, Timestamp)> {
        let token =
            tally_core::IdempotencyToken::new(retry.token.token(), self.generation_time).map_err(|e| {
                StoreError::Corrupt(tally_core::Failure::caused_by(
                    format!("the stored token of {}", retry.key),
                    e,
                ))
            })?;
        let shift =
            retry.token.generation_time().as_micros().saturating_sub(self.generation_time.as_micros());
        let deadline = Timestamp::from_micros(deadline.as_micros().saturating_sub(shift));
        Ok((Event { key: retry.key.clone(), token, kind: self.kind }, deadline))
    }
}

/// Where a page of [`EventLog::list_events`] ends: the last event it listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    /// That event's generation time.
    pub generation_time: Timestamp,
    /// That event's token.
    pub token: String,
}

impl EventCursor {
    /// The cursor that resumes after `event`.
    pub fn after(event: &Event) -> Self {
        Self { generation_time: event.token.generation_time(), token: event.token.token().to_owned() }
    }

    /// Whether an event at `(generation_time, token)` comes after this cursor.
    pub fn precedes(&self, generation_time: Timestamp, token: &str) -> bool {
        (generation_time, token) > (self.generation_time, self.token.as_str())
    }
}

/// An event as a store reads it back: `token` at `generation_time`, doing `kind` to `key`.
/// A token that no longer validates is corrupt data.
pub fn stored_event(
    key: &CounterKey,
    generation_time: Timestamp,
    token: &str,
    kind: EventKind,
) -> StoreResult<Event> {
    let token = tally_core::IdempotencyToken::new(token, generation_time)
        .map_err(|e| StoreError::Corrupt(tally_core::Failure::caused_by(format!("a token of {key}"), e)))?;
    Ok(Event { key: key.clone(), token, kind })
}

/// What `append` did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The event was new and is now durable.
    New,
    /// The same mutation (same counter, token and kind) was stored already, at
    /// `generation_time`; nothing was written.
    Duplicate {
        /// The generation time the stored event has (which a retry may not have carried).
        generation_time: Timestamp,
    },
}

impl Appended {
    /// The answer to appending `event` when its token already holds `stored`: a `Duplicate`
    /// if it is the same mutation, a `Conflict` otherwise. Every backend answers through this,
    /// so they cannot disagree.
    pub fn judge(event: &Event, stored: Stored) -> StoreResult<Self> {
        if stored.kind == event.kind {
            Ok(Self::Duplicate { generation_time: stored.generation_time })
        } else {
            Err(crate::StoreError::Conflict {
                key: event.key.clone(),
                token: event.token.clone(),
                stored: stored.kind,
                given: event.kind,
            })
        }
    }

    /// Whether this append wrote the event.
    pub fn is_new(self) -> bool {
        self == Self::New
    }
}

/// Whether the store must look an event's token up before appending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityCheck {
    /// A client's token: it may be taken already, and it is kept taken for `window` after
    /// the event's generation time ([`EventLog::append`]).
    Claim {
        /// The namespace's idempotency window.
        window: Duration,
    },
    /// A token the server made for this call: nobody can hold it, and nobody will send it
    /// again ([`EventLog::append_new`]).
    KnownNew,
}

/// One append of [`EventLog::append_batch`].
#[derive(Debug, Clone)]
pub struct BatchAppend {
    /// The event.
    pub event: Event,
    /// As for [`EventLog::append`].
    pub deadline: Timestamp,
    /// Whether the store claims the token.
    pub check: IdentityCheck,
}

/// What the store knows about one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterState {
    /// The newest checkpoint, if the counter was ever rolled up.
    pub checkpoint: Option<Checkpoint>,
    /// The greatest `generation_time` of any event appended to the counter, if any.
    pub last_write: Option<Timestamp>,
}

impl CounterState {
    /// Whether some event may lie at or after the checkpoint, i.e. a rollup has work to do.
    pub fn has_unfolded_events(&self) -> bool {
        match (self.last_write, self.checkpoint) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(w), Some(cp)) => w >= cp.until,
        }
    }
}

/// The immutable log of counter events.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends one event whose token a client chose.
    ///
    /// Contract:
    /// - After `Ok`, the event is durable (it survives a crash of the process) and visible to
    ///   [`EventLog::fold`], and the counter's `last_write` is at least the event's time.
    /// - A client's token is taken by the first append of it to `key`, for `window` after that
    ///   append (by the store's clock), and never longer than its event is kept: the token alone identifies the mutation, whatever generation
    ///   time a later append of it carries. A later append while the token is taken answers
    ///   `Ok(Appended::Duplicate)` with the stored generation time if it is the same kind, and
    ///   `Err(StoreError::Conflict)` otherwise; either way nothing changes. Of concurrent
    ///   appends of one token, exactly one takes it. After `window` the token is free again.
    /// - An event whose token is taken is durable: a duplicate answer never stands for an
    ///   event that is missing (a store that takes the token before writing the event writes
    ///   it on the duplicate's behalf, or fails).
    /// - If the store's clock reaches `deadline` before the event could be made visible, the
    ///   result is `Err(StoreError::DeadlinePassed)` and nothing is written. Rollups rely on this:
    ///   an event never becomes visible inside a window that may already be folded. The
    ///   deadline is the event's generation time plus a margin; it moves with the generation
    ///   time when the stored one differs.
    /// - Concurrent appends may share one durable sync (group commit).
    async fn append(&self, event: &Event, deadline: Timestamp, window: Duration) -> StoreResult<Appended>;

    /// The mutation `token` holds on `key`, if a client's append took it and its window has not
    /// passed (see [`EventLog::append`]). For inspection: a store that takes a token before it
    /// writes the event may hold a token whose append failed in between, so a retry is answered
    /// by `append` (which stores the event on its behalf or refuses), never by this alone.
    ///
    /// Contract: sees every append of the token that returned `Ok` before the call began.
    async fn find_token(&self, key: &CounterKey, token: &str) -> StoreResult<Option<Stored>>;

    /// Appends one event whose token the server made for this one call (a mutation sent
    /// without a token), so no event with it can be stored yet and nobody will append it again.
    ///
    /// Contract: as [`EventLog::append`], except that the token is not taken (nothing is
    /// looked up or remembered for it) and the answer is `Ok(Appended::New)`. This is what
    /// makes token-less adds cheaper than adds with a client's token: on every backend taking
    /// a token is a read on the write path.
    async fn append_new(&self, event: &Event, deadline: Timestamp) -> StoreResult<Appended>;

    /// Appends events that arrived together (a pipeline, a batch request), each as
    /// [`EventLog::append`] or [`EventLog::append_new`] says, and answers each in order.
    ///
    /// Contract: each answer is what the single call would have answered; the batch is not
    /// atomic (some may fail while others land). Stores with a single writer take the batch
    /// as one request. The default runs the single calls concurrently, except that a repeat
    /// of a token earlier in the batch runs after it (and so finds it).
    async fn append_batch(&self, appends: &[BatchAppend]) -> Vec<StoreResult<Appended>> {
        let one = |a: &BatchAppend| {
            let (event, deadline, check) = (a.event.clone(), a.deadline, a.check);
            async move {
                match check {
                    IdentityCheck::Claim { window } => self.append(&event, deadline, window).await,
                    IdentityCheck::KnownNew => self.append_new(&event, deadline).await,
                }
            }
        };
        let mut seen = std::collections::HashSet::new();
        let (firsts, repeats): (Vec<_>, Vec<_>) = (0..appends.len())
            .partition(|&i| seen.insert((&appends[i].event.key, appends[i].event.token.token())));
        let mut results: Vec<Option<StoreResult<Appended>>> = vec![None; appends.len()];
        let landed = futures::future::join_all(firsts.iter().map(|&i| one(&appends[i]))).await;
        for (i, result) in firsts.into_iter().zip(landed) {
            results[i] = Some(result);
        }
        for i in repeats {
            results[i] = Some(one(&appends[i]).await);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Unavailable("append not run".into()))))
            .collect()
    }

    /// Whether every append to this store goes through the one engine of this process: the
    /// embedded store locks its directory, so no other process writes it. The engine then keeps
    /// each counter's unfolded events in memory and folds, reads and deduplicates from there
    /// (see `tally_engine`'s local tail). Stores that several instances share answer `false`,
    /// and each instance reads and folds through the store.
    ///
    /// Contract: when `true`, no event reaches the store except through this value's
    /// `append`, `append_new` and `append_batch` (a restart is a new value, which finds the
    /// earlier process's events through `scan_counters`).
    fn exclusive(&self) -> bool {
        false
    }

    /// Why appends cannot succeed until the process restarts, if that is so (the embedded
    /// store's writer thread has stopped); `None` while they can. A store that is only
    /// failing for now (a full disk, a node down) answers `None`: it may heal. Readiness
    /// reports it, so that a supervisor restarts or drains a process that can no longer write.
    fn stopped(&self) -> Option<String> {
        None
    }

    /// Folds the events of `key` with `from <= generation_time < until`, in
    /// `(generation_time, token)` order.
    ///
    /// Contract: sees every event whose `append` returned `Ok` before the call began.
    async fn fold(&self, key: &CounterKey, from: Timestamp, until: Timestamp) -> StoreResult<Fold>;

    /// Up to `limit` events of `key` with `from <= generation_time < until`, in
    /// `(generation_time, token)` order, starting after `after` (exclusive) if given: one page
    /// of the counter's history, for audit.
    ///
    /// Contract: sees every event whose `append` returned `Ok` before the call began, and none
    /// that retention deleted; paging with the last event of each page visits every event of
    /// the range exactly once.
    async fn list_events(
        &self,
        key: &CounterKey,
        from: Timestamp,
        until: Timestamp,
        after: Option<&EventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Event>>;

    /// Deletes at most `limit` events of `key` with `generation_time < before`, oldest first, and
    /// returns how many it deleted; fewer than `limit` means none are left.
    ///
    /// Contract: the caller guarantees those events are folded into a durable checkpoint.
    async fn delete_events_before(
        &self,
        key: &CounterKey,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<usize>;

    /// Whether this log reclaims old events by dropping whole time slices (see
    /// [`EventLog::drop_slices_before`]) rather than by per-counter deletion. Retention then
    /// skips `delete_events_before`.
    fn reclaims_whole_slices(&self) -> bool {
        false
    }

    /// Drops every stored time slice that ends at or before `before`, with all its events, and
    /// returns how many slices it dropped. Logs without slices drop nothing.
    ///
    /// Contract: the caller guarantees that every event of every counter before `before` is
    /// folded into a durable checkpoint or past its namespace's retention.
    async fn drop_slices_before(&self, _before: Timestamp) -> StoreResult<usize> {
        Ok(0)
    }
}

/// Per-counter state: the rollup checkpoint and the last-write time.
#[async_trait]
pub trait CounterStore: Send + Sync {
    /// The counter's checkpoint and last-write time; both `None` for an unknown counter.
    async fn counter_state(&self, key: &CounterKey) -> StoreResult<CounterState>;

    /// The counter's checkpoint alone: what [`CounterStore::counter_state`] answers for it,
    /// for stores that can read it alone more cheaply.
    async fn checkpoint(&self, key: &CounterKey) -> StoreResult<Option<Checkpoint>> {
        Ok(self.counter_state(key).await?.checkpoint)
    }

    /// About how many counters have state, where the store can tell without a scan (for
    /// `INFO keyspace`); `None` where it cannot.
    fn approximate_counters(&self) -> Option<u64> {
        None
    }

    /// Stores `checkpoint` if it is newer (greater `until`) than the stored one, durably, and
    /// returns the checkpoint that is stored afterwards.
    ///
    /// Contract: a checkpoint never moves backwards, whatever the order of concurrent calls.
    async fn put_checkpoint(&self, key: &CounterKey, checkpoint: Checkpoint) -> StoreResult<Checkpoint>;

    /// Stores each checkpoint as [`CounterStore::put_checkpoint`] does, and answers each in
    /// order: the checkpoints a batch of rollups folded.
    ///
    /// Contract: the answers are those of the single calls made in the list's order (a key may
    /// appear more than once); the list is not atomic (some may fail while others are
    /// stored). Stores with a single writer take the list as one request. The default makes
    /// the single calls one after another.
    async fn put_checkpoints(
        &self,
        checkpoints: &[(CounterKey, Checkpoint)],
    ) -> Vec<StoreResult<Checkpoint>> {
        let mut answers = Vec::with_capacity(checkpoints.len());
        for (key, checkpoint) in checkpoints {
            answers.push(self.put_checkpoint(key, *checkpoint).await);
        }
        answers
    }

    /// Lists up to `limit` counters that have events, with their state, in a stable
    /// backend-defined order, starting after `after` and restricted to `namespace` if given.
    ///
    /// Contract: paging with the last key of each page visits every counter exactly once.
    async fn scan_counters(
        &self,
        namespace: Option<&Namespace>,
        after: Option<&CounterKey>,
        limit: usize,
    ) -> StoreResult<Vec<(CounterKey, CounterState)>>;
}

/// Namespace configurations.
#[async_trait]
pub trait NamespaceStore: Send + Sync {
    /// Stores a new namespace; `Err(NamespaceExists)` if the name is taken.
    ///
    /// A namespace created again after [`NamespaceStore::delete_namespace`] starts empty: no
    /// event, state or token of the one deleted shows through, and every write to it is seen,
    /// whatever time it carries. A store that other processes share may first refuse the name
    /// with `Err(NamespaceRecentlyDeleted { until })` until every process has forgotten the
    /// deleted namespace (so that none writes into it after the new one exists); after `until`
    /// on the store's clock, the same call succeeds.
    async fn create_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()>;

    /// Replaces an existing namespace's configuration; `Err(NamespaceNotFound)` if there is none.
    async fn update_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()>;

    /// The namespace's configuration, if it exists.
    async fn get_namespace(&self, name: &Namespace) -> StoreResult<Option<NamespaceConfig>>;

    /// Every stored namespace, ordered by name.
    async fn list_namespaces(&self) -> StoreResult<Vec<(Namespace, NamespaceConfig)>>;

    /// Deletes the namespace's configuration and every event and state of its counters.
    /// Returns whether the namespace existed. Writes to its counters made after it returns
    /// are refused `NamespaceNotFound`, or (by a process sharing the store that has not yet
    /// noticed) land where no namespace created later sees them.
    async fn delete_namespace(&self, name: &Namespace) -> StoreResult<bool>;
}

/// A complete store: what the engine runs on.
pub trait Store: EventLog + CounterStore + NamespaceStore + 'static {}

impl<T: EventLog + CounterStore + NamespaceStore + 'static> Store for T {}
