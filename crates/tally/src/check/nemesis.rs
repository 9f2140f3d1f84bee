//! The nemesis: faults injected one at a time while the clients run, each healed before the
//! next. Faults come in rounds that hold every kind once, in a random order, so a run of n
//! rounds sees each kind n times however long the faults take.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cluster::{CassandraNode, Instance, Memcached};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// `kill -9` a Tally instance, then start it again on the same data and ports.
    Kill,
    /// `SIGSTOP` a Tally instance for up to 2.5 s, then `SIGCONT`.
    PauseTally,
    /// Stop memcached (its contents are lost) and start a fresh one on the same port.
    Memcached,
    /// `SIGSTOP` the Cassandra node for up to 4 s, then `SIGCONT`.
    PauseCassandra,
    /// Restart the Cassandra node with the given command.
    RestartCassandra,
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    pub fault: Fault,
    /// The instance, for faults on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<usize>,
    /// Seconds into the run when it began.
    pub at_s: f64,
    /// How long until it was healed.
    pub held_s: f64,
}

/// What the nemesis breaks.
pub struct Targets {
    pub instances: Vec<Instance>,
    pub memcached: Option<Memcached>,
    pub cassandra: Option<CassandraNode>,
}

/// Injects faults from `faults` every `interval` (with jitter) until `stop`; returns them
/// healed, with what was done.
pub async fn run(
    targets: &mut Targets,
    faults: &[Fault],
    interval: Duration,
    seed: u64,
    began: Instant,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Injected>> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
    let mut done = Vec::new();
    let mut deck: Vec<Fault> = Vec::new();
    if faults.is_empty() {
        stop.cancelled().await;
        return Ok(done);
    }
    loop {
        let pause = interval.mul_f64(rng.random_range(0.5..1.5));
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
        if deck.is_empty() {
            deck = faults.to_vec();
            deck.shuffle(&mut rng);
        }
        let Some(fault) = deck.pop() else { break };
        let at = began.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut instance = None;
        let hold = |rng: &mut SmallRng, max_ms: u64| Duration::from_millis(rng.random_range(200..=max_ms));
        match fault {
            Fault::Kill => {
                let i = rng.random_range(0..targets.instances.len());
                instance = Some(i);
                targets.instances[i].kill_9().await?;
                tokio::time::sleep(hold(&mut rng, 1_500)).await;
                targets.instances[i].start().await?;
            }
            Fault::PauseTally => {
                let i = rng.random_range(0..targets.instances.len());
                instance = Some(i);
                targets.instances[i].signal("STOP").await?;
                tokio::time::sleep(hold(&mut rng, 2_500)).await;
                targets.instances[i].signal("CONT").await?;
            }
            Fault::Memcached => {
                if let Some(m) = targets.memcached.as_mut() {
                    m.stop().await?;
                    tokio::time::sleep(hold(&mut rng, 2_000)).await;
                    m.restart().await?;
                }
            }
            Fault::PauseCassandra => {
                if let Some(c) = &targets.cassandra {
                    c.signal("STOP").await?;
                    tokio::time::sleep(hold(&mut rng, 4_000)).await;
                    c.signal("CONT").await?;
                }
            }
            Fault::RestartCassandra => {
                if let Some(c) = &targets.cassandra {
                    c.restart().await?;
                }
            }
        }
        let injected = Injected { fault, instance, at_s: at, held_s: start.elapsed().as_secs_f64() };
        println!(
            "[{at:6.1}s] {}{} healed after {:.1} s",
            serde_json::to_value(fault).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            instance.map(|i| format!(" instance {i}")).unwrap_or_default(),
            injected.held_s
        );
        done.push(injected);
    }
    Ok(done)
}
