//! Crash test with a real child process: every acknowledged add survives `kill -9`, retries
//! after the restart count once, and counters written before the crash converge without being
//! read or written again.
//!
//! The child is this test binary itself, started with `--ignored --exact crash::child_process`:
//! it serves a line protocol on stdin/stdout over an engine on the embedded store.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant, SystemTime};

use tally_core::{
    Clock, CounterKey, CounterType, IdempotencyToken, Namespace, NamespaceConfig, SystemClock, Timestamp,
};
use tally_engine::{Engine, EngineError, EngineOptions, LocalBestEffort, LocalCache};
use tally_store_fjall::{FjallOptions, FjallStore};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

const DIR_VAR: &str = "TALLY_CRASH_TEST_DIR";
const NAMESPACE: &str = "crash";

fn namespace_config() -> NamespaceConfig {
    NamespaceConfig {
        counter_type: CounterType::Eventual,
        // Wide enough that retries after the restart are still inside the window.
        accept_limit: Duration::from_secs(10),
        clock_skew: Duration::from_millis(500),
        coalesce: Duration::from_millis(200),
        ..Default::default()
    }
}

/// The child: `add COUNTER DELTA TOKEN MICROS` answers `@ack TOKEN new|dup` or `@err TOKEN ...`;
/// `peek COUNTER` answers `@peek COUNTER COUNT|none` from the stored checkpoint, without
/// triggering anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the crash test, which starts it itself"]
async fn child_process() {
    let dir = std::env::var(DIR_VAR).expect("the crash test sets the data directory");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = FjallStore::open(dir.as_ref(), clock.clone(), FjallOptions::default()).expect("store opens");
    let engine = Engine::open(
        Arc::new(store),
        Arc::new(LocalCache::new(1_000)),
        Arc::new(LocalBestEffort::default()),
        clock,
        EngineOptions::default(),
    )
    .await
    .expect("engine opens");
    let ns = Namespace::new(NAMESPACE).expect("ns");
    match engine.create_namespace(&ns, namespace_config()).await {
        Ok(_) | Err(EngineError::NamespaceExists(_)) => {}
        Err(e) => panic!("cannot create the namespace: {e}"),
    }
    let _background = engine.start_background(CancellationToken::new());
    println!("@ready");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let engine = engine.clone();
        tokio::spawn(async move { println!("{}", serve(&engine, &line).await) });
    }
}

async fn serve(engine: &Engine, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let ns = Namespace::new(NAMESPACE).expect("ns");
    let counter = |name: &str| CounterKey::new(ns.clone(), tally_core::CounterName::new(name).expect("name"));
    match words.as_slice() {
        ["add", name, delta, token, micros] => {
            let time = Timestamp::from_micros(micros.parse().expect("micros"));
            let token_value = IdempotencyToken::new(token, time).expect("token");
            match engine.add_count(&counter(name), delta.parse().expect("delta"), Some(token_value)).await {
                Ok(m) => format!("@ack {token} {}", if m.applied { "new" } else { "dup" }),
                Err(e) => format!("@err {token} {} {e}", e.code()),
            }
        }
        ["peek", name] => match engine.stored_checkpoint(&counter(name)).await {
            Ok(Some(cp)) => format!("@peek {name} {}", cp.count),
            Ok(None) => format!("@peek {name} none"),
            Err(e) => format!("@peek {name} error {e}"),
        },
        _ => format!("@unknown {line}"),
    }
}

struct ChildServer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl ChildServer {
    fn start(dir: &std::path::Path) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["crash::child_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("child starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            // libtest prints `test crash::child_process ... ` before the first answer, on the same line.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some(at) = line.find('@') else { continue };
                if tx.send(line[at..].to_owned()).is_err() {
                    break;
                }
            }
        });
        let server = Self { child, stdin, lines };
        assert_eq!(server.next(Duration::from_secs(60)).as_deref(), Some("@ready"));
        server
    }

    fn next(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("child reads stdin");
    }
}

#[derive(Clone)]
struct Add {
    counter: String,
    delta: i64,
    token: String,
    micros: i64,
}

impl Add {
    fn line(&self) -> String {
        format!("add {} {} {} {}", self.counter, self.delta, self.token, self.micros)
    }
}

fn now_micros() -> i64 {
    Timestamp::from_system_time(SystemTime::now()).as_micros()
}

fn adds(prefix: &str, counters: usize, n: usize) -> Vec<Add> {
    (0..n)
        .map(|i| Add {
            counter: format!("{prefix}{}", i % counters),
            delta: (i as i64 * 7919) % 100 - 30,
            token: format!("{prefix}-tok-{i}"),
            micros: now_micros(),
        })
        .collect()
}

fn expected(adds: &[Add]) -> BTreeMap<String, i64> {
    let mut sums = BTreeMap::new();
    for a in adds {
        *sums.entry(a.counter.clone()).or_insert(0) += a.delta;
    }
    sums
}

/// Collects `@ack`/`@err` answers for `n` adds; panics on an error or a timeout.
fn collect_acks(server: &ChildServer, n: usize) -> HashMap<String, String> {
    let mut acks = HashMap::new();
    while acks.len() < n {
        let line = server.next(Duration::from_secs(60)).expect("an answer for every add");
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("@ack"), Some(token), Some(kind)) => acks.insert(token.to_owned(), kind.to_owned()),
            _ => panic!("unexpected answer: {line}"),
        };
    }
    acks
}

#[test]
fn acknowledged_adds_survive_kill_9_and_retries_count_once() {
    let dir = tempfile::tempdir().expect("temp dir");

    // Phase A: counters that are written, fully acknowledged, and then never touched again.
    let mut first = ChildServer::start(dir.path());
    let untouched = adds("u", 5, 200);
    for a in &untouched {
        first.send(&a.line());
    }
    assert!(collect_acks(&first, untouched.len()).values().all(|k| k == "new"));

    // Phase B: a burst of adds, killed with SIGKILL while many are in flight.
    let burst = adds("r", 10, 3_000);
    let lines: Vec<String> = burst.iter().map(Add::line).collect();
    let mut stdin = first.stdin;
    // Hands stdin back when done: closing it would end the child before it answers.
    let writer = std::thread::spawn(move || {
        for line in lines {
            if writeln!(stdin, "{line}").is_err() {
                break; // the child is gone
            }
        }
        stdin
    });
    let mut acked = Vec::new();
    while acked.len() < 300 {
        let line = first.lines.recv_timeout(Duration::from_secs(60)).expect("acks keep coming");
        let token = line.strip_prefix("@ack ").and_then(|rest| rest.split(' ').next()).expect("an ack");
        acked.push(token.to_owned());
    }
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");
    drop(writer.join().expect("writer thread"));
    assert!(acked.len() < burst.len(), "the kill must interrupt the burst for this test to mean anything");

    // Phase C: restart; resend every add of the burst with its token.
    let mut second = ChildServer::start(dir.path());
    let started = Instant::now();
    for a in &burst {
        second.send(&a.line());
    }
    let answers = collect_acks(&second, burst.len());
    for token in &acked {
        assert_eq!(answers[token], "dup", "acknowledged add {token} was lost in the crash");
    }
    let resent_new = answers.values().filter(|k| *k == "new").count();
    eprintln!(
        "acknowledged before the kill: {}, applied only by the retry: {resent_new}, retried in {:?}",
        acked.len(),
        started.elapsed()
    );

    // Every counter converges to the sum of its adds, each counted once; the untouched ones
    // without being read or written after the restart (peek reads the store only).
    let mut want = expected(&untouched);
    want.extend(expected(&burst));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = BTreeMap::new();
    loop {
        for counter in want.keys() {
            second.send(&format!("peek {counter}"));
        }
        for _ in 0..want.len() {
            let line = second.next(Duration::from_secs(30)).expect("peek answer");
            let mut words = line.split(' ').skip(1);
            let (name, value) = (words.next().expect("name"), words.next().expect("value"));
            seen.insert(name.to_owned(), value.parse::<i64>().ok());
        }
        let converged = want.iter().all(|(name, sum)| seen.get(name) == Some(&Some(*sum)));
        if converged {
            break;
        }
        assert!(Instant::now() < deadline, "no convergence: want {want:?}, stored checkpoints {seen:?}");
        // A real process on the real clock: give the rollup window time to pass.
        std::thread::sleep(Duration::from_millis(250));
    }
    second.child.kill().expect("stop the child");
    let _ = second.child.wait();
}
