//! `tally bench`: a load generator for Tally's three front doors.
//!
//! `--concurrency` workers each keep one request (or, on RESP, one pipeline) in flight, spread
//! over `--connections` connections, until `--duration` passes or `--requests` are sent. Every
//! latency goes into an HDR histogram per operation. A progress bar runs on stderr; the result
//! is printed as text or, with `--json`, as one JSON object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};
use serde_json::json;
use tally_client::{Add, Client, ConnectOptions, Door, Token};
use tally_core::Operation;
use tally_core::Timestamp;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Keys {
    /// Every key equally likely.
    Uniform,
    /// A few hot keys take most requests (Zipf, exponent `--zipf-exponent`).
    Zipf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Add,
    AddAndGet,
    Get,
    Clear,
}

impl Op {
    /// The API operation it sends, whose name the report prints.
    fn operation(self) -> Operation {
        match self {
            Op::Add => Operation::AddCount,
            Op::AddAndGet => Operation::AddAndGetCount,
            Op::Get => Operation::GetCount,
            Op::Clear => Operation::ClearCount,
        }
    }
}

#[derive(Args)]
pub struct BenchArgs {
    /// Front door to drive: grpc, http or resp.
    #[arg(long, default_value = "grpc")]
    protocol: Door,
    /// Server address [default: 127.0.0.1:7090 (gRPC), 127.0.0.1:7080 (HTTP), 127.0.0.1:7379 (RESP)].
    #[arg(long)]
    addr: Option<String>,
    /// Connections to open (gRPC channels, HTTP pool size, RESP connections).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests (RESP: pipelines) in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// RESP only: adds per pipeline (with `--mix add=1`).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// gRPC and HTTP only: adds per `BatchAddCount` request (with `--mix add=1`); 1 sends
    /// plain `AddCount`.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Namespace the counters are in (it must exist).
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Distinct counters.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// How keys are picked.
    #[arg(long, value_enum, default_value = "uniform")]
    distribution: Keys,
    /// Exponent of the Zipf distribution.
    #[arg(long, default_value_t = 1.0)]
    zipf_exponent: f64,
    /// Operation mix as weights, e.g. `add=90,get=10` (ops: add, add-and-get, get, clear).
    #[arg(long, default_value = "add=100")]
    mix: String,
    /// Send an idempotency token with every mutation.
    #[arg(long)]
    tokens: bool,
    /// How long to run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Stop after this many requests instead.
    #[arg(long)]
    requests: Option<u64>,
    /// Cap the total rate (requests per second); unlimited when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse_mix(text: &str) -> anyhow::Result<Vec<(Op, u32)>> {
    let mut mix = Vec::new();
    for part in text.split(',') {
        let (name, weight) =
            part.split_once('=').with_context(|| format!("mix entry {part:?} is not op=weight"))?;
        let op = match name.trim() {
            "add" => Op::Add,
            "add-and-get" => Op::AddAndGet,
            "get" => Op::Get,
            "clear" => Op::Clear,
            other => anyhow::bail!("unknown op {other:?} in --mix; use add, add-and-get, get, clear"),
        };
        mix.push((op, weight.trim().parse().with_context(|| format!("weight of {name} is not a number"))?));
    }
    anyhow::ensure!(mix.iter().any(|(_, w)| *w > 0), "--mix needs a positive weight");
    Ok(mix)
}

struct Picker {
    rng: SmallRng,
    zipf: Option<Zipf<f64>>,
    keys: u64,
    mix: Vec<(Op, u32)>,
    total: u32,
}

impl Picker {
    fn key(&mut self) -> u64 {
        match &self.zipf {
            Some(z) => (z.sample(&mut self.rng) as u64).saturating_sub(1).min(self.keys - 1),
            None => self.rng.random_range(0..self.keys),
        }
    }

    fn op(&mut self) -> Op {
        let mut roll = self.rng.random_range(0..self.total);
        for (op, w) in &self.mix {
            if roll < *w {
                return *op;
            }
            roll -= w;
        }
        self.mix[0].0
    }
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// Sends one request: one operation, or with several, one batch of adds (a `BatchAddCount`,
/// a `batchAdd` or a Redis pipeline). A failure is named by [`ClientError::name`]; in a batch,
/// by its first refused add.
async fn send(
    client: &Client,
    ns: &str,
    ops: &[(Op, u64)],
    token: Option<String>,
) -> Result<(), &'static str> {
    let name = |i: usize| format!("k{}", ops[i].1);
    let token_of = |i: usize| token.as_ref().map(|t| Token::at(format!("{t}-{i}"), now()));
    if ops.len() > 1 {
        let (names, tokens): (Vec<_>, Vec<_>) = (0..ops.len()).map(|i| (name(i), token_of(i))).unzip();
        let adds: Vec<Add<'_>> = names
            .iter()
            .zip(&tokens)
            .map(|(counter, token)| Add { namespace: ns, counter, delta: 1, token: token.as_ref() })
            .collect();
        let results = client.batch_add(&adds).await.map_err(|e| e.name())?;
        return results.into_iter().find_map(Result::err).map_or(Ok(()), |e| Err(e.name()));
    }
    let (counter, token) = (name(0), token.map(|t| Token::at(t, now())));
    let result = match ops[0].0 {
        Op::Add => client.add(ns, &counter, 1, token.as_ref()).await.map(drop),
        Op::AddAndGet => client.add_and_get(ns, &counter, 1, token.as_ref()).await.map(drop),
        Op::Get => client.get(ns, &counter).await.map(drop),
        Op::Clear => client.clear(ns, &counter, token.as_ref()).await.map(drop),
    };
    result.map_err(|e| e.name())
}

async fn connect(args: &BenchArgs) -> anyhow::Result<Vec<Client>> {
    let addr = args.addr.as_deref().unwrap_or(args.protocol.default_addr());
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let client = Client::connect(args.protocol, addr, &ConnectOptions::default())
            .await
            .with_context(|| format!("cannot reach {addr} ({})", args.protocol))?;
        clients.push(client);
    }
    Ok(clients)
}

struct WorkerResult {
    latencies: BTreeMap<Op, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mix = parse_mix(&args.mix)?;
    anyhow::ensure!(args.keys > 0, "--keys must be at least 1");
    anyhow::ensure!(args.pipeline >= 1, "--pipeline must be at least 1");
    anyhow::ensure!(
        args.pipeline == 1 || (args.protocol == Door::Resp && mix.iter().all(|(op, _)| *op == Op::Add)),
        "--pipeline applies to --protocol resp with --mix add=1"
    );
    anyhow::ensure!(
        args.batch >= 1
            && (args.batch == 1 || (args.protocol != Door::Resp && mix.iter().all(|(op, _)| *op == Op::Add))),
        "--batch applies to --protocol grpc or http with --mix add=1"
    );
    anyhow::ensure!(args.batch <= 1000, "--batch is at most 1000 (the server's limit)");
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of requests per second, not {rate}"
        );
    }
    let clients = connect(&args).await?;
    let sent = Arc::new(AtomicU64::new(0));
    let limit = args.requests.unwrap_or(u64::MAX);
    let per_request = per_request(&args);
    let deadline =
        Instant::now() + if args.requests.is_some() { Duration::from_secs(24 * 3600) } else { args.duration };
    let progress = if args.quiet || args.json {
        indicatif::ProgressBar::hidden()
    } else if let Some(n) = args.requests {
        indicatif::ProgressBar::new(n)
    } else {
        indicatif::ProgressBar::new(args.duration.as_secs().max(1))
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );

    let started = Instant::now();
    let pacer = args.rate.map(|rate| pace(rate, deadline)).transpose()?;
    let mut workers = Vec::new();
    for w in 0..args.concurrency.max(1) {
        let client = clients[w % clients.len()].clone();
        let (sent, ns, mix) = (sent.clone(), args.namespace.clone(), mix.clone());
        let zipf = match args.distribution {
            Keys::Zipf => {
                Some(Zipf::new(args.keys as f64, args.zipf_exponent).context("invalid zipf parameters")?)
            }
            Keys::Uniform => None,
        };
        let (tokens, pipeline, keys) = (args.tokens, per_request as usize, args.keys);
        let pacer = pacer.clone();
        let total = mix.iter().map(|(_, w)| w).sum();
        workers.push(tokio::spawn(async move {
            let mut picker = Picker { rng: SmallRng::seed_from_u64(w as u64), zipf, keys, mix, total };
            let mut result = WorkerResult { latencies: BTreeMap::new(), errors: BTreeMap::new() };
            let mut seq = 0u64;
            while Instant::now() < deadline && sent.fetch_add(per_request, Ordering::Relaxed) < limit {
                if let Some(pacer) = &pacer {
                    match pacer.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => break, // the pacer stopped at the deadline
                    }
                }
                let ops: Vec<(Op, u64)> = (0..pipeline).map(|_| (picker.op(), picker.key())).collect();
                seq += 1;
                let token = tokens.then(|| format!("bench-{w}-{seq}-{}", started.elapsed().as_nanos()));
                let t0 = Instant::now();
                let outcome = send(&client, &ns, &ops, token).await;
                let micros = t0.elapsed().as_micros() as u64;
                match outcome {
                    Ok(()) => {
                        let h = result.latencies.entry(ops[0].0).or_insert_with(|| {
                            Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
                        });
                        let _ = h.record(micros.max(1));
                    }
                    Err(name) => *result.errors.entry(name.to_owned()).or_default() += 1,
                }
            }
            result
        }));
    }
    let ticker = {
        let (progress, sent, requests) = (progress.clone(), sent.clone(), args.requests);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = sent.load(Ordering::Relaxed);
                match requests {
                    Some(_) => progress.set_position(done),
                    None => progress.set_position(started.elapsed().as_secs()),
                }
                progress.set_message(format!("{:.0} ops/s", done as f64 / started.elapsed().as_secs_f64()));
            }
        })
    };
    let mut latencies: BTreeMap<Op, Histogram<u64>> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for worker in workers {
        let r = worker.await?;
        for (op, h) in r.latencies {
            latencies
                .entry(op)
                .or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"))
                .add(h)?;
        }
        for (code, n) in r.errors {
            *errors.entry(code).or_default() += n;
        }
    }
    let elapsed = started.elapsed();
    ticker.abort();
    progress.finish_and_clear();
    match report(&args, &latencies, &errors, elapsed) {
        // `tally bench … | head` closed the pipe: what was wanted was printed.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        printed => printed?,
    }
    let ok = latencies.values().any(|h| !h.is_empty());
    anyhow::ensure!(
        ok || errors.is_empty(),
        "every request failed ({errors:?}): is the server up, and the namespace there?"
    );
    Ok(())
}

/// With `--rate`: permits for `rate` requests per second, handed out evenly until `deadline`
/// (or until every worker is gone) by a thread of its own. Workers sleeping on tokio's timers
/// instead all woke on the same millisecond tick, so a capped rate arrived in bursts of a
/// millisecond's requests (28 at once at 28,000/s), and the latencies measured the queueing of
/// each burst rather than the server at that rate.
fn pace(rate: f64, deadline: Instant) -> anyhow::Result<Arc<tokio::sync::Semaphore>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    let handed = Arc::downgrade(&permits);
    // Naps shorter than the gap between two requests buy nothing, and the kernel's timer
    // slack (50 µs) rounds the shortest up anyway.
    let gap = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let nap = gap.clamp(Duration::from_micros(20), Duration::from_millis(1));
    std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            let started = Instant::now();
            let mut given = 0u64;
            while let Some(permits) = handed.upgrade() {
                if Instant::now() >= deadline {
                    permits.close();
                    return;
                }
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                permits.add_permits((due - given) as usize);
                given = due;
                drop(permits);
                std::thread::sleep(nap);
            }
        })
        .context("cannot start the thread that paces --rate")?;
    Ok(permits)
}

/// Counter operations per request: the RESP pipeline, or the adds of a batch.
fn per_request(args: &BenchArgs) -> u64 {
    match args.protocol {
        Door::Resp => args.pipeline as u64,
        Door::Grpc | Door::Http => args.batch as u64,
    }
}

fn report(
    args: &BenchArgs,
    latencies: &BTreeMap<Op, Histogram<u64>>,
    errors: &BTreeMap<String, u64>,
    elapsed: Duration,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let protocol = args.protocol.as_str();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let per_request = per_request(args);
    let ok: u64 = latencies.values().map(|h| h.len() * per_request).sum();
    let failed: u64 = errors.values().sum::<u64>() * per_request;
    let throughput = ok as f64 / elapsed.as_secs_f64();
    let ops: serde_json::Map<String, serde_json::Value> = latencies
        .iter()
        .map(|(op, h)| {
            (op.operation().as_str().to_owned(), json!({
                "requests": h.len() * per_request,
                "p50_ms": ms(h, 0.5), "p90_ms": ms(h, 0.9), "p99_ms": ms(h, 0.99), "p999_ms": ms(h, 0.999),
                "max_ms": h.max() as f64 / 1000.0,
            }))
        })
        .collect();
    if args.json {
        let value = json!({
            "protocol": protocol,
            "connections": args.connections, "concurrency": args.concurrency, "pipeline": args.pipeline, "batch": args.batch,
            "keys": args.keys, "distribution": format!("{:?}", args.distribution).to_lowercase(),
            "tokens": args.tokens, "mix": args.mix,
            "seconds": elapsed.as_secs_f64(), "ok": ok, "errors": errors, "failed": failed,
            "throughput_per_s": throughput, "operations": ops,
        });
        return writeln!(out, "{value}");
    }
    writeln!(
        out,
        "{protocol}: {ok} ok, {failed} failed in {:.2}s: {throughput:.0} ops/s ({} connections, {} in flight, pipeline {}, batch {})",
        elapsed.as_secs_f64(),
        args.connections,
        args.concurrency,
        args.pipeline,
        args.batch
    )?;
    for (op, h) in latencies {
        writeln!(
            out,
            "  {:<15} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
            op.operation().as_str(),
            ms(h, 0.5),
            ms(h, 0.9),
            ms(h, 0.99),
            ms(h, 0.999),
            h.max() as f64 / 1000.0
        )?;
    }
    for (code, n) in errors {
        writeln!(out, "  errors {code}: {n}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_weights_and_refuses_unknown_ops() {
        assert_eq!(parse_mix("add=90, get=10").expect("valid"), vec![(Op::Add, 90), (Op::Get, 10)]);
        assert!(parse_mix("incr=1").is_err());
        assert!(parse_mix("add=0").is_err());
    }

    #[test]
    fn zipf_keys_stay_in_range_and_favour_the_first() {
        let zipf = Some(Zipf::new(100.0, 1.0).expect("valid"));
        let mut p =
            Picker { rng: SmallRng::seed_from_u64(1), zipf, keys: 100, mix: vec![(Op::Add, 1)], total: 1 };
        let picks: Vec<u64> = (0..10_000).map(|_| p.key()).collect();
        assert!(picks.iter().all(|k| *k < 100));
        let hot = picks.iter().filter(|k| **k == 0).count();
        let cold = picks.iter().filter(|k| **k == 99).count();
        assert!(hot > 10 * cold.max(1), "hot {hot} cold {cold}");
    }

    #[tokio::test]
    async fn the_pacer_never_runs_ahead_of_its_rate_and_stops_at_the_deadline() {
        let rate = 2_000.0;
        let started = Instant::now();
        let permits = pace(rate, started + Duration::from_millis(200)).expect("pacer");
        let mut taken = 0u64;
        while let Ok(permit) = permits.acquire().await {
            permit.forget();
            taken += 1;
            let allowed = started.elapsed().as_secs_f64() * rate + 1.0;
            assert!(taken as f64 <= allowed, "{taken} sends after {:?}", started.elapsed());
        }
        assert!(Instant::now() >= started + Duration::from_millis(200), "closed before the deadline");
        assert!(taken > 0, "no send was let through");
    }
}
