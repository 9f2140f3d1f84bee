//! The local tail: the events this engine appended that no checkpoint covers yet, in memory.
//!
//! On a store that only this process writes ([`tally_store::EventLog::exclusive`]: the
//! embedded store locks its directory), every event is appended through this engine. Keeping
//! each counter's unfolded events here makes the store's work per add one write and nothing
//! else:
//! - a rollup folds memory into the checkpoint instead of scanning the event table;
//! - a read is the checkpoint plus a running total, O(1) whatever the number of events, and
//!   includes every acknowledged add at once (read-your-writes on one instance, every type);
//! - a retry is recognised here, so the store appends without looking the identity up;
//! - the overflow check sees the exact count plus every add still in flight.
//!
//! Memory is authoritative for a counter only while it is **exact**. A counter is *uncertain*
//! up to a time `t` when the store may hold events of it, generated at or before `t`, that
//! memory lacks: at open (events of an earlier process, found by the scan in
//! [`Tails::open_scan`]) and after an append whose outcome is unknown (the store failed under
//! it). An uncertain counter is read, checked and folded
//! through the store as before, and becomes exact again once a rollup moves its checkpoint past
//! `t`. Nothing here is ever the only copy of an acknowledged event: every event is durable in
//! the store before it counts in memory.
//!
//! Events are kept by their whole token (`generation_time` and string, shared with the request
//! that brought it), so a clear is ordered against adds of its own microsecond as the store
//! orders them. A client's token is also indexed by its string alone: a retry that carries
//! another generation time (or none) is recognised too. Memory answers retries only of the
//! events it holds; the store keeps every client token for its namespace's idempotency window
//! and answers the others.

use foldhash::HashMap;
use foldhash::fast::RandomState;
use hashbrown::hash_map::EntryRef;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tally_core::{Checkpoint, CounterKey, Event, EventKind, Fold, IdempotencyToken, Namespace, Timestamp};
use tally_store::Stored;

use crate::rollup::namespace_hash;
use crate::rollup::queue::Pushed;

/// Lock stripes over the counters; more than the cores that take them.
const SHARDS: usize = 64;
/// Checkpoints of counters whose tails emptied, kept per stripe so that a counter written again
/// soon needs no store read: 64 × 14,336 = 917,504 counters, in tables of 16,384 entries of
/// 40 bytes that never grow (about 43 MB at most).
const RETIRED_PER_SHARD: usize = 14_336;

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: EventKind,
    /// `false` while the store append is in flight.
    committed: bool,
}

/// One event memory holds.
#[derive(Debug)]
struct Held {
    token: IdempotencyToken,
    entry: Entry,
}

/// A counter's events in token order (`generation_time`, then the token string): the order
/// the store folds them in. Appends arrive nearly in time order, so an insert is nearly
/// always a push at the back, a fold reads a prefix, and a checkpoint drops one. Kept in one
/// buffer rather than a hash map: with many counters every look-up here misses the cache,
/// and one buffer is one miss.
#[derive(Debug, Default)]
struct Events(VecDeque<Held>);

impl Events {
    fn position(&self, token: &IdempotencyToken) -> Result<usize, usize> {
        // The event looked for is nearly always the newest (its append finishing) or newer
        // than all (a new event, checked for a retry): one comparison, on the one cache line
        // an insert touched last, instead of a search.
        match self.0.back().map(|last| last.token.cmp(token)) {
            None => Err(0),
            Some(std::cmp::Ordering::Less) => Err(self.0.len()),
            Some(std::cmp::Ordering::Equal) => Ok(self.0.len() - 1),
            Some(std::cmp::Ordering::Greater) => self.0.binary_search_by(|held| held.token.cmp(token)),
        }
    }

    fn get(&self, token: &IdempotencyToken) -> Option<&Entry> {
        self.position(token).ok().map(|i| &self.0[i].entry)
    }

    fn get_mut(&mut self, token: &IdempotencyToken) -> Option<&mut Entry> {
        self.position(token).ok().map(|i| &mut self.0[i].entry)
    }

    /// Adds an event memory does not hold yet.
    fn insert(&mut self, token: IdempotencyToken, entry: Entry) {
        match self.position(&token) {
            Ok(_) => debug_assert!(false, "an event is begun once: its retry is found by `held` first"),
            Err(i) if i == self.0.len() => self.0.push_back(Held { token, entry }),
            Err(i) => self.0.insert(i, Held { token, entry }),
        }
    }

    fn remove(&mut self, token: &IdempotencyToken) -> bool {
        let Ok(i) = self.position(token) else { return false };
        self.0.remove(i);
        true
    }

    /// The events generated before `until`, in token order.
    fn before(&self, until: Timestamp) -> impl Iterator<Item = &Held> {
        self.0.iter().take_while(move |held| held.token.generation_time() < until)
    }

    /// Drops the events generated before `until`; returns how many.
    fn drop_before(&mut self, until: Timestamp) -> usize {
        let n = self.0.partition_point(|held| held.token.generation_time() < until);
        self.0.drain(..n);
        n
    }

    /// The newest generation time held.
    fn newest(&self) -> Option<Timestamp> {
        self.0.back().map(|held| held.token.generation_time())
    }

    /// The oldest generation time of an append still in flight.
    fn oldest_in_flight(&self) -> Option<Timestamp> {
        self.0.iter().find(|held| !held.entry.committed).map(|held| held.token.generation_time())
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Hashes a client's token string for [`ClientTokens`], seeded once per process (clients
/// choose the strings).
static TOKEN_HASHER: std::sync::LazyLock<RandomState> = std::sync::LazyLock::new(RandomState::default);

/// A client's token among a counter's events, until when it is taken, and the hash of its
/// string.
#[derive(Debug)]
struct Taken {
    hash: u64,
    token: IdempotencyToken,
    until: Timestamp,
}

impl Taken {
    /// Whether this is a taking of the string `token`, whose hash is `hash`.
    fn is(&self, hash: u64, token: &str) -> bool {
        self.hash == hash && self.token.token() == token
    }
}

/// The client tokens among a counter's events, by their string alone (the newest taking of
/// each). Each entry keeps its string's hash: a table grows and is rebuilt as a counter's
/// events come and are folded, and rehashing the strings (one cache miss each) took 6 % of
/// the request threads' time under random-key batches.
#[derive(Debug, Default)]
struct ClientTokens(hashbrown::HashTable<Taken>);

impl ClientTokens {
    fn hash(token: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&*TOKEN_HASHER, token)
    }

    /// The taking of the string `token`.
    fn get(&self, token: &str) -> Option<&Taken> {
        let hash = Self::hash(token);
        self.0.find(hash, |t| t.is(hash, token))
    }

    /// Takes `token`'s string until `until`, replacing an earlier taking of it.
    fn take(&mut self, token: IdempotencyToken, until: Timestamp) {
        let hash = Self::hash(token.token());
        let taken = Taken { hash, token, until };
        match self.0.entry(hash, |t| t.is(hash, taken.token.token()), |t| t.hash) {
            hashbrown::hash_table::Entry::Occupied(mut earlier) => *earlier.get_mut() = taken,
            hashbrown::hash_table::Entry::Vacant(free) => {
                free.insert(taken);
            }
        }
    }

    /// Forgets the taking by exactly `token` (not one of its string at another time).
    fn forget(&mut self, token: &IdempotencyToken) {
        let hash = Self::hash(token.token());
        if let Ok(taken) = self.0.find_entry(hash, |t| t.hash == hash && t.token == *token) {
            taken.remove();
        }
    }

    /// Forgets the takings by events generated before `until`.
    fn forget_before(&mut self, until: Timestamp) {
        self.0.retain(|t| t.token.generation_time() >= until);
    }
}

/// One counter's unfolded events.
#[derive(Debug, Default)]
struct CounterTail {
    /// The newest stored checkpoint this engine knows; `None` until a read or rollup loads it.
    /// It is a rollup's base, so it only ever comes from the store (never from a cache, whose
    /// stale entry would make a durable count without the events memory already dropped).
    checkpoint: Option<Checkpoint>,
    /// Every event at or after the checkpoint that this engine appended (or is appending).
    events: Events,
    /// Each client token among `events` (by its string alone), and until when it is taken
    /// (server-made tokens are never sent again, so they are not indexed).
    client_tokens: ClientTokens,
    /// The committed clears among `events`.
    clears: Vec<IdempotencyToken>,
    /// The committed events folded in order: with the checkpoint, the exact count.
    total: Fold,
    /// Appends in flight, and the sums of their positive and negative deltas.
    pending: usize,
    pending_up: i128,
    pending_down: i128,
    /// Memory lacks events generated at or before this time (see the module docs).
    uncertain_until: Option<Timestamp>,
    /// The due time of a rollup trigger pushed through [`Tails::ask_rollup`] that no rollup has
    /// planned since: the queue holds the counter, due at or before it.
    rollup_due: Option<Timestamp>,
}

impl CounterTail {
    fn is_exact(&self) -> bool {
        self.uncertain_until.is_none()
    }

    fn is_idle(&self) -> bool {
        self.events.is_empty() && self.pending == 0 && self.uncertain_until.is_none()
    }

    fn make_uncertain(&mut self, until: Timestamp) {
        self.uncertain_until = Some(self.uncertain_until.map_or(until, |u| u.max(until)));
    }

    /// Folds the committed events generated before `until`, in `(generation_time, token)`
    /// order: the adds after the last clear.
    fn fold_before(&self, until: Timestamp) -> Fold {
        let last_clear = self.clears.iter().filter(|c| c.generation_time() < until).max();
        let mut fold = Fold { cleared: last_clear.is_some(), ..Fold::default() };
        for Held { token, entry } in self.events.before(until) {
            if !entry.committed {
                continue;
            }
            fold.events += 1;
            if let EventKind::Add(delta) = entry.kind
                && last_clear.is_none_or(|c| token > c)
            {
                fold.sum += i128::from(delta);
            }
        }
        fold
    }

    fn commit(&mut self, token: &IdempotencyToken, kind: EventKind) {
        let Some(entry) = self.events.get_mut(token) else {
            // A store rollup folded it while the append was being answered.
            return;
        };
        entry.committed = true;
        match kind {
            EventKind::Add(delta) => {
                if self.clears.iter().max().is_none_or(|c| token > c) {
                    self.total.sum += i128::from(delta);
                }
                self.total.events += 1;
            }
            EventKind::Clear => {
                self.clears.push(token.clone());
                self.total = self.fold_before(Timestamp::MAX);
            }
        }
    }

    fn release_pending(&mut self, kind: EventKind) {
        debug_assert!(self.pending > 0, "every finished append was begun");
        self.pending -= 1;
        if let EventKind::Add(delta) = kind {
            if delta > 0 {
                self.pending_up -= i128::from(delta);
            } else {
                self.pending_down -= i128::from(delta);
            }
        }
    }

    /// Drops what `checkpoint` covers; returns how many events it dropped.
    fn advance(&mut self, checkpoint: Checkpoint) -> usize {
        if self.checkpoint.is_some_and(|cp| cp.until >= checkpoint.until) {
            return 0;
        }
        self.checkpoint = Some(checkpoint);
        let until = checkpoint.until;
        // An append still in flight below `until` is in the checkpoint already or will be
        // refused: the store makes an event visible only before its deadline, which is at
        // least half the clock skew before any window end that reaches it. Dropping it here
        // keeps `commit` from counting it twice.
        let dropped = self.events.drop_before(until);
        self.client_tokens.forget_before(until);
        self.clears.retain(|t| t.generation_time() >= until);
        self.total = self.fold_before(Timestamp::MAX);
        if self.uncertain_until.is_some_and(|u| u < until) {
            self.uncertain_until = None;
        }
        dropped
    }

    /// The event memory holds under `event`'s token: the same token and time, or the same
    /// client token at another time while it is taken (`now`).
    fn held(&self, event: &Event, now: Timestamp) -> Option<(Timestamp, Entry)> {
        if let Some(entry) = self.events.get(&event.token) {
            return Some((event.token.generation_time(), *entry));
        }
        let Taken { token, until, .. } = self.client_tokens.get(event.token.token())?;
        if *until <= now {
            return None;
        }
        self.events.get(token).map(|entry| (token.generation_time(), *entry))
    }

    /// Forgets an event that was not written.
    fn drop_event(&mut self, token: &IdempotencyToken) -> bool {
        self.client_tokens.forget(token);
        self.events.remove(token)
    }

    /// The counter's count as memory knows it (see [`Tails::read`]).
    fn read(&self) -> Read {
        match self.checkpoint {
            _ if !self.is_exact() => Read::Uncertain,
            Some(cp) => Read::Exact(self.total.apply_to(cp.count)),
            None => Read::NeedCheckpoint,
        }
    }
}

/// A counter key as the retired checkpoints know it: a 128-bit hash of the key, as two words
/// so that an entry is 8-byte aligned, instead of the key's two strings. Two keys could only
/// be mistaken for one another through a collision of that hash (among a million keys, odds
/// of about one in 10^26).
type RetiredKey = (u64, u64);

/// The key's hash, seeded with `namespace`, its namespace's [`namespace_hash`].
fn retired_key(key: &CounterKey, namespace: u64) -> RetiredKey {
    let h = xxhash_rust::xxh3::xxh3_128_with_seed(key.counter.as_str().as_bytes(), namespace);
    ((h >> 64) as u64, h as u64)
}

fn retired_key_of(key: &CounterKey) -> RetiredKey {
    retired_key(key, namespace_hash(&key.namespace))
}

/// A retired counter's stored checkpoint, with its namespace's hash (so that a deleted
/// namespace's can be forgotten).
#[derive(Clone, Copy)]
struct Retired {
    namespace: u64,
    checkpoint: Checkpoint,
}

/// One lock stripe: the counters with something in memory, and the stored checkpoints of
/// counters whose tails emptied lately.
#[derive(Default)]
struct Shard {
    tails: hashbrown::HashMap<CounterKey, CounterTail>,
    /// Each the checkpoint this engine stored last for the counter: only this process writes
    /// checkpoints, so it is the store's (bounded: starts over empty when full).
    retired: HashMap<RetiredKey, Retired>,
    /// One copy of each namespace name among `tails`' keys. A key's strings are read to confirm
    /// every look-up; with a copy per key (the request's that made the tail), the namespace's
    /// was one more cache miss per look-up among many counters, and this one stays cached.
    namespaces: hashbrown::HashSet<Namespace, RandomState>,
}

impl Shard {
    /// The counter's tail, made if missing (with its retired checkpoint, if any).
    fn tail(&mut self, key: &CounterKey) -> &mut CounterTail {
        match self.tails.entry_ref(key) {
            EntryRef::Occupied(occupied) => occupied.into_mut(),
            EntryRef::Vacant(vacant) => {
                let mut tail = CounterTail::default();
                if let Some(retired) = self.retired.remove(&retired_key_of(key)) {
                    let dropped = tail.advance(retired.checkpoint);
                    debug_assert_eq!(dropped, 0, "a new tail holds no events");
                }
                let namespace = shared_namespace(&mut self.namespaces, &key.namespace);
                vacant.insert_with_key(CounterKey::new(namespace, key.counter.clone()), tail)
            }
        }
    }

    /// Drops an idle tail, keeping its checkpoint.
    fn retire(&mut self, key: &CounterKey) {
        let Some(tail) = self.tails.remove(key) else { return };
        debug_assert!(tail.is_idle(), "only an empty tail retires");
        if let Some(checkpoint) = tail.checkpoint {
            if self.retired.len() >= RETIRED_PER_SHARD {
                self.retired.clear();
            }
            let namespace = namespace_hash(&key.namespace);
            self.retired.insert(retired_key(key, namespace), Retired { namespace, checkpoint });
        }
    }

    /// The counter's count as memory knows it (see [`Tails::read`]).
    fn read(&self, key: &CounterKey) -> Read {
        match self.tails.get(key) {
            None => self
                .retired
                .get(&retired_key_of(key))
                .map_or(Read::Folded, |r| Read::Exact(r.checkpoint.count)),
            Some(tail) => tail.read(),
        }
    }

    /// Forgets a deleted namespace's counters; returns how many events that dropped.
    fn forget(&mut self, namespace: &Namespace) -> usize {
        let mut dropped = 0;
        self.tails.retain(|k, tail| {
            let keep = &k.namespace != namespace;
            if !keep {
                dropped += tail.events.len();
            }
            keep
        });
        // A namespace with the same 64-bit hash loses its retired checkpoints too: each costs
        // one store read later, never a wrong count.
        let gone = namespace_hash(namespace);
        self.retired.retain(|_, r| r.namespace != gone);
        self.namespaces.remove(namespace);
        dropped
    }
}

/// The copy of `namespace` in `shared`, added if missing.
fn shared_namespace(
    shared: &mut hashbrown::HashSet<Namespace, RandomState>,
    namespace: &Namespace,
) -> Namespace {
    shared.get_or_insert_with(namespace, Namespace::clone).clone()
}

/// Who made an event's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The server, for this one call: nobody can hold it, nobody will send it again.
    Server,
    /// A client: taken from `now` for `window` (the namespace's idempotency window).
    Client { now: Timestamp, window: std::time::Duration },
}

/// How an append should go to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Memory knows the identity is new: the store may skip looking for it.
    Skip,
    /// Memory cannot tell: the store looks the identity up.
    Store,
}

/// What [`Tails::begin`] decided.
#[derive(Debug)]
pub(crate) enum Begin {
    /// The event is registered as in flight; append it, then call [`Tails::finish`].
    Append(Lookup),
    /// Memory is full (`max_held`): append it with a lookup and do not call `finish`; the
    /// counter is uncertain up to this event, so it is read and folded through the store.
    Untracked,
    /// The token is stored already, with this mutation: nothing to append.
    Known(Stored),
    /// The same identity is being appended by another request right now.
    InFlight,
    /// The count is needed (for the overflow check) and memory lacks the checkpoint.
    NeedCheckpoint,
    /// Memory cannot check this add against the count (the counter is uncertain, or memory
    /// is off): check it against the store's, then begin again with [`StoreCheck::Done`].
    CheckInStore,
    /// The add would take the count (with every add in flight) out of range.
    Overflow { count: i64 },
}

/// Whether an add's overflow check against the store's count, for a counter whose count
/// memory does not hold, is still to be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreCheck {
    /// Not yet: [`Tails::begin`] answers [`Begin::CheckInStore`] where memory cannot check.
    Needed,
    /// Done by the caller (or not wanted): memory checks what it can and nothing more.
    Done,
}

/// What happened to an append begun with [`Tails::begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// The store appended it.
    Written,
    /// The store did not write it (a duplicate, a conflict, a passed deadline).
    NotWritten,
    /// The store failed; it may or may not hold the event.
    Unknown,
}

/// What memory says about a counter's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// The exact count: every acknowledged event is in it.
    Exact(i64),
    /// Memory holds nothing unfolded for the counter: its checkpoint is its count.
    Folded,
    /// Memory has events but not the checkpoint; load it and call [`Tails::set_checkpoint`].
    NeedCheckpoint,
    /// Memory may lack events: read through the store.
    Uncertain,
}

/// What a rollup may fold from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Fold `fold` onto `base`, giving a checkpoint at `until`.
    Fold { base: Checkpoint, fold: Fold, until: Timestamp },
    /// Memory has events but not the checkpoint; read it from the store and call
    /// [`Tails::set_checkpoint`].
    NeedCheckpoint,
    /// Fold through the store.
    Uncertain,
    /// Nothing unfolded in memory.
    Nothing,
}

/// The local tails of every counter; see the module docs. Disabled (every answer says
/// "ask the store") unless the store is exclusive to this process.
pub(crate) struct Tails {
    enabled: bool,
    shards: Box<[Mutex<Shard>]>,
    /// The largest magnitude of any checkpoint's count this store holds (seen at open or
    /// stored since): it bounds the count of a counter whose checkpoint memory has not loaded.
    largest_count: AtomicU64,
    /// Events held in memory, over all counters, and the most it may hold.
    held: AtomicUsize,
    max_held: usize,
}

/// Whether the engine keeps local tails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TailMode {
    /// The store is this process's alone: memory keeps unfolded events, at most `max_held` of
    /// them; past it, new events are left to the store and their counters served through it
    /// until folded.
    Local { max_held: usize },
    /// Other processes write the store too: every answer says "ask the store".
    Off,
}

impl Tails {
    pub(crate) fn new(mode: TailMode) -> Self {
        let (enabled, max_held) = match mode {
            TailMode::Local { max_held } => (true, max_held),
            TailMode::Off => (false, 0),
        };
        Self {
            enabled,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            largest_count: AtomicU64::new(0),
            held: AtomicUsize::new(0),
            max_held,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    fn shard(&self, key: &CounterKey) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[(crate::rollup::key_hash(key) % SHARDS as u64) as usize];
        // A panic while holding a stripe leaves plain data behind, still consistent enough to
        // be read: every mutation below completes before it can panic.
        shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note_count(&self, checkpoint: Checkpoint) {
        self.largest_count.fetch_max(checkpoint.count.unsigned_abs(), Ordering::Relaxed);
    }

    /// Takes in what the store held at open: a counter with unfolded events (`last_write` at
    /// or after its checkpoint) is uncertain up to its `last_write`; every checkpoint's count
    /// bounds the counts of counters whose checkpoint memory has not loaded.
    pub(crate) fn open_scan(&self, key: &CounterKey, state: &tally_store::CounterState) {
        if !self.enabled {
            return;
        }
        if let Some(cp) = state.checkpoint {
            self.note_count(cp);
        }
        if let (true, Some(last)) = (state.has_unfolded_events(), state.last_write) {
            self.shard(key).tail(key).make_uncertain(last);
        }
    }

    /// Registers `event` as in flight, after the overflow check for an add: memory's own where
    /// it holds the count, else the store's, which `store_check` says whether the caller did.
    pub(crate) fn begin(&self, event: &Event, origin: Origin, store_check: StoreCheck) -> Begin {
        let check_in_store = store_check == StoreCheck::Needed && matches!(event.kind, EventKind::Add(_));
        if !self.enabled {
            return match check_in_store {
                true => Begin::CheckInStore,
                false => Begin::Append(Lookup::Store),
            };
        }
        let mut shard = self.shard(&event.key);
        let begin = self.decide(shard.tail(&event.key), event, origin, check_in_store);
        // A refused or deferred add leaves nothing behind (its checkpoint is kept as retired).
        if !matches!(begin, Begin::Append(_)) && shard.tails.get(&event.key).is_some_and(CounterTail::is_idle)
        {
            shard.retire(&event.key);
        }
        begin
    }

    /// [`Tails::begin`] on the counter's tail.
    fn decide(&self, tail: &mut CounterTail, event: &Event, origin: Origin, check_in_store: bool) -> Begin {
        let now = match origin {
            Origin::Client { now, .. } => now,
            Origin::Server => Timestamp::MIN,
        };
        // A token the server made for this call is held nowhere: no look-up.
        let held = match origin {
            Origin::Server => None,
            Origin::Client { .. } => tail.held(event, now),
        };
        if let Some((generation_time, entry)) = held {
            return match entry.committed {
                true => Begin::Known(Stored { generation_time, kind: entry.kind }),
                false => Begin::InFlight,
            };
        }
        let exact = tail.is_exact();
        if !exact && check_in_store {
            return Begin::CheckInStore;
        }
        if exact && let EventKind::Add(delta) = event.kind {
            let reach = if delta > 0 { tail.pending_up } else { tail.pending_down };
            match tail.checkpoint {
                Some(cp) => {
                    let count = tail.total.apply_to(cp.count);
                    if i64::try_from(i128::from(count) + reach + i128::from(delta)).is_err() {
                        return Begin::Overflow { count };
                    }
                }
                // Without the checkpoint, the largest count any checkpoint holds bounds it: an
                // add that stays in range from there needs no read.
                None => {
                    let largest = i128::from(self.largest_count.load(Ordering::Relaxed));
                    let bound = largest + tail.total.sum.abs() + reach.abs() + i128::from(delta).abs();
                    if bound > i128::from(i64::MAX) {
                        return Begin::NeedCheckpoint;
                    }
                }
            }
        }
        if self.held.load(Ordering::Relaxed) >= self.max_held {
            // Memory is full: the store keeps this event alone, and the counter is served
            // through the store until a rollup folds past it.
            tail.make_uncertain(event.token.generation_time());
            return Begin::Untracked;
        }
        // A client's token may be held by an event memory dropped (folded) long ago, at any
        // time within the window: only the store can tell.
        let known_new = origin == Origin::Server;
        if let Origin::Client { now, window } = origin {
            tail.client_tokens.take(event.token.clone(), now.saturating_add(window));
        }
        tail.events.insert(event.token.clone(), Entry { kind: event.kind, committed: false });
        self.held.fetch_add(1, Ordering::Relaxed);
        tail.pending += 1;
        if let EventKind::Add(delta) = event.kind {
            if delta > 0 {
                tail.pending_up += i128::from(delta);
            } else {
                tail.pending_down += i128::from(delta);
            }
        }
        Begin::Append(if known_new { Lookup::Skip } else { Lookup::Store })
    }

    /// The mutation memory holds under `event`'s token, if committed and taken at `now`.
    pub(crate) fn find(&self, event: &Event, now: Timestamp) -> Option<Stored> {
        if !self.enabled {
            return None;
        }
        let shard = self.shard(&event.key);
        let (generation_time, entry) = shard.tails.get(&event.key)?.held(event, now)?;
        entry.committed.then_some(Stored { generation_time, kind: entry.kind })
    }

    /// Records what the store did with an event begun with [`Tails::begin`], and answers what
    /// [`Tails::read`] would right after: an add's answer needs no second look-up.
    pub(crate) fn finish(&self, event: &Event, finished: Finished) -> Read {
        if !self.enabled {
            return Read::Uncertain;
        }
        let mut shard = self.shard(&event.key);
        let Some(tail) = shard.tails.get_mut(&event.key) else {
            return shard.read(&event.key);
        };
        tail.release_pending(event.kind);
        match finished {
            Finished::Written => tail.commit(&event.token, event.kind),
            Finished::NotWritten => {
                if tail.drop_event(&event.token) {
                    self.held.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Finished::Unknown => {
                if tail.drop_event(&event.token) {
                    self.held.fetch_sub(1, Ordering::Relaxed);
                }
                tail.make_uncertain(event.token.generation_time());
            }
        }
        if !tail.is_idle() {
            return tail.read();
        }
        shard.retire(&event.key);
        shard.read(&event.key)
    }

    /// The counter's count as memory knows it.
    pub(crate) fn read(&self, key: &CounterKey) -> Read {
        if !self.enabled {
            return Read::Uncertain;
        }
        self.shard(key).read(key)
    }

    /// Gives memory the stored checkpoint it lacked.
    pub(crate) fn set_checkpoint(&self, key: &CounterKey, checkpoint: Checkpoint) {
        if !self.enabled {
            return;
        }
        self.note_count(checkpoint);
        // The checkpoint may be newer than memory's events (a rollup through the store that has
        // not called `folded` yet): advancing drops what it covers.
        let dropped = self.shard(key).tail(key).advance(checkpoint);
        self.held.fetch_sub(dropped, Ordering::Relaxed);
    }

    /// What a rollup whose window ends at `window_end` may fold from memory. The window
    /// stops before any append still in flight.
    pub(crate) fn plan(&self, key: &CounterKey, window_end: Timestamp) -> Plan {
        if !self.enabled {
            return Plan::Uncertain;
        }
        let mut shard = self.shard(key);
        let Some(tail) = shard.tails.get_mut(key) else {
            return Plan::Nothing;
        };
        // The counter has left the queue: the next add asks again (what this rollup leaves
        // unfolded, it queues itself).
        tail.rollup_due = None;
        if !tail.is_exact() {
            return Plan::Uncertain;
        }
        let Some(base) = tail.checkpoint else {
            return Plan::NeedCheckpoint;
        };
        let until = tail.events.oldest_in_flight().map_or(window_end, |t| t.min(window_end));
        if until <= base.until {
            return Plan::Fold { base, fold: Fold::default(), until: base.until };
        }
        let fold = tail.fold_before(until);
        Plan::Fold { base, fold, until }
    }

    /// Asks for a rollup of `key` at `due` by calling `push`, unless a trigger this asked for
    /// at or before `due` is still queued: every add asks, and a counter's later adds would
    /// only merge into its queued trigger, so the queue's lock and ordered set are visited
    /// once per rollup of the counter instead of once per add. `push` runs under the
    /// counter's stripe lock (the queue takes no stripe lock, so the order is fixed).
    pub(crate) fn ask_rollup(&self, key: &CounterKey, due: Timestamp, push: impl FnOnce() -> Pushed) {
        let mut shard = self.enabled.then(|| self.shard(key));
        let Some(tail) = shard.as_mut().and_then(|shard| shard.tails.get_mut(key)) else {
            // Memory is off, or holds nothing of the counter: nothing remembers the trigger.
            push();
            return;
        };
        if tail.rollup_due.is_some_and(|queued| queued <= due) {
            return;
        }
        match push() {
            Pushed::Queued { .. } | Pushed::Coalesced => tail.rollup_due = Some(due),
            // The queue is full: the next add asks again (and the pending scan finds it).
            Pushed::Dropped => {}
        }
    }

    /// Takes in a checkpoint the store now holds: memory drops what it covers. Returns the
    /// newest generation time memory still holds for the counter, if any.
    pub(crate) fn folded(&self, key: &CounterKey, stored: Checkpoint) -> Option<Timestamp> {
        if !self.enabled {
            return None;
        }
        self.note_count(stored);
        let mut shard = self.shard(key);
        let tail = shard.tails.get_mut(key)?;
        self.held.fetch_sub(tail.advance(stored), Ordering::Relaxed);
        let newest = tail.events.newest();
        if tail.is_idle() {
            shard.retire(key);
        }
        newest
    }

    /// Forgets every counter of a deleted namespace.
    pub(crate) fn forget_namespace(&self, namespace: &Namespace) {
        for shard in self.shards.iter() {
            let dropped = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).forget(namespace);
            self.held.fetch_sub(dropped, Ordering::Relaxed);
        }
    }

    /// Events held in memory, over all counters; for metrics.
    pub(crate) fn events_held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Counters with something in memory; for metrics.
    pub(crate) fn counters(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).tails.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's token, taken from the start of time for ever.
    const CLIENT: Origin = Origin::Client { now: Timestamp::MIN, window: std::time::Duration::MAX };
    use tally_core::{CounterName, IdempotencyToken};

    fn key() -> CounterKey {
        CounterKey::new(Namespace::new("ns").expect("ns"), CounterName::new("c").expect("c"))
    }

    fn event(token: &str, micros: i64, kind: EventKind) -> Event {
        let token = IdempotencyToken::new(token, Timestamp::from_micros(micros)).expect("token");
        Event { key: key(), token, kind }
    }

    fn written(tails: &Tails, e: &Event) {
        assert!(matches!(tails.begin(e, CLIENT, StoreCheck::Done), Begin::Append(_)), "{e:?} begins");
        tails.finish(e, Finished::Written);
    }

    fn exact_tails() -> Tails {
        let tails = Tails::new(TailMode::Local { max_held: 1_000 });
        let _ = tails.shard(&key()).tail(&key()).advance(Checkpoint::ZERO);
        tails
    }

    #[test]
    fn an_add_loads_the_checkpoint_only_when_the_largest_count_could_overflow() {
        let tails = Tails::new(TailMode::Local { max_held: 1_000 });
        let small = event("small", 1, EventKind::Add(5));
        assert!(
            matches!(tails.begin(&small, CLIENT, StoreCheck::Done), Begin::Append(_)),
            "no count is near the bounds"
        );
        tails.finish(&small, Finished::Written);
        let other = CounterKey::new(Namespace::new("ns").expect("ns"), CounterName::new("big").expect("c"));
        tails.folded(&other, Checkpoint { count: i64::MAX - 3, until: Timestamp::from_micros(0) });
        let next = event("next", 2, EventKind::Add(1));
        assert!(
            matches!(tails.begin(&next, CLIENT, StoreCheck::Done), Begin::NeedCheckpoint),
            "a count near the bound exists"
        );
        tails.set_checkpoint(&key(), Checkpoint::ZERO);
        assert!(matches!(tails.begin(&next, CLIENT, StoreCheck::Done), Begin::Append(_)));
    }

    #[test]
    fn retired_checkpoints_answer_reads_seed_new_tails_and_go_with_their_namespace() {
        let named = |ns: &str, c: &str| {
            CounterKey::new(Namespace::new(ns).expect("ns"), CounterName::new(c).expect("c"))
        };
        let other = named("other", "c");
        let mut shard = Shard::default();
        for (k, count) in [(key(), 7), (other.clone(), 9)] {
            let _ = shard.tail(&k).advance(Checkpoint { count, until: Timestamp::from_micros(5) });
            shard.retire(&k);
        }
        assert!(shard.tails.is_empty(), "both tails retired");
        assert!(matches!(shard.read(&key()), Read::Exact(7)));
        assert!(matches!(shard.read(&other), Read::Exact(9)));
        assert!(matches!(shard.read(&named("n", "sc")), Read::Folded), "the same letters split otherwise");
        shard.forget(&key().namespace);
        assert!(matches!(shard.read(&key()), Read::Folded), "forgotten with its namespace");
        assert!(matches!(shard.tail(&other).read(), Read::Exact(9)), "a new tail starts from it");
    }

    #[test]
    fn events_arriving_out_of_time_order_are_held_in_token_order() {
        let mut events = Events::default();
        let token =
            |s: &str, micros| IdempotencyToken::new(s, Timestamp::from_micros(micros)).expect("token");
        let entry = |committed| Entry { kind: EventKind::Add(1), committed };
        for (s, micros, committed) in [("b", 20, true), ("d", 40, false), ("a", 20, true), ("c", 30, false)] {
            events.insert(token(s, micros), entry(committed));
        }
        let order: Vec<_> = events.0.iter().map(|h| h.token.clone()).collect();
        assert_eq!(order, vec![token("a", 20), token("b", 20), token("c", 30), token("d", 40)]);
        assert_eq!(events.oldest_in_flight(), Some(Timestamp::from_micros(30)));
        assert_eq!(events.newest(), Some(Timestamp::from_micros(40)));
        assert_eq!(events.before(Timestamp::from_micros(30)).count(), 2);
        assert!(events.get(&token("c", 30)).is_some_and(|e| !e.committed));
        assert!(events.get(&token("c", 31)).is_none(), "the same string at another time is another event");
        assert_eq!(events.drop_before(Timestamp::from_micros(30)), 2);
        assert!(events.remove(&token("d", 40)));
        assert!(!events.remove(&token("d", 40)));
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn a_queued_counter_is_pushed_again_only_for_an_earlier_due_time_or_after_a_rollup_planned_it() {
        let tails = exact_tails();
        written(&tails, &event("a", 10, EventKind::Add(1)));
        let pushes = std::cell::Cell::new(0);
        let ask = |due, answer| {
            tails.ask_rollup(&key(), Timestamp::from_micros(due), || {
                pushes.set(pushes.get() + 1);
                answer
            })
        };
        ask(100, Pushed::Dropped);
        ask(100, Pushed::Queued { earliest: true });
        assert_eq!(pushes.get(), 2, "a dropped trigger is asked for again");
        ask(150, Pushed::Coalesced);
        assert_eq!(pushes.get(), 2, "a later due time merges into the queued trigger");
        ask(50, Pushed::Coalesced);
        assert_eq!(pushes.get(), 3, "an earlier due time moves the queued trigger");
        assert!(matches!(tails.plan(&key(), Timestamp::from_micros(5)), Plan::Fold { .. }));
        ask(150, Pushed::Queued { earliest: true });
        assert_eq!(pushes.get(), 4, "a rollup took the counter out of the queue");
        let other = CounterKey::new(Namespace::new("ns").expect("ns"), CounterName::new("x").expect("x"));
        tails.ask_rollup(&other, Timestamp::from_micros(1), || {
            pushes.set(pushes.get() + 1);
            Pushed::Queued { earliest: true }
        });
        assert_eq!(pushes.get(), 5, "a counter memory does not hold is always pushed");
    }

    #[test]
    fn reads_count_every_written_event_in_order_with_clears() {
        let tails = exact_tails();
        written(&tails, &event("a", 10, EventKind::Add(5)));
        written(&tails, &event("b", 30, EventKind::Add(7)));
        assert_eq!(tails.read(&key()), Read::Exact(12));
        // A clear ordered between them discards only the earlier add, whenever it arrives.
        written(&tails, &event("c", 20, EventKind::Clear));
        assert_eq!(tails.read(&key()), Read::Exact(7));
        written(&tails, &event("d", 15, EventKind::Add(100)));
        assert_eq!(tails.read(&key()), Read::Exact(7));
    }

    #[test]
    fn a_rollup_folds_only_below_its_window_and_below_appends_in_flight() {
        let tails = exact_tails();
        written(&tails, &event("a", 10, EventKind::Add(5)));
        let in_flight = event("b", 20, EventKind::Add(1));
        assert!(matches!(tails.begin(&in_flight, CLIENT, StoreCheck::Done), Begin::Append(Lookup::Store)));
        written(&tails, &event("c", 30, EventKind::Add(7)));
        let Plan::Fold { base, fold, until } = tails.plan(&key(), Timestamp::from_micros(40)) else {
            panic!("an exact counter plans from memory");
        };
        assert_eq!((base, until), (Checkpoint::ZERO, Timestamp::from_micros(20)));
        assert_eq!((fold.sum, fold.events), (5, 1));
        let stored = base.advance(&fold, until);
        assert_eq!(tails.folded(&key(), stored), Some(Timestamp::from_micros(30)), "b and c are left");
        tails.finish(&in_flight, Finished::Written);
        assert_eq!(tails.read(&key()), Read::Exact(13));
    }

    /// A deleted namespace takes its tails and their events; the same counter name in another
    /// namespace keeps its own.
    #[test]
    fn a_deleted_namespace_takes_its_tails_and_leaves_the_same_names_elsewhere() {
        let tails = exact_tails();
        let elsewhere = |e: &Event| {
            let key = CounterKey::new(Namespace::new("other").expect("ns"), e.key.counter.clone());
            Event { key, ..e.clone() }
        };
        let here = event("a", 10, EventKind::Add(2));
        let there = elsewhere(&event("b", 11, EventKind::Add(3)));
        tails.set_checkpoint(&there.key, Checkpoint::ZERO);
        written(&tails, &here);
        written(&tails, &there);
        assert_eq!((tails.read(&here.key), tails.read(&there.key)), (Read::Exact(2), Read::Exact(3)));
        assert_eq!((tails.events_held(), tails.counters()), (2, 2));
        tails.forget_namespace(&here.key.namespace);
        assert_eq!((tails.events_held(), tails.counters()), (1, 1));
        assert_eq!(tails.read(&here.key), Read::Folded, "its events went with it");
        assert_eq!(tails.read(&there.key), Read::Exact(3));
    }

    /// A rollup through the store can fold an event whose append has not been answered yet
    /// (its task was slow); the answer must not count it again on top of the checkpoint.
    #[test]
    fn an_append_answered_after_a_checkpoint_covers_it_counts_once() {
        let tails = exact_tails();
        let slow = event("slow", 10, EventKind::Add(5));
        assert!(matches!(tails.begin(&slow, CLIENT, StoreCheck::Done), Begin::Append(_)));
        tails.folded(&key(), Checkpoint { count: 5, until: Timestamp::from_micros(20) });
        tails.finish(&slow, Finished::Written);
        assert_eq!(tails.read(&key()), Read::Exact(5));
    }

    #[test]
    fn past_its_bound_memory_leaves_events_to_the_store_and_serves_their_counter_from_it() {
        let tails = Tails::new(TailMode::Local { max_held: 2 });
        tails.shard(&key()).tail(&key());
        written(&tails, &event("a", 10, EventKind::Add(1)));
        written(&tails, &event("b", 11, EventKind::Add(1)));
        assert_eq!(tails.events_held(), 2);
        assert!(matches!(
            tails.begin(&event("c", 12, EventKind::Add(1)), CLIENT, StoreCheck::Done),
            Begin::Untracked
        ));
        assert_eq!(tails.read(&key()), Read::Uncertain, "memory lacks c");
        assert_eq!(tails.plan(&key(), Timestamp::from_micros(20)), Plan::Uncertain);
        // A rollup through the store folds past c: memory holds nothing again, and is exact.
        tails.folded(&key(), Checkpoint { count: 3, until: Timestamp::from_micros(13) });
        assert_eq!(tails.events_held(), 0);
        assert_eq!(tails.read(&key()), Read::Exact(3));
    }

    /// A refused add made its counter's tail and left it behind, empty, for as long as the
    /// process ran: a client sending adds that overflow to ever new counters grew memory.
    #[test]
    fn regression_a_refused_add_leaves_no_empty_tail_behind() {
        let tails = Tails::new(TailMode::Local { max_held: 1_000 });
        let full = Checkpoint { count: i64::MAX, until: Timestamp::from_micros(5) };
        tails.set_checkpoint(&key(), full);
        assert!(matches!(
            tails.begin(&event("a", 10, EventKind::Add(1)), CLIENT, StoreCheck::Done),
            Begin::Overflow { .. }
        ));
        assert_eq!(tails.counters(), 0);
        assert_eq!(tails.read(&key()), Read::Exact(i64::MAX), "its checkpoint is kept");
    }

    #[test]
    fn a_retry_is_known_and_a_concurrent_one_is_in_flight() {
        let tails = exact_tails();
        let e = event("a", 10, EventKind::Add(5));
        // A client's token may be held in the store by an event memory no longer has.
        assert!(matches!(tails.begin(&e, CLIENT, StoreCheck::Done), Begin::Append(Lookup::Store)));
        assert!(matches!(tails.begin(&e, CLIENT, StoreCheck::Done), Begin::InFlight));
        tails.finish(&e, Finished::Written);
        let stored = Stored { generation_time: Timestamp::from_micros(10), kind: EventKind::Add(5) };
        assert!(matches!(tails.begin(&e, CLIENT, StoreCheck::Done), Begin::Known(s) if s == stored));
        // The token alone: a retry restamped with another generation time is the same mutation.
        let restamped = event("a", 17, EventKind::Add(5));
        assert!(matches!(tails.begin(&restamped, CLIENT, StoreCheck::Done), Begin::Known(s) if s == stored));
        assert_eq!(tails.find(&restamped, Timestamp::MIN), Some(stored));
        // A server-made token is never sent again: it needs no lookup.
        assert!(matches!(
            tails.begin(&event("srv", 12, EventKind::Add(1)), Origin::Server, StoreCheck::Done),
            Begin::Append(Lookup::Skip)
        ));
    }

    #[test]
    fn an_event_is_found_and_placed_wherever_it_falls_among_those_held() {
        let token =
            |t: &str, micros| IdempotencyToken::new(t, Timestamp::from_micros(micros)).expect("token");
        let entry = Entry { kind: EventKind::Add(1), committed: false };
        let mut events = Events::default();
        assert_eq!(events.position(&token("a", 5)), Err(0));
        for (t, micros) in [("b", 20), ("a", 10), ("c", 30), ("a", 20)] {
            events.insert(token(t, micros), entry);
        }
        let order: Vec<_> = events.0.iter().map(|h| h.token.clone()).collect();
        assert_eq!(order, [token("a", 10), token("a", 20), token("b", 20), token("c", 30)]);
        assert_eq!(events.position(&token("c", 30)), Ok(3), "the newest");
        assert_eq!(events.position(&token("d", 30)), Err(4), "newer than all");
        assert_eq!(events.position(&token("b", 20)), Ok(2), "inside");
        assert_eq!(events.position(&token("a", 15)), Err(1), "between two");
        assert_eq!(events.position(&token("a", 1)), Err(0), "older than all");
    }

    #[test]
    fn a_token_taken_again_after_its_window_answers_retries_with_its_newer_event() {
        let tails = exact_tails();
        let at = |micros| Timestamp::from_micros(micros);
        let taken = |now| Origin::Client { now: at(now), window: std::time::Duration::from_micros(100) };
        let first = event("a", 10, EventKind::Add(1));
        assert!(matches!(tails.begin(&first, taken(10), StoreCheck::Done), Begin::Append(_)));
        tails.finish(&first, Finished::Written);
        // Its taking ran out at 110: the string is free for a new event.
        let second = event("a", 150, EventKind::Add(2));
        assert!(matches!(tails.begin(&second, taken(200), StoreCheck::Done), Begin::Append(_)));
        tails.finish(&second, Finished::Written);
        let retry = event("a", 170, EventKind::Add(2));
        let newer = Stored { generation_time: at(150), kind: EventKind::Add(2) };
        assert_eq!(tails.find(&retry, at(250)), Some(newer));
        assert!(matches!(tails.begin(&retry, taken(250), StoreCheck::Done), Begin::Known(s) if s == newer));
        assert_eq!(tails.read(&key()), Read::Exact(3));
    }

    #[test]
    fn a_token_refused_by_the_store_is_forgotten_with_its_time() {
        let tails = exact_tails();
        let e = event("a", 10, EventKind::Add(5));
        assert!(matches!(tails.begin(&e, CLIENT, StoreCheck::Done), Begin::Append(Lookup::Store)));
        tails.finish(&e, Finished::NotWritten);
        assert_eq!(tails.find(&event("a", 11, EventKind::Add(5)), Timestamp::MIN), None);
        assert!(matches!(
            tails.begin(&event("a", 11, EventKind::Add(5)), CLIENT, StoreCheck::Done),
            Begin::Append(_)
        ));
    }

    #[test]
    fn an_unknown_outcome_makes_the_counter_uncertain_until_folded_past_it() {
        let tails = exact_tails();
        let e = event("a", 10, EventKind::Add(5));
        assert!(matches!(tails.begin(&e, CLIENT, StoreCheck::Done), Begin::Append(_)));
        tails.finish(&e, Finished::Unknown);
        assert_eq!(tails.read(&key()), Read::Uncertain);
        assert!(matches!(
            tails.begin(&event("b", 12, EventKind::Add(1)), CLIENT, StoreCheck::Done),
            Begin::Append(Lookup::Store)
        ));
        tails.finish(&event("b", 12, EventKind::Add(1)), Finished::Written);
        tails.folded(&key(), Checkpoint { count: 6, until: Timestamp::from_micros(11) });
        // The checkpoint is past the unknown event: exact again, with b still unfolded.
        assert_eq!(tails.read(&key()), Read::Exact(7));
    }

    #[test]
    fn an_uncertain_counter_asks_for_the_store_check_and_a_known_retry_does_not() {
        let tails = exact_tails();
        let e = event("a", 10, EventKind::Add(5));
        written(&tails, &e);
        let unknown = event("u", 11, EventKind::Add(1));
        assert!(matches!(tails.begin(&unknown, CLIENT, StoreCheck::Done), Begin::Append(_)));
        tails.finish(&unknown, Finished::Unknown);
        let next = event("b", 12, EventKind::Add(1));
        assert!(matches!(tails.begin(&next, CLIENT, StoreCheck::Needed), Begin::CheckInStore));
        assert!(matches!(tails.begin(&next, CLIENT, StoreCheck::Done), Begin::Append(Lookup::Store)));
        // A retry memory holds is answered as such, whatever the count.
        assert!(matches!(tails.begin(&e, CLIENT, StoreCheck::Needed), Begin::Known(_)));
        // A clear has no count to check.
        let clear = event("c", 13, EventKind::Clear);
        assert!(matches!(tails.begin(&clear, CLIENT, StoreCheck::Needed), Begin::Append(_)));
        // Without memory every add is checked in the store.
        let off = Tails::new(TailMode::Off);
        assert!(matches!(off.begin(&next, CLIENT, StoreCheck::Needed), Begin::CheckInStore));
        assert!(matches!(off.begin(&next, CLIENT, StoreCheck::Done), Begin::Append(Lookup::Store)));
    }

    #[test]
    fn finish_answers_what_a_read_would() {
        let tails = exact_tails();
        let a = event("a", 10, EventKind::Add(5));
        assert!(matches!(tails.begin(&a, CLIENT, StoreCheck::Needed), Begin::Append(_)));
        assert_eq!(tails.finish(&a, Finished::Written), Read::Exact(5));
        let b = event("b", 11, EventKind::Add(3));
        assert!(matches!(tails.begin(&b, CLIENT, StoreCheck::Needed), Begin::Append(_)));
        assert_eq!(tails.finish(&b, Finished::NotWritten), Read::Exact(5));
        let c = event("c", 12, EventKind::Add(1));
        assert!(matches!(tails.begin(&c, CLIENT, StoreCheck::Needed), Begin::Append(_)));
        assert_eq!(tails.finish(&c, Finished::Unknown), Read::Uncertain);
        assert_eq!(tails.read(&key()), Read::Uncertain);
    }

    #[test]
    fn overflow_counts_adds_in_flight() {
        let tails = exact_tails();
        let first = event("a", 10, EventKind::Add(i64::MAX));
        assert!(matches!(tails.begin(&first, CLIENT, StoreCheck::Done), Begin::Append(_)));
        assert!(matches!(
            tails.begin(&event("b", 11, EventKind::Add(1)), CLIENT, StoreCheck::Done),
            Begin::Overflow { count: 0 }
        ));
        tails.finish(&first, Finished::Written);
        assert!(matches!(
            tails.begin(&event("c", 12, EventKind::Add(1)), CLIENT, StoreCheck::Done),
            Begin::Overflow { count: i64::MAX }
        ));
    }

    #[test]
    fn a_clear_and_adds_of_its_microsecond_are_ordered_by_token() {
        let tails = exact_tails();
        written(&tails, &event("a", 10, EventKind::Add(5)));
        written(&tails, &event("c", 10, EventKind::Add(7)));
        written(&tails, &event("b", 10, EventKind::Clear));
        assert_eq!(tails.read(&key()), Read::Exact(7));
        let Plan::Fold { fold, .. } = tails.plan(&key(), Timestamp::from_micros(11)) else {
            panic!("an exact counter plans from memory");
        };
        assert_eq!((fold.cleared, fold.sum, fold.events), (true, 7, 3));
    }
}
