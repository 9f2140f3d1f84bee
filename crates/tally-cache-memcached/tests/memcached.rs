//! The cache against a real memcached (Debian's `memcached` binary), started by each test on
//! a free port so that it can be stopped, paused and restarted.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_cache_memcached::{MemcachedBestEffort, MemcachedCache, MemcachedOptions, MemcachedPool};
use tally_core::{Checkpoint, CounterKey, CounterName, Namespace, Timestamp};
use tally_engine::cache::CheckpointCache;
use tally_engine::{BestEffortTable, EngineError};

struct Memcached {
    port: u16,
    child: Option<Child>,
}

/// A free port no other server of this test process was given. The kernel may hand the same
/// free port to two tests one after the other; the second memcached then failed to bind,
/// its readiness check reached the first one, and its test broke when the first test ended
/// (`Connection refused`).
fn unused_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return port;
        }
    }
}

/// The pid the memcached listening on `port` reports, if one answers.
fn pid_on(port: u16) -> Option<u32> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.write_all(b"stats\r\n").ok()?;
    for line in BufReader::new(stream).lines() {
        let line = line.ok()?;
        if let Some(pid) = line.strip_prefix("STAT pid ") {
            return pid.trim().parse().ok();
        }
        if line == "END" {
            return None;
        }
    }
    None
}

impl Memcached {
    fn start() -> Self {
        let port = unused_port();
        let mut m = Self { port, child: None };
        m.restart();
        m
    }

    fn restart(&mut self) {
        self.stop();
        let child = Command::new("memcached")
            .args(["-l", "127.0.0.1", "-p", &self.port.to_string(), "-U", "0", "-m", "16", "-u", "root"])
            .spawn()
            .expect("memcached from Debian's package must be installed (apt-get install memcached)");
        let pid = child.id();
        self.child = Some(child);
        // Ready when our own process answers on the port; bounded, not timed.
        for _ in 0..500 {
            match pid_on(self.port) {
                Some(found) if found == pid => return,
                Some(found) => panic!("port {} is held by another memcached (pid {found})", self.port),
                None => {}
            }
            std::thread::yield_now();
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("memcached did not start on port {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().expect("kill").success());
    }

    /// A fresh pool, as a separate Tally instance would have.
    fn pool(&self) -> Arc<MemcachedPool> {
        Arc::new(MemcachedPool::new(MemcachedOptions {
            address: format!("127.0.0.1:{}", self.port),
            backoff: Duration::ZERO,
            generation_refresh: Duration::ZERO,
            ..MemcachedOptions::default()
        }))
    }

    fn cache(&self) -> Arc<MemcachedCache> {
        MemcachedCache::new(self.pool())
    }

    fn best_effort(&self) -> Arc<MemcachedBestEffort> {
        MemcachedBestEffort::new(self.pool())
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.stop();
    }
}

fn key(c: &str) -> CounterKey {
    CounterKey::new(Namespace::new("ns").expect("ns"), CounterName::new(c).expect("name"))
}

fn cp(count: i64, until: i64) -> Checkpoint {
    Checkpoint { count, until: Timestamp::from_micros(until) }
}

const NOW: Timestamp = Timestamp::from_micros(1_000_000);
const TTL: Duration = Duration::from_secs(60);

#[tokio::test]
async fn instances_share_entries_and_an_older_checkpoint_never_wins() {
    let server = Memcached::start();
    let (a, b) = (server.cache(), server.cache());
    assert_eq!(a.get(&key("c"), NOW).await, None);
    a.put(&key("c"), cp(5, 200), NOW, TTL).await;
    assert_eq!(b.get(&key("c"), NOW).await, Some(cp(5, 200)));
    b.put(&key("c"), cp(3, 100), NOW, TTL).await;
    assert_eq!(a.get(&key("c"), NOW).await, Some(cp(5, 200)), "older checkpoint replaced a newer one");
    b.put(&key("c"), cp(9, 300), NOW, TTL).await;
    assert_eq!(a.get(&key("c"), NOW).await, Some(cp(9, 300)));
    // Expiry follows Tally's clock.
    assert_eq!(a.get(&key("c"), NOW.saturating_add(TTL)).await, None);
}

#[tokio::test]
async fn clear_on_one_instance_empties_the_cache_for_all() {
    let server = Memcached::start();
    let (a, b) = (server.cache(), server.cache());
    a.put(&key("c"), cp(5, 200), NOW, TTL).await;
    assert_eq!(b.get(&key("c"), NOW).await, Some(cp(5, 200)));
    a.clear().await;
    assert_eq!(b.get(&key("c"), NOW).await, None);
    b.put(&key("c"), cp(1, 250), NOW, TTL).await;
    assert_eq!(a.get(&key("c"), NOW).await, Some(cp(1, 250)));
}

#[tokio::test]
async fn a_stopped_or_paused_memcached_is_a_miss_and_recovery_needs_no_restart() {
    let mut server = Memcached::start();
    let cache = server.cache();
    cache.put(&key("c"), cp(5, 200), NOW, TTL).await;

    server.signal("-STOP");
    let started = std::time::Instant::now();
    assert_eq!(cache.get(&key("c"), NOW).await, None, "a paused server must read as a miss");
    cache.put(&key("c"), cp(6, 300), NOW, TTL).await;
    assert!(started.elapsed() < Duration::from_secs(5), "calls must give up, took {:?}", started.elapsed());
    server.signal("-CONT");

    server.stop();
    assert_eq!(cache.get(&key("c"), NOW).await, None);
    cache.put(&key("c"), cp(7, 400), NOW, TTL).await;

    server.restart();
    // The restarted server is empty; the same cache object reconnects by itself.
    let mut reconnected = false;
    for _ in 0..50 {
        cache.put(&key("c"), cp(8, 500), NOW, TTL).await;
        if cache.get(&key("c"), NOW).await == Some(cp(8, 500)) {
            reconnected = true;
            break;
        }
    }
    assert!(reconnected, "the cache did not come back after memcached restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_adds_from_several_instances_all_land_and_overflow_changes_nothing() {
    let server = Memcached::start();
    let tables: Vec<_> = (0..4).map(|_| server.best_effort()).collect();
    let adds = (0..400).map(|i| {
        let table = tables[i % tables.len()].clone();
        async move { table.add(&key("hot"), if i % 2 == 0 { 3 } else { -1 }, None, NOW).await }
    });
    let results = futures::future::join_all(adds).await;
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    assert_eq!(tables[1].get(&key("hot"), NOW).await, Ok(200 * 3 - 200));

    let err = tables[2].add(&key("hot"), i64::MAX, None, NOW).await.expect_err("overflow");
    assert!(matches!(err, EngineError::Overflow { count: 400, .. }), "{err:?}");
    assert_eq!(tables[0].get(&key("hot"), NOW).await, Ok(400));

    // Near the bounds, and clear.
    assert_eq!(tables[0].add(&key("low"), i64::MIN, Some(Duration::from_secs(10)), NOW).await, Ok(i64::MIN));
    let err = tables[1].add(&key("low"), -1, None, NOW).await.expect_err("underflow");
    assert!(matches!(err, EngineError::Overflow { count: i64::MIN, delta: -1, .. }), "{err:?}");
    assert_eq!(tables[2].add(&key("low"), 1, None, NOW).await, Ok(i64::MIN + 1));
    tables[3].clear(&key("hot")).await.expect("clear");
    assert_eq!(tables[0].get(&key("hot"), NOW).await, Ok(0));
}

#[tokio::test]
async fn best_effort_clear_namespace_reaches_every_instance_and_a_dead_memcached_is_unavailable() {
    let mut server = Memcached::start();
    let (a, b) = (server.best_effort(), server.best_effort());
    a.add(&key("c"), 7, None, NOW).await.expect("add");
    assert_eq!(b.get(&key("c"), NOW).await, Ok(7));
    b.clear_namespace(&Namespace::new("ns").expect("ns")).await.expect("clear namespace");
    assert_eq!(a.get(&key("c"), NOW).await, Ok(0));
    let other = CounterKey::new(Namespace::new("other").expect("ns"), CounterName::new("c").expect("name"));
    a.add(&other, 1, None, NOW).await.expect("add");
    b.clear_namespace(&Namespace::new("ns").expect("ns")).await.expect("clear namespace");
    assert_eq!(a.get(&other, NOW).await, Ok(1), "another namespace was cleared");

    server.stop();
    let err = a.add(&key("c"), 1, None, NOW).await.expect_err("memcached is down");
    assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");
    assert!(matches!(a.get(&key("c"), NOW).await, Err(EngineError::Unavailable(_))));
}
