//! The fjall handles the writer and the readers share, and reopening them after a failed
//! write.
//!
//! fjall poisons a database whose journal write or sync failed (a full disk, an I/O error):
//! every later write fails too. Reopening the directory runs fjall's recovery, which keeps
//! what reached the journal and nothing else, so the store heals once the disk works again,
//! without a restart. Meanwhile every request is answered `UNAVAILABLE`; nothing is
//! acknowledged that was not synced, because replies wait for the commit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fjall::config::FilterPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tally_core::Failure;
use tally_store::{StoreError, StoreResult};

use crate::key_codec as codec;

/// The least time between two attempts to reopen a closed database.
const REOPEN_BACKOFF: Duration = Duration::from_millis(200);

const FORMAT_KEY: &str = "format_version";

/// Memtable size of every keyspace (fjall's default is 64 MiB). Moves and rollups write
/// `last_write` and checkpoints at random keys; an 8 MiB skiplist stays in the CPU caches far
/// better than a 64 MiB one, which made durable RESP adds about a fifth faster in
/// `bench/compare.sh`. Moves write `events` and `tokens` into tables of their own (see
/// `staged.rs`), so those two memtables hold only deletions. fjall records the size when a
/// keyspace is created, so stores made before keep theirs (`events` and `tokens` had 32 and
/// 16 MiB while moves inserted into them).
const MEMTABLE_BYTES: u64 = 8 << 20;

/// How many tables the `events` keyspace gathers at its first level before it compacts them
/// into the next (fjall's default is 4). Each move writes its events as a table spanning
/// nearly every counter, so each compaction there rewrites most of the next level: gathering
/// 16 cut fjall's CPU over a 60 s random-key load by about a third (BENCHMARKS.md). Events
/// are read by range, and rarely (memory answers reads and rollups), so more tables per read
/// cost little; fjall slows writes from 20 tables on. Kept in the keyspace's settings when it
/// is created: stores made before keep 4.
const EVENTS_L0_RUNS: u8 = 16;

/// fjall's flush and compaction threads: its default (one a core, at most 4) gives two on a
/// two-core machine, and with two, the first thread hands every compaction request on to the
/// second and takes it back at once, spinning for as long as the second compacts. That spin
/// was about a third of the workers' CPU under random-key adds (3.1 against 2.1 µs per add
/// with three threads, in three pairs; see BENCHMARKS.md). With three or more, a spare thread
/// takes the request.
fn fjall_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from).clamp(3, 4)
}

pub(crate) fn unavailable(e: fjall::Error) -> StoreError {
    StoreError::Unavailable(Failure::caused_by("embedded store", e))
}

/// One open database and its keyspaces.
pub(crate) struct Keyspaces {
    pub db: Database,
    pub events: Keyspace,
    pub last_write: Keyspace,
    pub checkpoints: Keyspace,
    pub namespaces: Keyspace,
    /// Clients' tokens, taken for their idempotency window.
    pub tokens: Keyspace,
    /// Events of recent group commits, one entry per commit, until they move into `events`
    /// (see `staged.rs`).
    pub journal: Keyspace,
}

impl Keyspaces {
    /// Opens (or creates) the database in `path` and checks its format.
    fn open(path: &Path, cache_bytes: u64) -> StoreResult<Self> {
        let builder = Database::builder(path).cache_size(cache_bytes).worker_threads(fjall_workers());
        let db = builder.open().map_err(|e| {
            StoreError::Unavailable(Failure::caused_by(
                format!("cannot open the embedded store in {}", path.display()),
                e,
            ))
        })?;
        let made_with =
            |name: &str, options: KeyspaceCreateOptions| db.keyspace(name, || options).map_err(unavailable);
        let plain = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        let keyspace = |name: &str| made_with(name, plain());
        let meta = keyspace("meta")?;
        check_format(&db, &meta, path)?;
        let leveled = fjall::compaction::Leveled::default().with_l0_threshold(EVENTS_L0_RUNS);
        Ok(Self {
            // No filter on `events`' tables: events are only read by range (a counter's, a
            // counter's before a time) and deleted by keys such a read found, so a filter of
            // whole keys is never consulted, yet fjall built one for every table a move or a
            // compaction wrote, and kept it on disk and in its cache. Kept in the keyspace's
            // settings when it is created: stores made before keep their filters.
            events: made_with(
                "events",
                plain()
                    .compaction_strategy(std::sync::Arc::new(leveled))
                    .filter_policy(FilterPolicy::disabled()),
            )?,
            last_write: keyspace("last_write")?,
            checkpoints: keyspace("checkpoints")?,
            namespaces: keyspace("namespaces")?,
            tokens: keyspace("tokens")?,
            journal: keyspace("journal")?,
            db,
        })
    }
}

fn check_format(db: &Database, meta: &Keyspace, path: &Path) -> StoreResult<()> {
    match meta.get(FORMAT_KEY).map_err(unavailable)? {
        Some(v) => {
            let found = <[u8; 4]>::try_from(&*v).map(u32::from_le_bytes).ok();
            if found == Some(codec::FORMAT_VERSION) {
                Ok(())
            } else if let Some(from) = found.filter(|f| codec::UPGRADES_FROM.contains(f)) {
                // Format 2 only adds the journal, which a format 1 store has empty; format 3
                // only adds tokens to the journal, which a format 2 store has none of. Recorded
                // before anything is journaled, so that an older build refuses the directory
                // from now on instead of missing what the journal holds.
                tracing::info!(path = %path.display(), from, to = codec::FORMAT_VERSION, "upgrading the embedded store's on-disk format");
                record_format(db, meta)
            } else {
                Err(StoreError::Corrupt(
                    format!(
                        "{} holds on-disk format {found:?}; this build reads format {}",
                        path.display(),
                        codec::FORMAT_VERSION
                    )
                    .into(),
                ))
            }
        }
        None => record_format(db, meta),
    }
}

fn record_format(db: &Database, meta: &Keyspace) -> StoreResult<()> {
    meta.insert(FORMAT_KEY, codec::FORMAT_VERSION.to_le_bytes()).map_err(unavailable)?;
    db.persist(PersistMode::SyncData).map_err(unavailable)
}

/// The current database, closed after a failed write and reopened by the writer.
pub(crate) struct Handles {
    path: PathBuf,
    cache_bytes: u64,
    current: RwLock<Option<Arc<Keyspaces>>>,
    /// Why it was closed, for the errors answered until it reopens.
    closed_because: Mutex<String>,
    last_attempt: Mutex<Option<Instant>>,
}

impl Handles {
    pub fn open(path: &Path, cache_bytes: u64) -> StoreResult<Self> {
        let ks = Keyspaces::open(path, cache_bytes)?;
        Ok(Self {
            path: path.to_owned(),
            cache_bytes,
            current: RwLock::new(Some(Arc::new(ks))),
            closed_because: Mutex::new(String::new()),
            last_attempt: Mutex::new(None),
        })
    }

    fn closed(&self) -> StoreError {
        let why = self.closed_because.lock().map(|w| w.clone()).unwrap_or_default();
        StoreError::Unavailable(
            format!("embedded store in {} is reopening after a failed write ({why})", self.path.display())
                .into(),
        )
    }

    /// The open database, for readers.
    pub fn get(&self) -> StoreResult<Arc<Keyspaces>> {
        let current = self.current.read().map_err(|_| self.closed())?;
        current.clone().ok_or_else(|| self.closed())
    }

    /// Closes the database after `error`; the writer reopens it before its next batch.
    pub fn close(&self, error: &StoreError) {
        if let Ok(mut why) = self.closed_because.lock() {
            *why = error.to_string();
        }
        if let Ok(mut current) = self.current.write()
            && current.take().is_some()
        {
            tracing::error!(%error, path = %self.path.display(), "embedded store closed after a failed write; reopening");
            metrics::counter!("tally_store_reopens_total").increment(1);
        }
    }

    /// For the writer: the open database, or an attempt to reopen it (at most one per
    /// [`REOPEN_BACKOFF`]; readers still holding the old one make an attempt fail).
    pub fn get_or_reopen(&self) -> StoreResult<Arc<Keyspaces>> {
        if let Ok(ks) = self.get() {
            return Ok(ks);
        }
        {
            let mut last = self.last_attempt.lock().map_err(|_| self.closed())?;
            if last.is_some_and(|at| at.elapsed() < REOPEN_BACKOFF) {
                return Err(self.closed());
            }
            *last = Some(Instant::now());
        }
        let ks = match Keyspaces::open(&self.path, self.cache_bytes) {
            Ok(ks) => Arc::new(ks),
            Err(e) => {
                tracing::warn!(error = %e, "embedded store not reopened yet");
                return Err(self.closed());
            }
        };
        tracing::info!(path = %self.path.display(), "embedded store reopened");
        let mut current = self.current.write().map_err(|_| self.closed())?;
        *current = Some(ks.clone());
        Ok(ks)
    }
}
