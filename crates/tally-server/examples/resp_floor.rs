//! The floor of a RESP request on this stack: a server with Tally's RESP framing
//! (`resp::parser`), command names (`resp::command`), reply encoding (`resp::reply`), runtime
//! settings and connection loop (read what arrived, answer every complete request, one
//! write), whose `INCRBY` and `INCR` add to a count in memory: no engine, no token, and
//! unless `--log` (below), no log and no disk. `PING` answers `PONG`; everything
//! else is an error. `bench/compare.sh` drives it with the same `redis-benchmark` loads as
//! `redis-server` and Tally, so the figures side by side show how much of a request is this
//! door on the shared cores, and how much is Tally's engine.
//!
//! With `--log FILE` it is durable the simplest way there is: each read's adds are appended
//! to `FILE`, which one thread writes and syncs for every connection at once (group commit),
//! and a connection answers only after the sync that holds its adds, as `redis-server` with
//! `appendfsync always` answers only after its `fsync`. That floor says what this door with a
//! log and no engine allows, beside `redis-server` on the same disk.
//!
//!   cargo run --release -p tally-server --example resp_floor -- 127.0.0.1:17092 [--log FILE]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::Write as _;
use std::sync::{Condvar, Mutex};

use bytes::{Bytes, BytesMut};
use tally_server::resp::command::Command;
use tally_server::resp::parser::{self, Limits};
use tally_server::resp::reply::Reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

// As `tally serve` allocates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lock stripes over the counts, as many as the local tail's.
const SHARDS: usize = 64;

/// The counts, by counter name.
struct Counts {
    hasher: foldhash::fast::RandomState,
    shards: Vec<Mutex<HashMap<Bytes, i64>>>,
}

impl Counts {
    fn new() -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Self { hasher: foldhash::fast::RandomState::default(), shards }
    }

    /// Adds `delta` to `key`'s count and answers the new count, or `None` on overflow.
    fn add(&self, key: &Bytes, delta: i64) -> Option<i64> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut counts = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(key) {
            *count = count.checked_add(delta)?;
            return Some(*count);
        }
        // A copy: `key` shares the connection's read buffer, which the map must not keep.
        counts.insert(Bytes::copy_from_slice(key), delta);
        Some(delta)
    }
}

/// A log of adds, written and synced by one thread for every connection (group commit).
struct Log {
    pending: Mutex<Pending>,
    /// Wakes the log's thread when a batch is appended.
    appended: Condvar,
    /// The last batch synced.
    synced: watch::Sender<u64>,
}

/// What waits for the log's thread: the bytes of every batch appended since its last write.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The number of the last batch among them.
    last: u64,
}

impl Log {
    /// Opens `path` for appending and starts the thread that writes and syncs it.
    fn open(path: &str) -> std::io::Result<&'static Log> {
        let file = File::options().create(true).append(true).open(path)?;
        let log: &'static Log = Box::leak(Box::new(Log {
            pending: Mutex::new(Pending::default()),
            appended: Condvar::new(),
            synced: watch::Sender::new(0),
        }));
        std::thread::Builder::new().name("floor-log".into()).spawn(move || {
            if let Err(e) = log.run(file) {
                // No acknowledged add may go unsynced: stop answering at all.
                eprintln!("RESP floor: writing the log failed: {e}");
                std::process::exit(1);
            }
        })?;
        Ok(log)
    }

    /// Appends one batch of records; answers its number, which `synced` reaches once it is
    /// synced.
    fn append(&self, records: &[u8]) -> u64 {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.bytes.extend_from_slice(records);
        pending.last += 1;
        self.appended.notify_one();
        pending.last
    }

    /// Writes and syncs whatever was appended since the last sync, for as long as the
    /// process runs: the batches appended during one sync share the next.
    fn run(&self, mut file: File) -> std::io::Result<()> {
        let mut writing = Vec::new();
        loop {
            let last = {
                let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                while pending.bytes.is_empty() {
                    pending = self.appended.wait(pending).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                std::mem::swap(&mut writing, &mut pending.bytes);
                pending.last
            };
            file.write_all(&writing)?;
            file.sync_data()?;
            writing.clear();
            self.synced.send_replace(last);
        }
    }
}

/// A connection's side of the log: the records of what it answered since its last sync, and
/// where it learns which batches are synced.
struct Logger {
    log: &'static Log,
    records: BytesMut,
    synced: watch::Receiver<u64>,
}

impl Logger {
    fn new(log: &'static Log) -> Self {
        Self { log, records: BytesMut::new(), synced: log.synced.subscribe() }
    }

    /// Appends the records gathered since the last call and waits until they are synced.
    async fn sync(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let number = self.log.append(&self.records);
        self.records.clear();
        // The sender lives as long as the process: `wait_for` ends only by finding it.
        let _ = self.synced.wait_for(|&done| done >= number).await;
    }
}

/// The answer to one request; with a log, an add's record goes to `records`.
fn answer(counts: &Counts, request: &[Bytes], records: Option<&mut BytesMut>) -> Reply {
    // Named as the door names a request's command, once, into its type.
    let command = request.first().and_then(|name| Command::parse(name));
    let delta = match (command, request) {
        (Some(Command::Ping), [_]) => return Reply::Simple("PONG"),
        (Some(Command::Incr), [_, _]) => Some(1),
        (Some(Command::IncrBy), [_, _, delta]) => {
            std::str::from_utf8(delta).ok().and_then(|d| d.parse::<i64>().ok())
        }
        _ => return Reply::Error("ERR the RESP floor serves INCRBY, INCR and PING only".into()),
    };
    let Some(delta) = delta else {
        return Reply::Error("ERR value is not an integer or out of range".into());
    };
    match counts.add(&request[1], delta) {
        Some(count) => {
            if let Some(records) = records {
                records.extend_from_slice(&request[1]);
                let _ = writeln!(records, " {delta}");
            }
            Reply::Integer(count)
        }
        None => Reply::Error("ERR increment or decrement would overflow".into()),
    }
}

/// One connection, as the door runs it: read, answer every complete request, write once
/// (with a log, once its adds are synced).
async fn connection(
    counts: &Counts,
    log: Option<&'static Log>,
    mut socket: TcpStream,
    limits: Limits,
) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    let mut logger = log.map(Logger::new);
    loop {
        if socket.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        let mut malformed = false;
        loop {
            match parser::parse(&mut input, limits) {
                Ok(Some(request)) if request.is_empty() => {}
                Ok(Some(request)) => {
                    let records = logger.as_mut().map(|logger| &mut logger.records);
                    answer(counts, &request, records).encode(false, &mut output);
                }
                Ok(None) => break,
                Err(e) => {
                    Reply::Error(format!("ERR {e}")).encode(false, &mut output);
                    malformed = true;
                    break;
                }
            }
        }
        // The adds this read answered are synced before any answer goes out, also when a
        // malformed request ends the connection.
        if let Some(logger) = logger.as_mut() {
            logger.sync().await;
        }
        socket.write_all(&output).await?;
        if malformed {
            return socket.shutdown().await;
        }
        output.clear();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:17092".to_owned());
    let log = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--log"), Some(path)) => Some(Log::open(&path)?),
        _ => return Err("usage: resp_floor [ADDRESS] [--log FILE]".into()),
    };
    // The door's limits under Tally's default configuration.
    let limits = tally_server::ServerConfig::default().resp_limits();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // As `tally serve` runs (see `runtime()` in the binary).
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    runtime.enable_all().build()?.block_on(async {
        let listener = TcpListener::bind(&address).await?;
        let durability = if log.is_some() { "a log synced before each answer" } else { "no log" };
        eprintln!("RESP floor listening on {address} ({durability})");
        let counts: &'static Counts = Box::leak(Box::new(Counts::new()));
        loop {
            let (socket, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            // Tally's door sets no-delay on every connection it admits.
            socket.set_nodelay(true)?;
            tokio::spawn(async move {
                let _ = connection(counts, log, socket, limits).await;
            });
        }
    })
}
