//! The ceiling of a Cassandra node for Tally's kind of writes, through the same driver:
//! plain single-row inserts, and single-row lightweight transactions (`INSERT … IF NOT EXISTS`,
//! what taking a client's token costs), each from `CONCURRENCY` concurrent requests for
//! `SECONDS`. `bench/cassandra.sh` runs it next to Tally's own figures.
//!
//!   cargo run --release -p tally-store-cassandra --example insert_ceiling -- 127.0.0.1:9042 256 20

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::frame::types::{Consistency, SerialConsistency};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let node = args.next().unwrap_or_else(|| "127.0.0.1:9042".to_owned());
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let session = Arc::new(SessionBuilder::new().known_node(&node).build().await?);
    session
        .query_unpaged(
            "CREATE KEYSPACE IF NOT EXISTS tally_ceiling WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 1}",
            (),
        )
        .await?;
    session
        .query_unpaged(
            "CREATE TABLE IF NOT EXISTS tally_ceiling.rows (k text, c bigint, v text, PRIMARY KEY (k, c))",
            (),
        )
        .await?;
    for lwt in [false, true] {
        let rate = run(&session, lwt, concurrency, Duration::from_secs(seconds)).await?;
        let what = if lwt { "lightweight transactions" } else { "plain inserts" };
        println!("{what}: {rate:.0}/s ({concurrency} in flight, {seconds} s)");
    }
    Ok(())
}

/// Writes distinct rows from `concurrency` tasks for `length`; returns writes per second.
async fn run(
    session: &Arc<Session>,
    lwt: bool,
    concurrency: usize,
    length: Duration,
) -> Result<f64, Box<dyn std::error::Error>> {
    let text = match lwt {
        false => "INSERT INTO tally_ceiling.rows (k, c, v) VALUES (?, ?, ?)",
        true => "INSERT INTO tally_ceiling.rows (k, c, v) VALUES (?, ?, ?) IF NOT EXISTS",
    };
    let mut statement = session.prepare(text).await?;
    statement.set_consistency(Consistency::LocalQuorum);
    statement.set_serial_consistency(Some(SerialConsistency::LocalSerial));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let (session, statement, done) = (session.clone(), statement.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0i64;
                while started.elapsed() < length {
                    let key = format!("{lwt}-{task}-{}", i % 100_000);
                    if session.execute_unpaged(&statement, (key, i, "add:1")).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
