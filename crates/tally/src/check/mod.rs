//! `tally check`: a counter workload in the spirit of Jepsen's, with a nemesis.
//!
//! Clients ([`workload`]) send adds and clears with idempotency tokens through all three front doors, each
//! retried with the same token until it is acknowledged or definitely refused, and log how
//! every operation ended ([`history`]). Meanwhile the [`nemesis`] kills and pauses Tally
//! instances, restarts memcached and pauses or restarts the Cassandra node, and readers read
//! the add-only counters throughout, each read judged by [`live`] against the operations
//! around it (no transient duplicate; where the counter type promises it, never behind an
//! acknowledged add and never backwards). Then every fault is healed, the checker waits for
//! the counts to converge, and reads every counter from every instance against the [`model`]:
//! nothing lost, nothing counted twice ([`report`]).

mod cluster;
mod doors;
mod history;
mod live;
mod model;
mod nemesis;
mod report;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use cluster::{CassandraNode, Instance, Memcached, free_port};
use doors::{Counter, Doors, Endpoint};
use history::{Door, History, Op};
use model::{Possible, Verdict};
use nemesis::{Fault, Targets};
use report::{Report, Run};
use workload::{Shared, client, now_ms, reader};

/// Readers reading counters while the clients write.
const READERS: usize = 2;

/// Options of `tally check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The store: `embedded` (one instance, its data under --dir) or a Cassandra URL with a
    /// keyspace of its own, e.g. `cassandra://127.0.0.1:9042/check1`.
    #[arg(long, default_value = "embedded")]
    store: String,
    /// Tally instances (default: 1 on the embedded store, 3 on Cassandra).
    #[arg(long)]
    instances: Option<usize>,
    /// How long the clients and the nemesis run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 12)]
    clients: usize,
    /// Counters, alternately `accurate` and `eventual`; half of each kind also get clears.
    #[arg(long, default_value_t = 16)]
    counters: usize,
    /// Faults to inject, comma-separated (default: every one the setup allows).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<Fault>,
    /// Mean time between faults (each kind comes once per round, in a random order).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    fault_interval: Duration,
    /// The namespaces' `accept_limit`: how long a token may be retried.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    accept_limit: Duration,
    /// The Cassandra node's pid file, for `pause-cassandra` (scripts/cassandra.sh writes
    /// target/cassandra/cassandra.pid).
    #[arg(long)]
    cassandra_pid_file: Option<PathBuf>,
    /// A shell command that restarts the Cassandra node keeping its data, for
    /// `restart-cassandra` (e.g. `bash scripts/cassandra.sh restart`).
    #[arg(long)]
    cassandra_restart: Option<String>,
    /// Where data, server logs and the history go (default: a new directory under the
    /// system's temporary directory, removed after a passing run).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed for the clients' and the nemesis' choices.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Send tokens without a generation time, as clients that restamp every attempt do: the
    /// server's clock fixes it on the first arrival and retries are recognised by the token
    /// alone. Clears are not sent (their order against adds would depend on server times the
    /// checker cannot know for unanswered attempts).
    #[arg(long)]
    token_only: bool,
}

/// What the flags ask for, checked: a run's shape before anything starts.
struct Plan {
    instances: usize,
    faults: Vec<Fault>,
    seed: u64,
    dir: PathBuf,
}

impl Plan {
    fn of(args: &CheckArgs) -> anyhow::Result<Self> {
        let embedded = args.store == "embedded";
        if !embedded && !args.store.starts_with("cassandra://") {
            bail!("--store must be `embedded` or a cassandra:// URL, not {:?}", args.store);
        }
        let instances = args.instances.unwrap_or(if embedded { 1 } else { 3 });
        if embedded && instances != 1 {
            bail!(
                "the embedded store serves one instance; use a cassandra:// store for --instances {instances}"
            );
        }
        if instances == 0 || args.clients == 0 || args.counters == 0 {
            bail!("--instances, --clients and --counters must be at least 1");
        }
        let mut faults = args.faults.clone();
        if faults.is_empty() {
            faults = vec![Fault::Kill, Fault::PauseTally, Fault::Memcached];
            if args.cassandra_pid_file.is_some() {
                faults.push(Fault::PauseCassandra);
            }
            if args.cassandra_restart.is_some() {
                faults.push(Fault::RestartCassandra);
            }
        }
        if faults.contains(&Fault::PauseCassandra) && (embedded || args.cassandra_pid_file.is_none()) {
            bail!("the pause-cassandra fault needs a cassandra:// store and --cassandra-pid-file");
        }
        if faults.contains(&Fault::RestartCassandra) && (embedded || args.cassandra_restart.is_none()) {
            bail!("the restart-cassandra fault needs a cassandra:// store and --cassandra-restart");
        }
        let seed = args.seed.unwrap_or_else(|| now_ms().unsigned_abs());
        let dir = args.dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("tally-check-{}-{seed}", std::process::id()))
        });
        Ok(Self { instances, faults, seed, dir })
    }
}

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let plan = Plan::of(&args)?;
    let dir = &plan.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let history_path = dir.join("history.jsonl");
    let history = History::create(&history_path)?;
    let memcached = Memcached::start().await?;
    let (endpoints, servers) = start_instances(&args, &plan, memcached.port).await?;
    create_namespaces(&endpoints[0], args.accept_limit).await?;
    let shared = Arc::new(Shared {
        endpoints: endpoints.clone(),
        counters: counters(&args),
        history,
        accept_limit: args.accept_limit,
        token_only: args.token_only,
    });
    println!(
        "tally check: {} instance(s) on {}, {} clients, {} counters, faults {:?}, for {:?}; work in {}",
        plan.instances,
        args.store,
        args.clients,
        args.counters,
        plan.faults,
        args.duration,
        dir.display()
    );
    let mut targets = Targets {
        instances: servers,
        memcached: Some(memcached),
        cassandra: args
            .cassandra_pid_file
            .clone()
            .map(|pid_file| CassandraNode { pid_file, restart_command: args.cassandra_restart.clone() }),
    };
    let began = Instant::now();
    let injected = run_workload(&args, &plan, shared.clone(), &mut targets, began).await?;
    let ran = began.elapsed();
    let last_op = Instant::now();
    println!(
        "[{:6.1}s] workload over, every fault healed; waiting for the counts to converge",
        ran.as_secs_f64()
    );

    let shared = Arc::into_inner(shared).context("clients still hold the history")?;
    let (ops, live_reads) = shared.history.finish()?;
    let possible = possible_counts(&ops, shared.counters.len());
    let live = judge_live(&ops, &live_reads, &shared.counters, plan.instances);
    // Eventual counts are exact within accept_limit + clock_skew + coalesce (defaults 1 s
    // each); the rest is room for rollups after restarts.
    let converge_by = last_op + args.accept_limit + Duration::from_secs(45);
    let (reads, converged) = converge(&endpoints, &shared.counters, &possible, converge_by).await?;
    let converged_after = converged.then(|| last_op.elapsed().as_secs_f64());
    let mut report = Report::new(
        Run {
            store: args.store.clone(),
            instances: plan.instances,
            clients: args.clients,
            seed: plan.seed,
            ran,
        },
        &ops,
        injected,
        &shared.counters,
        &reads,
        &possible,
        converged_after,
    );
    report.judge_live(live_reads.len(), live);

    for instance in &mut targets.instances {
        instance.kill_9().await?;
    }
    if let Some(m) = targets.memcached.as_mut() {
        m.stop().await?;
    }
    if args.dir.is_some() || !report.passed() {
        report.history = Some(history_path);
    }
    publish(&args, &report, dir)
}

/// Prints the verdict; a failed check keeps its directory and fails the command, a passed
/// one removes the directory it made.
fn publish(args: &CheckArgs, report: &Report, dir: &std::path::Path) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        report.print();
    }
    if !report.passed() {
        bail!("the check failed; data, server logs and the history are in {}", dir.display());
    }
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

/// The counts each counter may read, given every operation of the history.
fn possible_counts(ops: &[Op], counters: usize) -> Vec<Possible> {
    let mut by_counter: Vec<Vec<&Op>> = vec![Vec::new(); counters];
    for op in ops {
        by_counter[op.counter].push(op);
    }
    by_counter.iter().map(|ops| model::possible_counts(ops)).collect()
}

/// Judges the reads made while the workload ran, counter by counter (the add-only ones).
/// `accurate` reads include every acknowledged add wherever they are served; `eventual` ones
/// only on one instance.
fn judge_live(
    ops: &[Op],
    reads: &[history::Read],
    counters: &[(Counter, bool)],
    instances: usize,
) -> Vec<live::LiveProblem> {
    let mut problems = Vec::new();
    for (c, (counter, clears)) in counters.iter().enumerate() {
        if *clears {
            continue;
        }
        let ops: Vec<&Op> = ops.iter().filter(|op| op.counter == c).collect();
        let reads: Vec<&history::Read> = reads.iter().filter(|r| r.counter == c).collect();
        let read_your_acks = counter.namespace == "check_accurate" || instances == 1;
        problems.extend(live::judge(&ops, &reads, live::Promises { read_your_acks }));
    }
    problems
}

/// Starts every instance on free ports, sharing the store and memcached (and, with several,
/// routing rollups to each other).
async fn start_instances(
    args: &CheckArgs,
    plan: &Plan,
    memcached_port: u16,
) -> anyhow::Result<(Vec<Endpoint>, Vec<Instance>)> {
    let endpoints: Vec<Endpoint> = (0..plan.instances)
        .map(|_| {
            Ok(Endpoint {
                http: format!("127.0.0.1:{}", free_port()?),
                grpc: format!("127.0.0.1:{}", free_port()?),
                resp: format!("127.0.0.1:{}", free_port()?),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let peers = endpoints.iter().map(|e| e.grpc.clone()).collect::<Vec<_>>().join(",");
    let mut servers = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let mut extra = vec!["--store".to_owned(), args.store.clone()];
        extra.extend(["--cache".to_owned(), format!("memcached://127.0.0.1:{memcached_port}")]);
        if plan.instances > 1 {
            extra.extend([
                "--peers".to_owned(),
                peers.clone(),
                "--advertise".to_owned(),
                endpoint.grpc.clone(),
            ]);
        }
        let mut instance = Instance::new(&plan.dir.join(format!("instance-{i}")), &extra, endpoint)?;
        instance.start().await?;
        servers.push(instance);
    }
    Ok((endpoints, servers))
}

/// The two namespaces the counters live in; the store must not hold them yet.
async fn create_namespaces(endpoint: &Endpoint, accept_limit: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    for (namespace, counter_type) in [("check_accurate", "accurate"), ("check_eventual", "eventual")] {
        let url = format!("http://{}/v1/namespaces/{namespace}", endpoint.http);
        let body = json!({"counter_type": counter_type, "accept_limit": humantime::format_duration(accept_limit).to_string()});
        let response = http.put(&url).json(&body).send().await.with_context(|| format!("PUT {url}"))?;
        if response.status() != reqwest::StatusCode::CREATED {
            bail!(
                "creating namespace {namespace} answered {} {} (the store must be new: a fresh keyspace or --dir)",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// The counters, alternately `accurate` and `eventual`, and whether each also gets clears.
fn counters(args: &CheckArgs) -> Vec<(Counter, bool)> {
    (0..args.counters)
        .map(|i| {
            let namespace = if i % 2 == 0 { "check_accurate" } else { "check_eventual" };
            let clears = i % 4 >= 2 && !args.token_only;
            (Counter { namespace: namespace.to_owned(), name: format!("c{i:03}") }, clears)
        })
        .collect()
}

/// Runs the clients and the nemesis for `--duration`, printing progress every 5 s, and
/// returns the faults injected once every client has stopped and every fault is healed.
async fn run_workload(
    args: &CheckArgs,
    plan: &Plan,
    shared: Arc<Shared>,
    targets: &mut Targets,
    began: Instant,
) -> anyhow::Result<Vec<nemesis::Injected>> {
    let stop = CancellationToken::new();
    let clients: Vec<_> = (0..args.clients)
        .map(|id| tokio::spawn(client(id, plan.seed, shared.clone(), stop.clone())))
        .chain((0..READERS).map(|id| tokio::spawn(reader(id, plan.seed, shared.clone(), stop.clone()))))
        .collect();
    let progress = {
        let (shared, stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                let s = began.elapsed().as_secs_f64();
                println!(
                    "[{s:6.1}s] {} operations, {} acknowledged",
                    shared.history.len(),
                    shared.history.acked()
                );
            }
        })
    };
    {
        let stop = stop.clone();
        let duration = args.duration;
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.cancel();
        });
    }
    let injected =
        nemesis::run(targets, &plan.faults, args.fault_interval, plan.seed, began, stop.clone()).await;
    stop.cancel();
    let injected = injected?;
    for c in clients {
        c.await.context("a client panicked")??;
    }
    let _ = progress.await;
    Ok(injected)
}

/// Reads every counter from every instance, through the doors in turn, until each read is a
/// count the history allows or `converge_by` passes; returns the last reads and whether they
/// all settled.
async fn converge(
    endpoints: &[Endpoint],
    counters: &[(Counter, bool)],
    possible: &[Possible],
    converge_by: Instant,
) -> anyhow::Result<(Vec<Vec<Option<i64>>>, bool)> {
    let mut doors = Doors::new(endpoints);
    let mut reads: Vec<Vec<Option<i64>>> = vec![vec![None; endpoints.len()]; counters.len()];
    let mut settled = vec![false; counters.len()];
    let mut round = 0usize;
    loop {
        for (c, (counter, _)) in counters.iter().enumerate() {
            if settled[c] {
                continue;
            }
            for (i, read) in reads[c].iter_mut().enumerate() {
                let door = Door::ALL[(round + c + i) % Door::ALL.len()];
                *read = doors.get(door, i, counter).await.ok();
            }
            settled[c] =
                reads[c].iter().all(|r| r.is_some_and(|v| model::judge(v, &possible[c]) == Verdict::Ok));
        }
        if settled.iter().all(|s| *s) {
            return Ok((reads, true));
        }
        if Instant::now() > converge_by {
            return Ok((reads, false));
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
