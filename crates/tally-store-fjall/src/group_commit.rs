//! Group commit: one writer thread, one `fdatasync` per batch of requests.
//!
//! Requests queue on a bounded channel. The writer blocks for the first one, then takes
//! whatever else is already queued (up to `max_batch`), applies them all to one fjall batch
//! and syncs it once. While it syncs, new requests queue up and form the next batch, so the
//! batch size follows the load: one request per sync when idle, hundreds under pressure.
//!
//! Being the only writer also makes each request's read-check-write atomic: the idempotency
//! check, `last_write = max(...)` and "checkpoints never move backwards" need no locks. Reads
//! of values written earlier in the same, not yet committed, batch go through an overlay.
//! Every reply waits for the commit, so nothing is acknowledged before it is durable.
//!
//! A commit writes its events as one entry of the `journal` keyspace and stages them in
//! memory; once enough are staged, they move into the `events` keyspace in tables of their
//! own, and the writer writes the moved counters' `last_write` a slice at a time
//! ([`staged`](crate::staged) says how and why).

use foldhash::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fjall::{Keyspace, PersistMode};
use tally_core::{Checkpoint, Clock, CounterKey, Event, Namespace, Timestamp};
use tally_store::{Appended, StoreError, StoreResult, Stored};
use tokio::sync::{mpsc, oneshot};

use crate::handles::{Handles, Keyspaces, unavailable};
use crate::key_codec::{self as codec, TakenToken};
use crate::presence::{Presence, StateKind, TokenPresence};
use crate::recent_state::RecentState;
use crate::staged::{Staged, StagedEvent, Tables, journal_value};
use crate::taken_tokens::{Published, TakenTokens};

/// How many requests may wait for the writer before senders are made to wait.
const QUEUE_DEPTH: usize = 65_536;
/// How many keys one step of a bulk deletion removes before committing.
const DELETE_CHUNK: usize = 10_000;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// A mutation for the writer thread.
pub(crate) enum Op {
    /// Joins the current group commit.
    Shared(SharedOp),
    /// Reads committed state in bulk, so it runs alone after the current group is committed.
    Exclusive(ExclusiveOp),
    /// One slice of moving the events staged in journal entries before `before` (a sequence
    /// number), after the current group is committed; answers whether none of them is left.
    /// A caller that needs them all in the tables sends it until it answers `true`, so that
    /// appends queued meanwhile wait behind one slice at a time, not behind the whole move.
    MoveSlice { before: u64, reply: Reply<bool> },
}

/// A request as it waits in the writer's queue: since when it waits.
pub(crate) struct Queued {
    op: Op,
    /// Real (monotonic) time, not the store's clock: what is measured is how long a request
    /// really waited, which a test's manual clock does not move.
    since: Instant,
}

impl Op {
    /// Whether it is a write of events, which the writer sheds when it waited too long.
    /// Checkpoints and namespaces are never shed: rollups and the control plane stay live.
    fn is_append(&self) -> bool {
        matches!(self, Op::Shared(SharedOp::Append { .. } | SharedOp::AppendBatch { .. }))
    }

    /// Answers the request with `error` without running it.
    fn refuse(self, error: &StoreError) {
        fn send<T>(reply: Reply<T>, error: &StoreError) {
            let _ = reply.send(Err(error.clone()));
        }
        match self {
            Op::Shared(SharedOp::Append { reply, .. }) => send(reply, error),
            Op::Shared(SharedOp::AppendBatch { reply, .. }) => send(reply, error),
            Op::Shared(SharedOp::PutCheckpoints { reply, .. }) => send(reply, error),
            Op::Shared(SharedOp::CreateNamespace { reply, .. } | SharedOp::UpdateNamespace { reply, .. }) => {
                send(reply, error)
            }
            Op::Exclusive(ExclusiveOp::DeleteNamespace { reply, .. }) => send(reply, error),
            Op::Exclusive(ExclusiveOp::DeleteEventsBefore { reply, .. }) => send(reply, error),
            Op::MoveSlice { reply, .. } => send(reply, error),
        }
    }
}

pub(crate) enum SharedOp {
    /// `claim`: a client's token to take; `None` for a token the server made for this append,
    /// which nobody looks up.
    Append {
        event: Event,
        deadline: Timestamp,
        claim: Option<Claim>,
        reply: Reply<Appended>,
    },
    /// Appends that arrived together (a pipeline, a batch request): one request to the writer.
    AppendBatch {
        appends: Vec<BatchAppend>,
        reply: Reply<Vec<StoreResult<Appended>>>,
    },
    /// Checkpoints that a batch of rollups put together: one request to the writer, each
    /// answered as alone.
    PutCheckpoints {
        checkpoints: Vec<(CounterKey, Checkpoint)>,
        reply: Reply<Vec<StoreResult<Checkpoint>>>,
    },
    CreateNamespace {
        name: Namespace,
        json: Vec<u8>,
        reply: Reply<()>,
    },
    UpdateNamespace {
        name: Namespace,
        json: Vec<u8>,
        reply: Reply<()>,
    },
}

/// One append of [`SharedOp::AppendBatch`].
pub(crate) struct BatchAppend {
    pub event: Event,
    pub deadline: Timestamp,
    /// As in [`SharedOp::Append`].
    pub claim: Option<Claim>,
}

/// A client's token to take with its event.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    /// The token's key in the `tokens` keyspace, made once by the caller that looked it up.
    pub key: Vec<u8>,
    /// How long it stays taken.
    pub window: Duration,
    /// The caller found the token free in a read made after this commit was published
    /// ([`GroupCommitter::published`]); the writer checks only what came after. `None`: the
    /// caller could not look (the database was closed), so the writer reads the store.
    pub checked: Option<u64>,
}

/// Requests that read or delete committed state in bulk. Each runs after every staged event
/// is moved into the `events` keyspace, so it sees them there.
pub(crate) enum ExclusiveOp {
    DeleteNamespace { name: Namespace, reply: Reply<bool> },
    DeleteEventsBefore { key: CounterKey, before: Timestamp, limit: usize, reply: Reply<usize> },
}

impl ExclusiveOp {
    /// Whether staged events must be in the `events` keyspace before it runs: a deletion of
    /// events only where the counter has staged events it would delete (retention calls it per
    /// counter, for events days old, which are never staged).
    fn needs_staged_moved(&self, staged: &Staged) -> bool {
        match self {
            ExclusiveOp::DeleteEventsBefore { key, before, .. } => {
                staged.holds_before(&codec::counter_prefix(key), &codec::event_bound(key, *before))
            }
            ExclusiveOp::DeleteNamespace { .. } => staged.len() > 0,
        }
    }
}

/// Counts kept by the writer thread, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Requests handled.
    pub requests: AtomicU64,
    /// Durable commits (each one `fdatasync`).
    pub commits: AtomicU64,
}

impl WriterStats {
    /// `(requests, commits)` so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.requests.load(Ordering::Relaxed), self.commits.load(Ordering::Relaxed))
    }
}

/// The handle that sends requests to the writer thread. The thread stops when it is dropped.
pub(crate) struct GroupCommitter {
    tx: mpsc::Sender<Queued>,
    pub stats: Arc<WriterStats>,
    published: Arc<Published>,
}

impl GroupCommitter {
    /// Starts the writer on the open database `loaded`, whose journal `staged` holds.
    pub fn start(
        handles: Arc<Handles>,
        loaded: Arc<Keyspaces>,
        shared: Shared,
        clock: Arc<dyn Clock>,
        options: &crate::FjallOptions,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = shared.stats.clone();
        let recent = RecentState::new(RECENT_STATE_ENTRIES, RECENT_TOKENS);
        let published = recent.tokens.published();
        let writer = Writer {
            handles,
            loaded: Arc::downgrade(&loaded),
            shared,
            clock,
            max_batch: options.max_batch.max(1),
            max_queue_wait: options.max_queue_wait,
            stage_events: options.stage_events.max(1),
            move_slice: options.move_slice.max(1),
            recent,
        };
        std::thread::Builder::new().name("tally-writer".into()).spawn(move || writer.run(rx))?;
        Ok(Self { tx, stats, published })
    }

    /// Whether the writer thread has stopped (it ends only when this handle is dropped, or
    /// by a panic): every request would be refused.
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    /// The last commit every read now sees: note it before looking a token up for a [`Claim`].
    pub fn published(&self) -> u64 {
        self.published.current()
    }

    /// Sends one request and waits until it is committed (or refused).
    pub async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("embedded store writer has stopped".into());
        self.tx.send(Queued { op: make(reply), since: Instant::now() }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// What the writer shares with the store's readers.
#[derive(Clone)]
pub(crate) struct Shared {
    pub stats: Arc<WriterStats>,
    pub presence: Arc<Presence>,
    pub tokens: Arc<TokenPresence>,
    pub staged: Arc<Staged>,
}

impl Shared {
    /// Whether `space` may hold `key`: `false` only where a filter knows it never did
    /// (per-counter state in [`Presence`], clients' tokens in [`TokenPresence`]).
    fn may_hold(&self, space: Space, key: &[u8]) -> bool {
        match space {
            Space::LastWrite => self.presence.may_contain(StateKind::LastWrite, key),
            Space::Checkpoints => self.presence.may_contain(StateKind::Checkpoint, key),
            Space::Tokens => self.tokens.may_be_taken(key),
            Space::Namespaces => true,
        }
    }

    /// Adds `key` to the filter of `space`, if it has one.
    fn note_written(&self, space: Space, key: &[u8]) {
        match space {
            Space::LastWrite => self.presence.insert(StateKind::LastWrite, key),
            Space::Checkpoints => self.presence.insert(StateKind::Checkpoint, key),
            Space::Tokens => self.tokens.insert(key),
            Space::Namespaces => {}
        }
    }
}

/// Where a move of staged events writes in `ks`.
fn tables(ks: &Keyspaces) -> Tables {
    Tables { events: ks.events.clone(), tokens: ks.tokens.clone() }
}

struct Writer {
    handles: Arc<Handles>,
    /// The database whose journal `shared.staged` holds. Weak: a strong handle would keep a
    /// closed database open, and its directory locked against the reopening.
    loaded: std::sync::Weak<Keyspaces>,
    shared: Shared,
    clock: Arc<dyn Clock>,
    max_batch: usize,
    /// Appends that waited longer than this are shed unwritten.
    max_queue_wait: Duration,
    /// How many staged events make the writer move them.
    stage_events: usize,
    /// How many it moves between two commits.
    move_slice: usize,
    recent: RecentState,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        let shared = self.shared.clone();
        // A round's requests, in lists kept from round to round (at most `max_batch` long):
        // made afresh each round, the allocator handed them pages it had given back, and
        // zeroing those was a tenth of the writer's time under unpipelined loads.
        let (mut queued, mut ops) = (Vec::new(), Vec::new());
        while let Some(first) = rx.blocking_recv() {
            queued.push(first);
            while queued.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(op) => queued.push(op),
                    Err(_) => break,
                }
            }
            self.shed_late_appends(&mut queued, &mut ops);
            metrics::histogram!("tally_group_commit_batch_requests").record(ops.len() as f64);
            self.shared.stats.requests.fetch_add(ops.len() as u64, Ordering::Relaxed);
            // After a failed write the database is closed; each batch first tries to reopen it
            // and, until that works, is refused whole.
            let ks = match self.handles.get_or_reopen().and_then(|ks| self.stage_journal_of(ks)) {
                Ok(ks) => ks,
                Err(e) => {
                    ops.drain(..).for_each(|op| op.refuse(&e));
                    continue;
                }
            };
            let mut batch = Batch::new(&ks, &shared, Durability::Synced);
            // Events this round of requests stages: the move drains at least twice as many.
            let mut staging = 0;
            for op in ops.drain(..) {
                match op {
                    Op::Exclusive(op) => {
                        staging += self.finish(batch.take()).unwrap_or(0);
                        if op.needs_staged_moved(&self.shared.staged)
                            && let Err(e) = self.move_all(&ks)
                        {
                            Op::Exclusive(op).refuse(&e);
                            continue;
                        }
                        if matches!(op, ExclusiveOp::DeleteNamespace { .. }) {
                            // It deletes state the writer may remember.
                            self.recent.clear();
                        }
                        if let Some(e) = self.run_exclusive(&ks, op) {
                            self.handles.close(&e);
                        }
                    }
                    Op::Shared(op) => batch.apply(op, &*self.clock, &mut self.recent),
                    Op::MoveSlice { before, reply } => {
                        staging += self.finish(batch.take()).unwrap_or(0);
                        let _ = reply.send(self.move_slice_before(&ks, before));
                    }
                }
            }
            // A failed commit or move is logged, and the database reopened, by `finish`; the
            // events stay staged (and journaled) for the next move.
            if let Ok(staged) = self.finish(batch) {
                let _ = self.continue_move(&ks, staging + staged);
            }
        }
    }

    /// `ks`, with its journal staged if it is not the database the staged events came from
    /// (it was reopened after a failed write, from what reached its journal).
    fn stage_journal_of(&mut self, ks: Arc<Keyspaces>) -> StoreResult<Arc<Keyspaces>> {
        if !std::sync::Weak::ptr_eq(&self.loaded, &Arc::downgrade(&ks)) {
            let staged = self.shared.staged.load(&ks.journal)?;
            tracing::info!(staged, "staged the journal's events again after reopening the embedded store");
            self.loaded = Arc::downgrade(&ks);
        }
        Ok(ks)
    }

    /// Moves the next slice of the move under way, beginning one if enough has gathered. The
    /// slice is `move_slice` events, or twice what the last round of requests staged if that
    /// is more: a move must outrun the commits, or under a load of large commits what gathers
    /// during one move would outgrow it, and the next, without bound.
    fn continue_move(&mut self, ks: &Keyspaces, staged_last: usize) -> StoreResult<()> {
        if !self.shared.staged.is_moving() {
            if self.shared.staged.gathered() < self.stage_events {
                return Ok(());
            }
            self.shared.staged.begin_move(&tables(ks));
        }
        if !self.shared.staged.move_is_prepared() {
            // A thread is writing its events into their tables; the commits go on meanwhile.
            return Ok(());
        }
        self.move_slice(ks, self.move_slice.max(staged_last.saturating_mul(2)))
    }

    /// Moves one slice of the events staged in journal entries before `before`, beginning a
    /// move if none is under way; answers whether none of them is left staged.
    fn move_slice_before(&mut self, ks: &Keyspaces, before: u64) -> StoreResult<bool> {
        let left = |staged: &Staged| staged.oldest_entry().is_some_and(|entry| entry < before);
        if !left(&self.shared.staged) {
            return Ok(true);
        }
        self.shared.staged.begin_move(&tables(ks));
        self.move_slice(ks, self.move_slice)?;
        Ok(!left(&self.shared.staged))
    }

    /// Moves every staged event into the `events` keyspace: the move under way, then
    /// everything gathered since.
    fn move_all(&mut self, ks: &Keyspaces) -> StoreResult<()> {
        while self.shared.staged.len() > 0 {
            // Begins a move of what gathered only once the one under way is done.
            self.shared.staged.begin_move(&tables(ks));
            self.move_slice(ks, usize::MAX)?;
        }
        Ok(())
    }

    /// Writes the `last_write` of the counters of at most `limit` events of the move under
    /// way, in key order, once the move is prepared (its events and tokens in their tables;
    /// see `staged.rs`), in one batch that needs no sync of its own; the last slice also
    /// deletes the move's journal entries. If the move could not be prepared, the database is
    /// closed as after a failed write, and reopened from what reached its journal.
    fn move_slice(&mut self, ks: &Keyspaces, limit: usize) -> StoreResult<()> {
        let started = Instant::now();
        let staged = self.shared.staged.clone();
        let sliced = staged.with_next_slice(limit, &tables(ks), |runs, last| {
            let shared = self.shared.clone();
            let mut batch = Batch::new(ks, &shared, Durability::Deferred);
            // One `last_write` for each counter's run: its last event, the newest (a counter's
            // keys sort by generation time).
            for &run in runs {
                let (Some(first), Some(last)) = (run.first(), run.last()) else { continue };
                debug_assert!(run.iter().all(|e| e.time <= last.time), "a run is in key order");
                batch.raise_last_write(first.counter().to_vec(), last.time);
            }
            last.unwrap_or_default().iter().for_each(|&entry| batch.delete_journal_entry(entry));
            self.finish(batch)
        });
        let (committed, end) = sliced.inspect_err(|e| self.fail(e))?;
        committed?;
        staged.slice_moved(end);
        metrics::histogram!("tally_store_staged_move_slice_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Moves the requests of `queued` into `ops`, but refuses, unwritten, the appends that
    /// waited longer than `max_queue_wait`: the writer is behind its load, and their clients
    /// are better told now to back off than answered late.
    fn shed_late_appends(&self, queued: &mut Vec<Queued>, ops: &mut Vec<Op>) {
        debug_assert!(ops.is_empty(), "the last round's requests are all answered");
        let now = Instant::now();
        let mut shed = 0u64;
        for Queued { op, since } in queued.drain(..) {
            let waited = now.saturating_duration_since(since);
            if op.is_append() && waited > self.max_queue_wait {
                op.refuse(&StoreError::Overloaded { waited });
                shed += 1;
            } else {
                ops.push(op);
            }
        }
        if shed > 0 {
            metrics::counter!("tally_store_shed_total").increment(shed);
        }
    }

    /// Commits a batch and answers how many events it staged; afterwards the writer remembers
    /// what it wrote, or, if the commit failed, forgets everything (the database is reopened
    /// from what reached the journal).
    fn finish(&mut self, mut batch: Batch<'_>) -> StoreResult<usize> {
        let settled = batch.settle_last_writes(&mut self.recent);
        let staged = batch.staged.len();
        match batch.commit(settled.err()) {
            Ok(written) => {
                self.remember(written);
                Ok(staged)
            }
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    /// Closes the database after a failed write; the next batch reopens it from what reached
    /// its journal.
    fn fail(&mut self, e: &StoreError) {
        // Closed first: what the writer remembers is forgotten only once no read can see the
        // failed batch's writes in memory (see `TakenTokens::forget_all`).
        self.handles.close(e);
        self.recent.clear();
    }

    /// Takes in what a batch committed.
    fn remember(&mut self, written: Overlay) {
        for space in [Space::LastWrite, Space::Checkpoints] {
            let Some(kind) = space.state_kind() else { continue };
            written[space.index()].iter().for_each(|(key, value)| self.recent.insert(kind, key, value));
        }
        let taken = written[Space::Tokens.index()].keys().map(|k| TakenTokens::hash(k)).collect();
        self.recent.tokens.committed(taken);
    }

    /// Runs one exclusive request; returns its error if the database failed under it.
    fn run_exclusive(&self, ks: &Keyspaces, op: ExclusiveOp) -> Option<StoreError> {
        fn failed<T>(r: &StoreResult<T>) -> Option<StoreError> {
            match r {
                Err(e @ StoreError::Unavailable(_)) => Some(e.clone()),
                _ => None,
            }
        }
        match op {
            ExclusiveOp::DeleteEventsBefore { key, before, limit, reply } => {
                let result = Self::delete_events_before(ks, &key, before, limit);
                let error = failed(&result);
                let _ = reply.send(result);
                error
            }
            ExclusiveOp::DeleteNamespace { name, reply } => {
                let result = Self::delete_namespace(ks, &name);
                let error = failed(&result);
                let _ = reply.send(result);
                error
            }
        }
    }

    fn delete_events_before(
        ks: &Keyspaces,
        key: &CounterKey,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<usize> {
        let range = codec::counter_prefix(key)..codec::event_bound(key, before);
        let doomed: Vec<_> = ks
            .events
            .range(range)
            .take(limit)
            .map(|g| g.key())
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        let mut writes = ks.db.batch().durability(Some(PersistMode::SyncData));
        doomed.iter().for_each(|k| writes.remove(&ks.events, k.clone()));
        // A token is never kept longer than its event.
        for guard in ks.tokens.prefix(codec::counter_prefix(key)) {
            let (token_key, value) = guard.into_inner().map_err(unavailable)?;
            if codec::decode_token_value(&value)?.stored.generation_time < before {
                writes.remove(&ks.tokens, token_key);
            }
        }
        writes.commit().map_err(unavailable)?;
        Ok(doomed.len())
    }

    fn delete_namespace(ks: &Keyspaces, name: &Namespace) -> StoreResult<bool> {
        let existed = ks.namespaces.get(name.as_str()).map_err(unavailable)?.is_some();
        let prefix = codec::namespace_prefix(name);
        // The configuration goes last: if this is interrupted, the namespace still exists and
        // deleting it again finishes the job, instead of leaving orphaned data behind.
        for space in [&ks.events, &ks.tokens, &ks.last_write, &ks.checkpoints] {
            loop {
                let doomed: Vec<_> = space
                    .prefix(&prefix)
                    .take(DELETE_CHUNK)
                    .map(|g| g.key())
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?;
                if doomed.is_empty() {
                    break;
                }
                let mut writes = ks.db.batch().durability(Some(PersistMode::SyncData));
                doomed.into_iter().for_each(|k| writes.remove(space, k));
                writes.commit().map_err(unavailable)?;
            }
        }
        let mut writes = ks.db.batch().durability(Some(PersistMode::SyncData));
        writes.remove(&ks.namespaces, name.as_str());
        writes.commit().map_err(unavailable)?;
        Ok(existed)
    }
}

/// The keyspaces a batch reads back what it wrote to (events go in by `put_event`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Space {
    LastWrite,
    Checkpoints,
    Namespaces,
    Tokens,
}

impl Space {
    const ALL: usize = 4;

    fn index(self) -> usize {
        self as usize
    }

    /// The per-counter state the space holds, for the writer's memory of it.
    fn state_kind(self) -> Option<StateKind> {
        match self {
            Space::LastWrite => Some(StateKind::LastWrite),
            Space::Checkpoints => Some(StateKind::Checkpoint),
            Space::Namespaces | Space::Tokens => None,
        }
    }
}

type Ack = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// Values written by one batch, by key, one map per keyspace.
type Overlay = [HashMap<Vec<u8>, Vec<u8>>; Space::ALL];

/// Whether a batch's commit is synced before its requests are answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// `fdatasync` before any answer: what acknowledges writes.
    Synced,
    /// Written to the database's journal and synced by the next [`Durability::Synced`]
    /// commit: for a move of staged events, which a crash may undo without losing anything.
    Deferred,
}

/// One group commit in the making.
struct Batch<'a> {
    ks: &'a Keyspaces,
    shared: &'a Shared,
    durability: Durability,
    writes: fjall::OwnedWriteBatch,
    written: usize,
    overlay: Overlay,
    /// The events appended, for one journal entry, staged once it is committed.
    staged: Vec<StagedEvent>,
    /// The greatest generation time per counter (by state key) of the events a move puts
    /// into the `events` keyspace, in key order: `last_write` is derived once per counter per
    /// move, and written in key order too.
    last_writes: Vec<(Vec<u8>, Timestamp)>,
    acks: Vec<Ack>,
    /// Requests applied to this batch; each must have exactly one ack.
    requests: usize,
}

impl<'a> Batch<'a> {
    fn new(ks: &'a Keyspaces, shared: &'a Shared, durability: Durability) -> Self {
        let persist = match durability {
            Durability::Synced => Some(PersistMode::SyncData),
            Durability::Deferred => None,
        };
        Self {
            ks,
            shared,
            durability,
            writes: ks.db.batch().durability(persist),
            written: 0,
            overlay: Default::default(),
            staged: Vec::new(),
            last_writes: Vec::new(),
            acks: Vec::new(),
            requests: 0,
        }
    }

    /// This batch, leaving an empty one like it in its place: for a request that must run
    /// after what came before it is committed.
    fn take(&mut self) -> Self {
        std::mem::replace(self, Batch::new(self.ks, self.shared, self.durability))
    }

    fn keyspace(&self, space: Space) -> &'a Keyspace {
        match space {
            Space::LastWrite => &self.ks.last_write,
            Space::Checkpoints => &self.ks.checkpoints,
            Space::Namespaces => &self.ks.namespaces,
            Space::Tokens => &self.ks.tokens,
        }
    }

    /// The value of `key` as this batch will leave it: its own write, else what the writer
    /// remembers committing, else the database.
    fn get(&self, space: Space, key: &[u8], recent: &mut RecentState) -> StoreResult<Option<Vec<u8>>> {
        if !self.shared.may_hold(space, key) {
            return Ok(None);
        }
        if let Some(v) = self.overlay[space.index()].get(key) {
            return Ok(Some(v.clone()));
        }
        let kind = space.state_kind();
        if let Some(v) = kind.and_then(|kind| recent.get(kind, key)) {
            return Ok(Some(v));
        }
        let stored = self.keyspace(space).get(key).map_err(unavailable)?.map(|v| v.to_vec());
        if let (Some(kind), Some(v)) = (kind, &stored) {
            recent.insert(kind, key, v);
        }
        Ok(stored)
    }

    /// Queues a write, visible to later requests of this batch.
    fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(self.keyspace(space), key.clone(), value.clone());
        self.written += 1;
        self.note(space, key, value);
    }

    /// Makes `key` hold `value` for later requests of this batch, for the writer's memory once
    /// the batch is committed, and for the space's filter.
    fn note(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        // Before the commit, so that no reader ever finds the key while a filter denies it.
        self.shared.note_written(space, &key);
        self.overlay[space.index()].insert(key, value);
    }

    /// Queues the deletion of journal entry `sequence`, whose events a move has put into
    /// their tables.
    fn delete_journal_entry(&mut self, sequence: u64) {
        self.writes.remove(&self.ks.journal, codec::journal_key(sequence).to_vec());
        self.written += 1;
    }

    /// Queues the reply; it is sent after the commit, turned into the commit's error if that fails.
    fn ack<T: Send + 'static>(&mut self, reply: Reply<T>, result: StoreResult<T>) {
        self.acks.push(Box::new(move |failure| {
            let _ = reply.send(match failure {
                Some(e) => Err(e.clone()),
                None => result,
            });
        }));
    }

    fn apply(&mut self, op: SharedOp, clock: &dyn Clock, recent: &mut RecentState) {
        self.requests += 1;
        match op {
            SharedOp::Append { event, deadline, claim, reply } => {
                let result = self.append(&event, deadline, claim, clock.now(), recent);
                self.ack(reply, result);
            }
            SharedOp::AppendBatch { appends, reply } => {
                // One clock read for the request: its appends are checked against their
                // deadlines and take their tokens at one instant, before the commit either way.
                let now = clock.now();
                let results = appends
                    .iter()
                    .map(|a| self.append(&a.event, a.deadline, a.claim.clone(), now, recent))
                    .collect();
                self.ack(reply, Ok(results));
            }
            SharedOp::PutCheckpoints { checkpoints, reply } => {
                let results = checkpoints
                    .iter()
                    .map(|(key, checkpoint)| self.put_checkpoint(key, *checkpoint, recent))
                    .collect();
                self.ack(reply, Ok(results));
            }
            SharedOp::CreateNamespace { name, json, reply } => {
                let result = self.put_namespace(name, json, false, recent);
                self.ack(reply, result);
            }
            SharedOp::UpdateNamespace { name, json, reply } => {
                let result = self.put_namespace(name, json, true, recent);
                self.ack(reply, result);
            }
        }
    }

    fn append(
        &mut self,
        event: &Event,
        deadline: Timestamp,
        claim: Option<Claim>,
        now: Timestamp,
        recent: &mut RecentState,
    ) -> StoreResult<Appended> {
        // The writer is the only thread that takes tokens, so its check and its take are one step.
        if let Some(claim) = &claim
            && let Some(taken) = self.taken_token(&claim.key, claim.checked, recent)?
            && taken.until > now
        {
            return Appended::judge(event, taken.stored);
        }
        if now >= deadline {
            return Err(StoreError::DeadlinePassed { key: event.key.clone(), deadline });
        }
        let time = event.token.generation_time();
        let until = claim.as_ref().map(|claim| now.saturating_add(claim.window));
        self.staged.push(StagedEvent::of(event, until));
        self.written += 1;
        if let (Some(claim), Some(until)) = (claim, until) {
            let stored = Stored { generation_time: time, kind: event.kind };
            // Journaled and staged with its event (see `staged.rs`), it reaches the `tokens`
            // keyspace when the event moves: no insert into that keyspace's memtable at a
            // random place for each add.
            self.note(Space::Tokens, claim.key, codec::token_value(&TakenToken { stored, until }).to_vec());
        }
        Ok(Appended::New)
    }

    /// Notes that a move puts events of the counter with state key `counter`, the newest at
    /// `time`; called once per counter, in key order.
    fn raise_last_write(&mut self, counter: Vec<u8>, time: Timestamp) {
        debug_assert!(
            self.last_writes.last().is_none_or(|(last, _)| *last < counter),
            "in key order, once each"
        );
        self.last_writes.push((counter, time));
    }

    /// What a client's token holds, if it was taken, where the caller found it free after
    /// commit `checked` (if it could look): this batch's own take, else the store's, read only
    /// where a commit since may have taken it.
    fn taken_token(
        &self,
        token_key: &[u8],
        checked: Option<u64>,
        recent: &mut RecentState,
    ) -> StoreResult<Option<TakenToken>> {
        if let Some(v) = self.overlay[Space::Tokens.index()].get(token_key) {
            return codec::decode_token_value(v).map(Some);
        }
        if let Some(checked) = checked
            && !recent.tokens.may_be_taken_since(TakenTokens::hash(token_key), checked)
        {
            return Ok(None);
        }
        // Staged first: a token leaves the staged ones only once it is in the keyspace.
        if let Some(taken) = self.shared.staged.token(token_key) {
            return Ok(Some(taken));
        }
        self.get(Space::Tokens, token_key, recent)?.map(|v| codec::decode_token_value(&v)).transpose()
    }

    /// Writes each moved counter's `last_write` where this batch raised it: one read (of
    /// what the writer remembers, else the database) and at most one write per counter.
    fn settle_last_writes(&mut self, recent: &mut RecentState) -> StoreResult<()> {
        for (state_key, time) in std::mem::take(&mut self.last_writes) {
            let last = self
                .get(Space::LastWrite, &state_key, recent)?
                .map(|v| codec::decode_time_value(&v))
                .transpose()?;
            if last.is_none_or(|last| last < time) {
                self.put(Space::LastWrite, state_key, codec::time_value(time).to_vec());
            }
        }
        Ok(())
    }

    /// Creates (`existing == false`) or replaces (`existing == true`) a namespace's config.
    fn put_namespace(
        &mut self,
        name: Namespace,
        json: Vec<u8>,
        existing: bool,
        recent: &mut RecentState,
    ) -> StoreResult<()> {
        let found = self.get(Space::Namespaces, name.as_str().as_bytes(), recent)?.is_some();
        match (existing, found) {
            (false, true) => Err(StoreError::NamespaceExists(name)),
            (true, false) => Err(StoreError::NamespaceNotFound(name)),
            _ => {
                self.put(Space::Namespaces, name.as_str().into(), json);
                Ok(())
            }
        }
    }

    fn put_checkpoint(
        &mut self,
        key: &CounterKey,
        checkpoint: Checkpoint,
        recent: &mut RecentState,
    ) -> StoreResult<Checkpoint> {
        let state_key = codec::counter_prefix(key);
        let stored = self
            .get(Space::Checkpoints, &state_key, recent)?
            .map(|v| codec::decode_checkpoint_value(&v))
            .transpose()?;
        match stored {
            Some(stored) if stored.until >= checkpoint.until => Ok(stored),
            _ => {
                self.put(Space::Checkpoints, state_key, codec::checkpoint_value(checkpoint).to_vec());
                Ok(checkpoint)
            }
        }
    }

    /// Commits and answers every request of the batch. Returns what it wrote, or the
    /// commit's error. `failed`: the batch could not be completed; nothing is committed and
    /// every request is answered with this error.
    fn commit(mut self, failed: Option<StoreError>) -> Result<Overlay, StoreError> {
        let failure = if let Some(e) = failed {
            tracing::error!(error = %e, "group commit could not be completed; its requests are answered unavailable");
            Some(e)
        } else if self.written == 0 {
            None
        } else {
            let journal_entry = (!self.staged.is_empty()).then(|| self.shared.staged.next_sequence());
            if let Some(sequence) = journal_entry {
                let entry = journal_value(&self.staged);
                self.writes.insert(&self.ks.journal, codec::journal_key(sequence).to_vec(), entry);
            }
            let started = Instant::now();
            let result = self.writes.commit().map_err(unavailable);
            if self.durability == Durability::Synced {
                self.shared.stats.commits.fetch_add(1, Ordering::Relaxed);
                metrics::histogram!("tally_group_commit_seconds").record(started.elapsed().as_secs_f64());
            }
            if let Err(e) = &result {
                tracing::error!(error = %e, "group commit failed; its requests are answered unavailable");
            }
            // Staged before any answer, so that a read that begins after an answer finds them.
            if let (Ok(()), Some(sequence)) = (&result, journal_entry) {
                self.shared.staged.add(sequence, std::mem::take(&mut self.staged));
            }
            result.err()
        };
        // Every request of the batch gets its answer, exactly once.
        debug_assert_eq!(self.acks.len(), self.requests, "a request of the batch was not answered");
        for ack in self.acks {
            ack(failure.as_ref());
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(self.overlay),
        }
    }
}

/// How many state values (`last_write`, checkpoints) of each kind the writer remembers: the
/// two generations of each fill tables of 2^19 entries (33 bytes each) without growing them,
/// about 70 MB in all.
const RECENT_STATE_ENTRIES: usize = 917_504;
/// How many token takings the writer remembers: at 100,000 takings a second, the commits of
/// the last 2.6 s, far longer than a request waits between its look-up and its commit under
/// any load that still meets its deadlines (an older look-up only costs a store read).
const RECENT_TOKENS: usize = 262_144;
