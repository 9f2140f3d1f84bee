//! `FjallStore`: the storage traits over one fjall database.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tally_core::{
    Checkpoint, Clock, CounterKey, Event, Failure, Fold, Namespace, NamespaceConfig, Timestamp,
};
use tally_store::{
    Appended, BatchAppend, CounterState, CounterStore, EventCursor, EventLog, IdentityCheck, NamespaceStore,
    StoreError, StoreResult, Stored,
};

use crate::group_commit::{self, ExclusiveOp, GroupCommitter, Op, SharedOp};
use crate::handles::{Handles, Keyspaces, unavailable};
use crate::key_codec as codec;
use crate::presence::{Presence, StateKind, TokenPresence};
use crate::staged::{Merge, Staged};

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct FjallOptions {
    /// Most requests one group commit takes. Default 4096: at ~50 bytes an event a batch stays
    /// far below fjall's journal limits, and a sync every 4096 writes is already negligible.
    pub max_batch: usize,
    /// Block cache size in bytes. Default 64 MiB: enough for the hot checkpoints of a million
    /// counters without crowding the rest of the process.
    pub cache_bytes: u64,
    /// How long a write may wait for the writer thread before it is shed unwritten
    /// (`StoreError::Overloaded`). Default 1 s: well inside the 5 s a write window allows, so
    /// that under overload the writer spends itself on requests that can still be answered in
    /// time, and their clients hear early that they should back off.
    pub max_queue_wait: Duration,
    /// How many acknowledged events wait in the journal and in memory before the writer moves
    /// them into the `events` keyspace in one sorted batch (see `staged.rs`). Default 262,144:
    /// the larger the move, the closer its events lie in key order (with 100,000 counters,
    /// two or three per counter instead of one in three), so each insert finds its place in a
    /// cached path and each moved counter's `last_write` is written once for more events. A
    /// random-key add cost about 13 µs of CPU with 32,768 and about 11.5 with 262,144. The
    /// price is memory: about 150 bytes per staged event, up to twice this many while a move
    /// drains and the next one gathers.
    pub stage_events: usize,
    /// How many staged events the writer moves between two commits. Default 512: about 2 ms
    /// of its time on a small machine, so that appends wait behind at most one slice, not a whole
    /// move. A slice is larger when the commits before it staged more than half of it: twice
    /// what they staged, so that a move always outruns the commits.
    pub move_slice: usize,
}

impl Default for FjallOptions {
    fn default() -> Self {
        Self {
            max_batch: 4096,
            cache_bytes: 64 << 20,
            max_queue_wait: Duration::from_secs(1),
            stage_events: 262_144,
            move_slice: 512,
        }
    }
}

/// The embedded store. Cheap to share behind an `Arc`; one process per data directory.
pub struct FjallStore {
    handles: Arc<Handles>,
    clock: Arc<dyn Clock>,
    presence: Arc<Presence>,
    tokens: Arc<TokenPresence>,
    staged: Arc<Staged>,
    writer: GroupCommitter,
}

/// Events folded between two yields to the runtime (about a millisecond of work).
const FOLD_CHUNK: usize = 4096;

impl FjallStore {
    /// Opens (or creates) the store in `path`. Append deadlines are judged by `clock`.
    ///
    /// Fails if another process holds the directory, or if it was written in another format.
    pub fn open(path: &Path, clock: Arc<dyn Clock>, options: FjallOptions) -> StoreResult<Self> {
        let handles = Arc::new(Handles::open(path, options.cache_bytes)?);
        let loaded = handles.get()?;
        let presence = Arc::new(load_presence(&loaded)?);
        let tokens = Arc::new(TokenPresence::with_capacity(loaded.tokens.approximate_len() as u64));
        let staged = Arc::new(Staged::default());
        let journaled = staged.load(&loaded.journal)?;
        // The journal's tokens are in no keyspace yet, so the scan below will not find them.
        staged.token_keys().iter().for_each(|key| tokens.insert(key));
        if journaled > 0 {
            tracing::info!(
                events = journaled,
                "staged the journal's events; they move into the tables on the next scan or once enough gather"
            );
        }
        let shared = group_commit::Shared {
            stats: Arc::default(),
            presence: presence.clone(),
            tokens: tokens.clone(),
            staged: staged.clone(),
        };
        // The writer first, so that every token taken from now on is in the filter before
        // the scan of those stored before ends.
        let writer = GroupCommitter::start(handles.clone(), loaded, shared, clock.clone(), &options)
            .map_err(|e| StoreError::Unavailable(Failure::caused_by("cannot start the writer thread", e)))?;
        let scan = (Arc::downgrade(&handles), tokens.clone());
        std::thread::Builder::new()
            .name("tally-token-scan".into())
            .spawn(move || load_token_presence(&scan.0, &scan.1, TOKEN_SCAN_CHUNK))
            .map_err(|e| StoreError::Unavailable(Failure::caused_by("cannot start the token scan", e)))?;
        Ok(Self { handles, clock, presence, tokens, staged, writer })
    }

    /// Has the writer move every event staged now into the `events` keyspace, a slice at a
    /// time (appends go on between the slices).
    async fn move_staged(&self) -> StoreResult<()> {
        let before = self.staged.next_sequence();
        if self.staged.oldest_entry().is_some_and(|entry| entry < before) {
            while !self.writer.submit(|reply| Op::MoveSlice { before, reply }).await? {}
        }
        Ok(())
    }

    /// Requests the writer handled and durable commits it made; their ratio is the mean
    /// group-commit batch size.
    pub fn writer_stats(&self) -> (u64, u64) {
        self.writer.stats.snapshot()
    }

    /// Bytes the store occupies on disk (tables and journals).
    pub fn disk_space(&self) -> StoreResult<u64> {
        self.handles.get()?.db.disk_space().map_err(unavailable)
    }

    /// Bytes of those in the database's write-ahead journals. fjall starts a new journal file
    /// only once the active one passes about 64 MB and deletes sealed ones once their writes
    /// are flushed, so up to that much stays whatever compaction does.
    pub fn journal_disk_space(&self) -> StoreResult<u64> {
        self.handles.get()?.db.journal_disk_space().map_err(unavailable)
    }

    /// Moves staged events into their tables, flushes memtables and compacts every keyspace
    /// fully; for measuring size on disk.
    pub async fn compact(&self) -> StoreResult<()> {
        self.move_staged().await?;
        let all = self.handles.get()?;
        for ks in [&all.events, &all.tokens, &all.last_write, &all.checkpoints, &all.namespaces, &all.journal]
        {
            ks.rotate_memtable_and_wait().map_err(unavailable)?;
            ks.major_compact().map_err(unavailable)?;
        }
        Ok(())
    }
}

/// What a caller's look-up found for a client's token.
enum Looked {
    /// Taken, holding this mutation: the append is answered from it.
    Taken(Stored),
    /// Free when looked up: the writer takes it, checking only commits made since.
    Free(group_commit::Claim),
}

impl FjallStore {
    /// Puts `checkpoints` in one request to the writer and answers each.
    async fn submit_checkpoints(
        &self,
        checkpoints: Vec<(CounterKey, Checkpoint)>,
    ) -> Vec<StoreResult<Checkpoint>> {
        let count = checkpoints.len();
        let request = |reply| Op::Shared(SharedOp::PutCheckpoints { checkpoints, reply });
        match self.writer.submit(request).await {
            Ok(answers) => {
                debug_assert_eq!(answers.len(), count, "the writer answers each checkpoint");
                answers
            }
            Err(e) => vec![Err(e); count],
        }
    }

    /// Looks a client's token up on the caller's task (see `taken_tokens.rs`), so that the
    /// writer thread, which every durable write waits for, does not.
    fn look_up_token(&self, event: &Event, window: Duration) -> StoreResult<Looked> {
        // Noted before the read: every commit up to it is visible to the read.
        let checked = self.writer.published();
        let key = codec::token_key(&event.key, event.token.token());
        // A database closed after a failed write is reopened by the writer alone: until then
        // the writer looks the token up itself (or refuses the append).
        let Ok(ks) = self.handles.get() else {
            return Ok(Looked::Free(group_commit::Claim { key, window, checked: None }));
        };
        Ok(match self.token_in(&ks, &key)? {
            Some(stored) => Looked::Taken(stored),
            None => Looked::Free(group_commit::Claim { key, window, checked: Some(checked) }),
        })
    }

    /// The mutation a token holds, if taken now.
    fn read_token(&self, key: &CounterKey, token: &str) -> StoreResult<Option<Stored>> {
        self.token_in(&*self.handles.get()?, &codec::token_key(key, token))
    }

    /// The mutation the token under `token_key` holds in `ks`, if taken now.
    fn token_in(&self, ks: &Keyspaces, token_key: &[u8]) -> StoreResult<Option<Stored>> {
        if !self.tokens.may_be_taken(token_key) {
            return Ok(None);
        }
        // Staged first: a token leaves the staged ones only once it is in the keyspace.
        let taken = match self.staged.token(token_key) {
            Some(taken) => taken,
            // One point read, usually answered by the memtable or a table's filter.
            None => match ks.tokens.get(token_key).map_err(unavailable)? {
                Some(value) => codec::decode_token_value(&value)?,
                None => return Ok(None),
            },
        };
        Ok((taken.until > self.clock.now()).then_some(taken.stored))
    }
}

/// The filter of counters with state, filled with every stored one.
fn load_presence(ks: &crate::handles::Keyspaces) -> StoreResult<Presence> {
    let counters = ks.last_write.approximate_len() as u64;
    let presence = Presence::with_capacity(counters);
    for (kind, space) in [(StateKind::LastWrite, &ks.last_write), (StateKind::Checkpoint, &ks.checkpoints)] {
        for guard in space.iter() {
            presence.insert(kind, &guard.key().map_err(unavailable)?);
        }
    }
    Ok(presence)
}

/// Token keys read per step of the scan at open: the database is held only that long, so a
/// reopen after a failed write does not wait for the whole scan.
const TOKEN_SCAN_CHUNK: usize = 10_000;

/// Adds every token stored in the `tokens` keyspace to `tokens`, `chunk` keys at a time, then
/// marks it loaded. Gives up when the store is dropped; a read that fails (the database is
/// being reopened) is tried again from where it stopped.
fn load_token_presence(handles: &std::sync::Weak<Handles>, tokens: &TokenPresence, chunk: usize) {
    use std::ops::Bound;
    let started = std::time::Instant::now();
    let (mut after, mut found, mut failures) = (None::<Vec<u8>>, 0usize, 0u64);
    loop {
        let Some(handles) = handles.upgrade() else { return };
        let keys: StoreResult<Vec<Vec<u8>>> = handles.get().and_then(|ks| {
            let from = after.as_ref().map_or(Bound::Unbounded, |k| Bound::Excluded(k.clone()));
            ks.tokens
                .range::<Vec<u8>, _>((from, Bound::Unbounded))
                .take(chunk)
                .map(|g| g.key().map(|k| k.to_vec()).map_err(unavailable))
                .collect()
        });
        drop(handles);
        match keys {
            Ok(keys) if keys.is_empty() => break,
            Ok(keys) => {
                keys.iter().for_each(|k| tokens.insert(k));
                found += keys.len();
                after = keys.last().cloned();
            }
            Err(e) => {
                // Until it is done, every token is looked up in the store, as before.
                if failures == 0 {
                    tracing::warn!(error = %e, "the scan of stored tokens failed; trying again every 200 ms");
                }
                failures += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    tokens.mark_loaded();
    tracing::info!(tokens = found, seconds = started.elapsed().as_secs_f64(), "stored tokens scanned");
}

/// Runs blocking fjall work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> StoreResult<T> + Send + 'static) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(Failure::caused_by("embedded store read task failed", e)))?
}

#[async_trait]
impl EventLog for FjallStore {
    /// One process per data directory (fjall locks it), and this store is its only writer.
    fn exclusive(&self) -> bool {
        true
    }

    fn stopped(&self) -> Option<String> {
        self.writer.is_stopped().then(|| "the embedded store's writer thread has stopped".to_owned())
    }

    async fn append(&self, event: &Event, deadline: Timestamp, window: Duration) -> StoreResult<Appended> {
        let claim = match self.look_up_token(event, window)? {
            Looked::Taken(stored) => return Appended::judge(event, stored),
            Looked::Free(claim) => Some(claim),
        };
        let event = event.clone();
        self.writer.submit(|reply| Op::Shared(SharedOp::Append { event, deadline, claim, reply })).await
    }

    async fn append_new(&self, event: &Event, deadline: Timestamp) -> StoreResult<Appended> {
        let event = event.clone();
        self.writer.submit(|reply| Op::Shared(SharedOp::Append { event, deadline, claim: None, reply })).await
    }

    async fn find_token(&self, key: &CounterKey, token: &str) -> StoreResult<Option<Stored>> {
        self.read_token(key, token)
    }

    /// One request to the writer for the whole batch: one queue slot, one wake-up, one answer.
    /// Tokens are looked up here first; the ones already taken are answered without the writer.
    async fn append_batch(&self, appends: &[BatchAppend]) -> Vec<StoreResult<Appended>> {
        let mut answers: Vec<Option<StoreResult<Appended>>> = Vec::with_capacity(appends.len());
        let mut batch = Vec::with_capacity(appends.len());
        for a in appends {
            let claim = match a.check {
                IdentityCheck::KnownNew => None,
                IdentityCheck::Claim { window } => match self.look_up_token(&a.event, window) {
                    Ok(Looked::Free(claim)) => Some(claim),
                    Ok(Looked::Taken(stored)) => {
                        answers.push(Some(Appended::judge(&a.event, stored)));
                        continue;
                    }
                    Err(e) => {
                        answers.push(Some(Err(e)));
                        continue;
                    }
                },
            };
            answers.push(None);
            batch.push(group_commit::BatchAppend { event: a.event.clone(), deadline: a.deadline, claim });
        }
        let written = match batch.is_empty() {
            true => Vec::new(),
            false => {
                let request = |reply| Op::Shared(SharedOp::AppendBatch { appends: batch, reply });
                match self.writer.submit(request).await {
                    Ok(results) => results,
                    Err(e) => answers.iter().filter(|a| a.is_none()).map(|_| Err(e.clone())).collect(),
                }
            }
        };
        debug_assert_eq!(written.len(), answers.iter().filter(|a| a.is_none()).count());
        let mut written = written.into_iter();
        answers
            .into_iter()
            .map(|answer| {
                answer.or_else(|| written.next()).unwrap_or_else(|| {
                    Err(StoreError::Unavailable("the writer answered fewer appends than it was sent".into()))
                })
            })
            .collect()
    }

    async fn fold(&self, key: &CounterKey, from: Timestamp, until: Timestamp) -> StoreResult<Fold> {
        if from >= until {
            return Ok(Fold::default());
        }
        // Folded on the calling task, in chunks with a yield between them: most folds are a few
        // events in the memtable, where a hop to a blocking thread would cost more than the
        // scan, and a long one still never holds a runtime thread for long. Chunks may see
        // different snapshots; that is safe because `[from, until)` is closed to new events
        // (for a rollup), and an accurate read may include what arrived meanwhile.
        let end = Bound::Excluded(codec::event_bound(key, until));
        let mut start = Bound::Included(codec::event_bound(key, from));
        let mut fold = Fold::default();
        let ks = self.handles.get()?;
        // Staged events first, then the keyspace: a move commits before it unstages.
        let mut staged = self.staged_between(key, &start, &end);
        loop {
            let mut resume_after = None;
            for (n, guard) in ks.events.range::<Vec<u8>, _>((start.clone(), end.clone())).enumerate() {
                let (k, v) = guard.into_inner().map_err(unavailable)?;
                for (_, earlier) in staged.before(&k) {
                    fold.push(codec::decode_event_value(&earlier)?);
                }
                fold.push(codec::decode_event_value(&v)?);
                if n + 1 == FOLD_CHUNK {
                    resume_after = Some(k.to_vec());
                    break;
                }
            }
            match resume_after {
                Some(k) => {
                    start = Bound::Excluded(k);
                    tokio::task::yield_now().await;
                }
                None => {
                    for (_, later) in staged.rest() {
                        fold.push(codec::decode_event_value(&later)?);
                    }
                    return Ok(fold);
                }
            }
        }
    }

    async fn list_events(
        &self,
        key: &CounterKey,
        from: Timestamp,
        until: Timestamp,
        after: Option<&EventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        if from >= until || limit == 0 {
            return Ok(Vec::new());
        }
        let start = match after {
            Some(c) if c.generation_time >= from => {
                Bound::Excluded(codec::event_key(key, c.generation_time, &c.token))
            }
            _ => Bound::Included(codec::event_bound(key, from)),
        };
        let end = Bound::Excluded(codec::event_bound(key, until));
        let prefix = codec::counter_prefix(key).len();
        let ks = self.handles.get()?;
        // Staged events first, then the keyspace: a move commits before it unstages.
        let mut staged = self.staged_between(key, &start, &end);
        let decode = |k: &[u8], v: &[u8]| {
            let (time, token) = codec::decode_event_key_suffix(&k[prefix..])?;
            tally_store::stored_event(key, time, token, codec::decode_event_value(v)?)
        };
        let mut events = Vec::new();
        for guard in ks.events.range::<Vec<u8>, _>((start, end)) {
            let (k, v) = guard.into_inner().map_err(unavailable)?;
            for (earlier, value) in staged.before(&k) {
                events.push(decode(&earlier, &value)?);
            }
            events.push(decode(&k, &v)?);
            if events.len() >= limit {
                events.truncate(limit);
                return Ok(events);
            }
        }
        for (later, value) in staged.rest().take(limit - events.len()) {
            events.push(decode(&later, &value)?);
        }
        Ok(events)
    }

    async fn delete_events_before(
        &self,
        key: &CounterKey,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<usize> {
        let key = key.clone();
        self.writer
            .submit(|reply| Op::Exclusive(ExclusiveOp::DeleteEventsBefore { key, before, limit, reply }))
            .await
    }
}

impl FjallStore {
    /// The staged events of `key` between the bounds of a scan of the `events` keyspace.
    fn staged_between(&self, key: &CounterKey, start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> Merge {
        let (start, end) = (start.as_ref().map(Vec::as_slice), end.as_ref().map(Vec::as_slice));
        Merge::new(self.staged.range(&codec::counter_prefix(key), start, end))
    }
}

#[async_trait]
impl CounterStore for FjallStore {
    async fn counter_state(&self, key: &CounterKey) -> StoreResult<CounterState> {
        // Two point reads, usually served from the memtable or block cache; not worth a thread hop.
        let state_key = codec::counter_prefix(key);
        // Staged first: a move writes `last_write` before it unstages.
        let staged = self.staged.newest(&state_key);
        let last_write = match self.presence.may_contain(StateKind::LastWrite, &state_key) {
            true => self.handles.get()?.last_write.get(&state_key).map_err(unavailable)?,
            false => None,
        };
        let stored = last_write.map(|v| codec::decode_time_value(&v)).transpose()?;
        Ok(CounterState { checkpoint: self.checkpoint(key).await?, last_write: stored.max(staged) })
    }

    async fn checkpoint(&self, key: &CounterKey) -> StoreResult<Option<Checkpoint>> {
        let state_key = codec::counter_prefix(key);
        if !self.presence.may_contain(StateKind::Checkpoint, &state_key) {
            return Ok(None);
        }
        let stored = self.handles.get()?.checkpoints.get(&state_key).map_err(unavailable)?;
        stored.map(|v| codec::decode_checkpoint_value(&v)).transpose()
    }

    /// fjall's estimate of the `last_write` keyspace's length: one entry per counter.
    fn approximate_counters(&self) -> Option<u64> {
        Some(self.handles.get().ok()?.last_write.approximate_len() as u64)
    }

    async fn put_checkpoint(&self, key: &CounterKey, checkpoint: Checkpoint) -> StoreResult<Checkpoint> {
        let mut answers = self.submit_checkpoints(vec![(key.clone(), checkpoint)]).await;
        answers
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("the writer answered no checkpoint".into())))
    }

    async fn put_checkpoints(
        &self,
        checkpoints: &[(CounterKey, Checkpoint)],
    ) -> Vec<StoreResult<Checkpoint>> {
        if checkpoints.is_empty() {
            return Vec::new();
        }
        self.submit_checkpoints(checkpoints.to_vec()).await
    }

    async fn scan_counters(
        &self,
        namespace: Option<&Namespace>,
        after: Option<&CounterKey>,
        limit: usize,
    ) -> StoreResult<Vec<(CounterKey, CounterState)>> {
        // Counters whose events are all staged have no `last_write` row yet: the first page
        // moves them, so a scan visits every counter with an event acknowledged before it
        // began. Later pages do not (a move per page made a minute's pending scan stall the
        // writer a hundred times); a counter first written during the scan was triggered by
        // that write, and `last_write` below still counts what is staged.
        if after.is_none() {
            self.move_staged().await?;
        }
        let prefix = namespace.map(codec::namespace_prefix).unwrap_or_default();
        let start = match after {
            Some(after) => Bound::Excluded(codec::counter_prefix(after)),
            None => Bound::Included(prefix.clone()),
        };
        let end = codec::prefix_upper_bound(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        let ks = self.handles.get()?;
        let (last_write, checkpoints) = (ks.last_write.clone(), ks.checkpoints.clone());
        let staged = self.staged.clone();
        blocking(move || {
            let mut out = Vec::new();
            for guard in last_write.range::<Vec<u8>, _>((start, end)).take(limit) {
                let (state_key, value) = guard.into_inner().map_err(unavailable)?;
                let key = codec::decode_counter_prefix(&state_key)?;
                let checkpoint = checkpoints.get(&state_key).map_err(unavailable)?;
                let state = CounterState {
                    checkpoint: checkpoint.map(|v| codec::decode_checkpoint_value(&v)).transpose()?,
                    last_write: Some(codec::decode_time_value(&value)?).max(staged.newest(&state_key)),
                };
                out.push((key, state));
            }
            Ok(out)
        })
        .await
    }
}

fn encode_config(config: &NamespaceConfig) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(config)
        .map_err(|e| StoreError::Corrupt(Failure::caused_by("cannot encode namespace config", e)))
}

fn decode_config(name: &str, bytes: &[u8]) -> StoreResult<NamespaceConfig> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Corrupt(Failure::caused_by(
            format!("stored config of namespace {name:?} does not parse"),
            e,
        ))
    })
}

#[async_trait]
impl NamespaceStore for FjallStore {
    async fn create_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()> {
        let (name, json) = (name.clone(), encode_config(config)?);
        self.writer.submit(|reply| Op::Shared(SharedOp::CreateNamespace { name, json, reply })).await
    }

    async fn update_namespace(&self, name: &Namespace, config: &NamespaceConfig) -> StoreResult<()> {
        let (name, json) = (name.clone(), encode_config(config)?);
        self.writer.submit(|reply| Op::Shared(SharedOp::UpdateNamespace { name, json, reply })).await
    }

    async fn get_namespace(&self, name: &Namespace) -> StoreResult<Option<NamespaceConfig>> {
        let stored = self.handles.get()?.namespaces.get(name.as_str()).map_err(unavailable)?;
        stored.map(|v| decode_config(name.as_str(), &v)).transpose()
    }

    async fn list_namespaces(&self) -> StoreResult<Vec<(Namespace, NamespaceConfig)>> {
        let namespaces = self.handles.get()?.namespaces.clone();
        blocking(move || {
            let mut out = Vec::new();
            for guard in namespaces.iter() {
                let (k, v) = guard.into_inner().map_err(unavailable)?;
                let name =
                    std::str::from_utf8(&k).ok().and_then(|s| Namespace::new(s).ok()).ok_or_else(|| {
                        StoreError::Corrupt(format!("stored namespace name {k:02x?} is invalid").into())
                    })?;
                out.push((name.clone(), decode_config(name.as_str(), &v)?));
            }
            Ok(out)
        })
        .await
    }

    async fn delete_namespace(&self, name: &Namespace) -> StoreResult<bool> {
        let name = name.clone();
        self.writer.submit(|reply| Op::Exclusive(ExclusiveOp::DeleteNamespace { name, reply })).await
    }
}

#[cfg(test)]
mod tests {
    use tally_core::{EventKind, IdempotencyToken, SystemClock};

    use super::*;

    const WINDOW: Duration = Duration::from_secs(600);

    fn add(token: &str, micros: i64) -> Event {
        Event {
            key: CounterKey::parse_joined("race:c").expect("key"),
            token: IdempotencyToken::new(token, Timestamp::from_micros(micros)).expect("token"),
            kind: EventKind::Add(1),
        }
    }

    /// Regression: a move went 512 events per round of requests however many a round staged,
    /// so under a load of larger commits the events gathering during one move outgrew it, and
    /// the next move more, without bound. Here every commit stages 40 events and a slice is 1:
    /// what is staged must stay near `stage_events` plus what a move takes in.
    #[tokio::test]
    async fn regression_staged_events_stay_bounded_when_commits_are_larger_than_a_slice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = FjallOptions { stage_events: 100, move_slice: 1, ..FjallOptions::default() };
        let store = FjallStore::open(dir.path(), Arc::new(SystemClock), options).expect("open");
        let now = SystemClock.now().as_micros();
        let mut most = 0;
        for round in 0..200 {
            let appends: Vec<BatchAppend> = (0..40)
                .map(|i| BatchAppend {
                    event: add(&format!("r{round}-{i}"), now),
                    deadline: Timestamp::MAX,
                    check: IdentityCheck::KnownNew,
                })
                .collect();
            assert!(store.append_batch(&appends).await.iter().all(Result::is_ok));
            most = most.max(store.staged.len());
        }
        assert!(most <= 300, "{most} events were staged at once");
        let fold = store.fold(&add("x", now).key, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
        assert_eq!(fold.events, 8000, "every event once, staged or moved");
    }

    /// The scan at open finds every token stored before it, across the bounds of its steps (7
    /// keys each here), the store's filter also every token still staged in the journal, and
    /// a store whose filter is loaded still answers every retry of a token taken before the
    /// restart as the duplicate it is.
    #[tokio::test]
    async fn tokens_taken_before_a_restart_are_still_taken_once_the_token_scan_is_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemClock.now().as_micros();
        let open = || FjallStore::open(dir.path(), Arc::new(SystemClock), FjallOptions::default());
        let names: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let (moved, staged) = names.split_at(60);
        {
            let store = open().expect("open");
            for (i, name) in names.iter().enumerate() {
                let appended = store.append(&add(name, now), Timestamp::MAX, WINDOW).await.expect("append");
                assert_eq!(appended, Appended::New);
                if i + 1 == moved.len() {
                    store.move_staged().await.expect("move");
                }
            }
        }
        let store = open().expect("reopen");
        let scanned = TokenPresence::with_capacity(0);
        load_token_presence(&Arc::downgrade(&store.handles), &scanned, 7);
        assert!(scanned.is_loaded());
        let key = add("x", now).key;
        for name in moved {
            assert!(scanned.may_be_taken(&codec::token_key(&key, name)), "{name} was not scanned");
        }
        load_token_presence(&Arc::downgrade(&store.handles), &store.tokens, 7);
        for name in staged {
            assert!(store.tokens.may_be_taken(&codec::token_key(&key, name)), "{name} is not in the filter");
        }
        for name in &names {
            let retry = add(name, now + 1);
            let appended = store.append(&retry, Timestamp::MAX, WINDOW).await.expect("retry");
            assert!(matches!(appended, Appended::Duplicate { .. }), "{name}: {appended:?}");
        }
        let fresh = store.append(&add("fresh", now), Timestamp::MAX, WINDOW).await.expect("fresh");
        assert_eq!(fresh, Appended::New);
    }

    /// A writer behind its load sheds the appends that waited past `max_queue_wait`, unwritten,
    /// and keeps taking checkpoints (rollups stay live). With a wait of 1 ns every append has
    /// waited too long by the time the writer takes it.
    #[tokio::test]
    async fn appends_that_waited_past_max_queue_wait_are_shed_unwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = FjallOptions { max_queue_wait: Duration::from_nanos(1), ..FjallOptions::default() };
        let store = FjallStore::open(dir.path(), Arc::new(SystemClock), options).expect("open");
        let event = add("shed", SystemClock.now().as_micros());
        let shed = store.append(&event, Timestamp::MAX, WINDOW).await.expect_err("shed");
        assert!(matches!(shed, StoreError::Overloaded { .. }), "{shed:?}");
        let shed = store.append_new(&event, Timestamp::MAX).await.expect_err("shed");
        assert!(matches!(shed, StoreError::Overloaded { .. }), "{shed:?}");
        let fold = store.fold(&event.key, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
        assert_eq!(fold.events, 0, "nothing was written");
        let checkpoint = Checkpoint { count: 0, until: Timestamp::from_micros(1) };
        assert_eq!(store.put_checkpoint(&event.key, checkpoint).await.expect("not shed"), checkpoint);
    }

    /// The interleaving the conformance suite's races can only hope to hit: a caller finds
    /// the token free, another append takes it, then the first caller's append reaches the
    /// writer. The writer must know from its memory of recent commits that the token is taken.
    #[tokio::test]
    async fn a_token_taken_between_a_callers_look_up_and_its_commit_counts_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            FjallStore::open(dir.path(), Arc::new(SystemClock), FjallOptions::default()).expect("open");
        let now = SystemClock.now().as_micros();
        let (first, retry) = (add("t-1", now), add("t-1", now + 5));
        let Looked::Free(stale) = store.look_up_token(&retry, WINDOW).expect("look up") else {
            panic!("nothing took the token yet");
        };
        assert_eq!(store.append(&first, Timestamp::MAX, WINDOW).await.expect("first"), Appended::New);
        let answer = store
            .writer
            .submit(|reply| {
                let (event, deadline, claim) = (retry.clone(), Timestamp::MAX, Some(stale));
                Op::Shared(SharedOp::Append { event, deadline, claim, reply })
            })
            .await
            .expect("stale append");
        let generation_time = first.token.generation_time();
        assert_eq!(answer, Appended::Duplicate { generation_time });
        let fold = store.fold(&first.key, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
        assert_eq!((fold.events, fold.sum), (1, 1));
    }
}
