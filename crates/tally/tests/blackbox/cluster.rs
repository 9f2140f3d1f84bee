//! Three `tally serve` processes sharing a real Cassandra node and a real memcached.
//!
//! Needs `TALLY_TEST_CASSANDRA` (see `scripts/test.sh`) and Debian's `memcached` binary.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Server;

const INSTANCES: usize = 3;
const COUNTERS: usize = 12;
const WORKERS: usize = 12;
const ADDS_PER_WORKER: usize = 60;

/// memcached on a free port, restartable on that port.
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
        if let Some(mut old) = self.child.take() {
            old.kill().expect("kill memcached");
            old.wait().expect("reap memcached");
        }
        let child = Command::new("memcached")
            .args(["-l", "127.0.0.1", "-p", &self.port.to_string(), "-U", "0", "-m", "32", "-u", "root"])
            .spawn()
            .expect("memcached from Debian's package must be installed (apt-get install memcached)");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "memcached did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Memcached {
    /// Sends `signal` (`-STOP`, `-CONT`) to the server.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().expect("kill").success());
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The cluster: instance processes, replaceable while clients run.
struct Cluster {
    args: Vec<Vec<String>>,
    dirs: Vec<tempfile::TempDir>,
    servers: Mutex<Vec<Option<Server>>>,
    http: Mutex<Vec<String>>,
}

impl Cluster {
    /// Three instances; with `routed`, on fixed gRPC ports listed as each other's peers.
    fn start(shared: Vec<String>, routed: bool) -> Self {
        let dirs: Vec<_> = (0..INSTANCES).map(|_| tempfile::tempdir().expect("temp dir")).collect();
        let grpc: Vec<String> = (0..INSTANCES)
            .map(|_| {
                let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
                format!("127.0.0.1:{port}")
            })
            .collect();
        let args: Vec<Vec<String>> = (0..INSTANCES)
            .map(|i| {
                let mut args = shared.clone();
                if routed {
                    args.extend(["--grpc".to_owned(), grpc[i].clone(), "--peers".to_owned(), grpc.join(",")]);
                    args.extend(["--advertise".to_owned(), grpc[i].clone()]);
                }
                args
            })
            .collect();
        let servers: Vec<_> = dirs.iter().zip(&args).map(|(d, a)| Server::start_with(d.path(), a)).collect();
        let http = servers.iter().map(|s| s.http.clone()).collect();
        Self {
            args,
            dirs,
            servers: Mutex::new(servers.into_iter().map(Some).collect()),
            http: Mutex::new(http),
        }
    }

    /// The sum of one counter metric over the running instances.
    async fn metric(&self, client: &reqwest::Client, name: &str) -> f64 {
        let mut total = 0.0;
        for i in 0..INSTANCES {
            let text = client
                .get(self.url(i, "/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            total += super::metric_sum(&text, name);
        }
        total
    }

    fn url(&self, instance: usize, path: &str) -> String {
        format!("http://{}{path}", self.http.lock().expect("lock")[instance % INSTANCES])
    }

    fn kill_9_and_restart(&self, instance: usize) {
        let old = self.servers.lock().expect("lock")[instance].take().expect("running");
        old.kill_9();
        let fresh = Server::start_with(self.dirs[instance].path(), &self.args[instance]);
        self.http.lock().expect("lock")[instance] = fresh.http.clone();
        self.servers.lock().expect("lock")[instance] = Some(fresh);
    }
}

fn token(name: &str) -> Value {
    let now = tally_core::Timestamp::from_system_time(std::time::SystemTime::now());
    json!({"token": name, "generation_time": now.to_string()})
}

/// Sends one add until it is acknowledged or definitely refused, moving to the next instance
/// after every failed attempt. Returns whether it was acknowledged.
async fn add_until_answered(
    client: &reqwest::Client,
    cluster: &Cluster,
    first: usize,
    counter: usize,
    body: &Value,
) -> bool {
    for attempt in 0..200 {
        let url = cluster.url(first + attempt, &format!("/v1/namespaces/cluster/counters/c{counter}/add"));
        match client.post(&url).json(body).timeout(Duration::from_secs(10)).send().await {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) if r.status().is_client_error() => {
                panic!("add refused: {} {}", r.status(), r.text().await.unwrap_or_default())
            }
            // 5xx, connection refused (a killed instance), timeouts: not answered, retry elsewhere.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    false
}

/// memcached, three instances on the keyspace `<namespace>_<pid>` of the test node, a client
/// whose requests give up after 10 s (a stuck request fails a test instead of hanging it), and
/// the namespace `<namespace>` of `counter_type`.
async fn cluster_with_namespace(
    namespace: &str,
    counter_type: &str,
    routed: bool,
) -> (Memcached, Arc<Cluster>, reqwest::Client) {
    let node = std::env::var("TALLY_TEST_CASSANDRA").expect(
        "set TALLY_TEST_CASSANDRA=127.0.0.1:9042 after `bash scripts/cassandra.sh start` (scripts/test.sh does)",
    );
    let memcached = Memcached::start();
    let args = vec![
        "--store".to_owned(),
        format!("cassandra://{node}/{namespace}_{}", std::process::id()),
        "--cache".to_owned(),
        format!("memcached://127.0.0.1:{}", memcached.port),
    ];
    let cluster = Arc::new(Cluster::start(args, routed));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let created = client
        .put(cluster.url(0, &format!("/v1/namespaces/{namespace}")))
        .json(&json!({ "counter_type": counter_type }))
        .send()
        .await
        .expect("create namespace");
    assert!(created.status().is_success(), "{}", created.text().await.unwrap_or_default());
    (memcached, cluster, client)
}

/// A counter's count as one instance reads it.
async fn count(client: &reqwest::Client, cluster: &Cluster, instance: usize, path: &str) -> Value {
    let got: Value =
        client.get(cluster.url(instance, path)).send().await.expect("get").json().await.expect("json");
    got["count"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routed_instances_on_cassandra_and_memcached_converge_exactly_through_kill_9_and_a_memcached_restart()
 {
    let (mut memcached, cluster, client) = cluster_with_namespace("cluster", "eventual", true).await;

    let done = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<HashMap<usize, i64>>> = Arc::default();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (cluster, client, done, acked) =
                (cluster.clone(), client.clone(), done.clone(), acked.clone());
            tokio::spawn(async move {
                for i in 0..ADDS_PER_WORKER {
                    let counter = (w * 7 + i) % COUNTERS;
                    let delta = i64::try_from(1 + (w + i) % 5).expect("small");
                    let body = json!({"delta": delta, "idempotency_token": token(&format!("w{w}-{i}"))});
                    // Every attempt goes to another instance than the one before, and the
                    // first attempt is sent twice (to two instances) to exercise deduplication.
                    let first = w + i;
                    let answered = add_until_answered(&client, &cluster, first, counter, &body).await;
                    assert!(answered, "add w{w}-{i} was never answered");
                    let again = add_until_answered(&client, &cluster, first + 1, counter, &body).await;
                    assert!(again, "the retry of w{w}-{i} was never answered");
                    *acked.lock().expect("lock").entry(counter).or_default() += delta;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // The nemesis: a third of the way in, kill -9 one instance and bring it back; two thirds
    // of the way in, restart memcached.
    let total = (WORKERS * ADDS_PER_WORKER) as u64;
    while done.load(Ordering::Relaxed) < total / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.kill_9_and_restart(1)).await.expect("restart instance");
    while done.load(Ordering::Relaxed) < 2 * total / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    memcached.restart();
    for w in workers {
        w.await.expect("worker");
    }
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.values().count(), COUNTERS);

    // Convergence: every instance's eventual read reaches exactly the acknowledged sum. The
    // default write window (5 s, 1 s skew) sets how long that takes; the bound is generous.
    let deadline = Instant::now() + Duration::from_secs(60);
    for instance in 0..INSTANCES {
        for (counter, want) in &acked {
            let path = format!("/v1/namespaces/cluster/counters/c{counter}");
            loop {
                let got = count(&client, &cluster, instance, &path).await;
                if got == json!(want) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "instance {instance} c{counter}: {got} never reached {want}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Routing was in force: instances handed triggers to the counters' owners.
    let forwarded = cluster.metric(&client, "tally_rollup_triggers_forwarded_total").await;
    let received = cluster.metric(&client, "tally_rollup_triggers_received_total").await;
    assert!(forwarded > 0.0 && received > 0.0, "forwarded {forwarded}, received {received}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_counters_in_memcached_are_shared_by_every_instance() {
    let (_memcached, cluster, client) = cluster_with_namespace("fast", "best_effort", false).await;
    let adds = (0..90).map(|i| {
        let (client, url) = (client.clone(), cluster.url(i, "/v1/namespaces/fast/counters/views/add"));
        async move {
            let response = client.post(url).json(&json!({"delta": 2})).send().await.expect("add");
            (response.status(), response.text().await.unwrap_or_default())
        }
    });
    let answers = futures::future::join_all(adds).await;
    let failed: Vec<_> = answers.iter().filter(|(status, _)| !status.is_success()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    for instance in 0..INSTANCES {
        let got = count(&client, &cluster, instance, "/v1/namespaces/fast/counters/views").await;
        assert_eq!(got, json!(180), "instance {instance}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_adds_and_reads_carry_on_while_memcached_is_paused() {
    let (memcached, cluster, client) = cluster_with_namespace("durable", "accurate", false).await;

    // A paused memcached accepts connections and never answers: the slow case.
    memcached.signal("-STOP");
    for i in 0..30 {
        let body = json!({"delta": 1, "idempotency_token": token(&format!("paused-{i}"))});
        let url = cluster.url(i, "/v1/namespaces/durable/counters/orders/add");
        // UNAVAILABLE is the store's (a lightweight transaction of the one Cassandra node can
        // time out on this busy machine), not memcached's: retried with the same token, as
        // the README tells clients to; the counts below show each add landed once.
        let mut attempts = 0;
        let (status, text) = loop {
            attempts += 1;
            let r = client.post(url.clone()).json(&body).send().await.expect("add");
            let (status, text) = (r.status(), r.text().await.unwrap_or_default());
            if status != 503 || attempts == 5 {
                break (status, text);
            }
        };
        assert!(
            status.is_success(),
            "add {i} failed with memcached paused after {attempts} attempts: {text}"
        );
    }
    for instance in 0..INSTANCES {
        let got = count(&client, &cluster, instance, "/v1/namespaces/durable/counters/orders").await;
        assert_eq!(got, json!(30), "instance {instance} with memcached paused");
    }
    memcached.signal("-CONT");
}
