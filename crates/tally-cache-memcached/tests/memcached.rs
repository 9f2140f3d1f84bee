//! The cache against a real memcached (Debian's `memcached` binary), started by each test on
//! a free port so that it can be stopped, paused and restarted.

use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use tally_cache_memcached::{MemcachedCache, MemcachedOptions};
use tally_core::{Checkpoint, CounterKey, CounterName, Namespace, Timestamp};
use tally_engine::cache::CheckpointCache;

struct Memcached {
    port: u16,
    child: Option<Child>,
}

impl Memcached {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
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
        self.child = Some(child);
        // Ready when it accepts a connection; bounded, not timed.
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
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

    fn cache(&self) -> Arc<MemcachedCache> {
        MemcachedCache::new(MemcachedOptions {
            address: format!("127.0.0.1:{}", self.port),
            backoff: Duration::ZERO,
            generation_refresh: Duration::ZERO,
            ..MemcachedOptions::default()
        })
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
