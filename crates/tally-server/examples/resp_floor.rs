//! The floor of a RESP request on this stack: a server with Tally's RESP framing
//! (`resp::parser`), command names (`resp::command`), reply encoding (`resp::reply`), runtime
//! settings and connection loop (read what arrived, answer every complete request, one
//! write), whose `INCRBY` and `INCR` add to a
//! count in memory: no engine, no log, no disk, no token. `PING` answers `PONG`; everything
//! else is an error. `bench/compare.sh` drives it with the same `redis-benchmark` loads as
//! `redis-server` and Tally, so the figures side by side show how much of a request is this
//! door on the shared cores, and how much is Tally's engine.
//!
//!   cargo run --release -p tally-server --example resp_floor -- 127.0.0.1:17092

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use tally_server::resp::command::Command;
use tally_server::resp::parser::{self, Limits};
use tally_server::resp::reply::Reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// The answer to one request.
fn answer(counts: &Counts, request: &[Bytes]) -> Reply {
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
        Some(count) => Reply::Integer(count),
        None => Reply::Error("ERR increment or decrement would overflow".into()),
    }
}

/// One connection, as the door runs it: read, answer every complete request, write once.
async fn connection(counts: &Counts, mut socket: TcpStream, limits: Limits) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    loop {
        if socket.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        loop {
            match parser::parse(&mut input, limits) {
                Ok(Some(request)) if request.is_empty() => {}
                Ok(Some(request)) => answer(counts, &request).encode(false, &mut output),
                Ok(None) => break,
                Err(e) => {
                    Reply::Error(format!("ERR {e}")).encode(false, &mut output);
                    socket.write_all(&output).await?;
                    return socket.shutdown().await;
                }
            }
        }
        socket.write_all(&output).await?;
        output.clear();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:17092".to_owned());
    // The door's limits under Tally's default configuration.
    let limits = tally_server::ServerConfig::default().resp_limits();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // As `tally serve` runs (see `runtime()` in the binary).
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    runtime.enable_all().build()?.block_on(async {
        let listener = TcpListener::bind(&address).await?;
        eprintln!("RESP floor listening on {address}");
        let counts: &'static Counts = Box::leak(Box::new(Counts::new()));
        loop {
            let (socket, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            // Tally's door sets no-delay on every connection it admits.
            socket.set_nodelay(true)?;
            tokio::spawn(async move {
                let _ = connection(counts, socket, limits).await;
            });
        }
    })
}
