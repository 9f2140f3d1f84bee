//! The clients: operations one after another, each retried with its token until it is
//! acknowledged or definitely refused, and logged.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::doors::{Answer, Counter, Doors, Endpoint, Mutate};
use super::history::{Door, History, Mutation, Op, Outcome, Read};

/// What the clients share.
pub struct Shared {
    pub endpoints: Vec<Endpoint>,
    /// Each counter, and whether clears go to it.
    pub counters: Vec<(Counter, bool)>,
    pub history: History,
    pub accept_limit: Duration,
    /// Tokens go without a generation time (see `--token-only`).
    pub token_only: bool,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Sends one operation until it is acknowledged or definitely refused, moving to the next
/// instance after each unanswered attempt. Gives up (indeterminate) once the token's write
/// window is over, since no instance may accept it after that.
async fn perform(
    doors: &mut Doors,
    shared: &Shared,
    rng: &mut SmallRng,
    op: (usize, Mutation, String, i64, Door),
) -> Op {
    let (counter, mutation, token, time_ms, door) = op;
    let give_up = Instant::now() + shared.accept_limit + Duration::from_secs(6);
    let mut instance = rng.random_range(0..shared.endpoints.len());
    let (mut attempts, mut uncertain, mut last_error) = (0u32, false, None);
    let outcome = loop {
        attempts += 1;
        let time_ms = (!shared.token_only).then_some(time_ms);
        let m = Mutate { counter: &shared.counters[counter].0, mutation, token: &token, time_ms };
        let answer = doors.send(door, instance, &m).await;
        match answer {
            Answer::Acked => break Outcome::Acked,
            Answer::Refused(code) => {
                last_error = Some(code);
                break if uncertain { Outcome::Indeterminate } else { Outcome::Refused };
            }
            Answer::Shed => last_error = Some("RESOURCE_EXHAUSTED".to_owned()),
            Answer::Unknown(e) => {
                uncertain = true;
                last_error = Some(e);
            }
        }
        if Instant::now() > give_up {
            break if uncertain { Outcome::Indeterminate } else { Outcome::Refused };
        }
        instance = (instance + 1) % shared.endpoints.len();
        let backoff = 20 * u64::from(attempts.min(10));
        tokio::time::sleep(Duration::from_millis(rng.random_range(backoff / 2..=backoff))).await;
    };
    Op { counter, mutation, token, time_ms, completed_ms: now_ms(), door, outcome, attempts, last_error }
}

/// One client: operations one after another until `stop`.
pub async fn client(
    id: usize,
    seed: u64,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut doors = Doors::new(&shared.endpoints);
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(id as u64));
    let mut seq = 0usize;
    while !stop.is_cancelled() {
        let counter = rng.random_range(0..shared.counters.len());
        let door = Door::ALL[(seq + id) % Door::ALL.len()];
        let mutation = if shared.counters[counter].1 && rng.random_bool(0.04) {
            Mutation::Clear
        } else {
            Mutation::Add(rng.random_range(1..=9))
        };
        let token = format!("k{id:03}-{seq:08}");
        let op = perform(&mut doors, &shared, &mut rng, (counter, mutation, token, now_ms(), door)).await;
        shared.history.record(op);
        seq += 1;
    }
    Ok(())
}

/// One reader: while the clients run, reads the counters that get no clears, one after
/// another from a random instance through each door in turn, and logs every answer for
/// [`super::live`] to judge.
pub async fn reader(
    id: usize,
    seed: u64,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut doors = Doors::new(&shared.endpoints);
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(0x5EAD).wrapping_add(id as u64));
    let watched: Vec<usize> = (0..shared.counters.len()).filter(|c| !shared.counters[*c].1).collect();
    let mut seq = 0usize;
    while !stop.is_cancelled() && !watched.is_empty() {
        let counter = watched[rng.random_range(0..watched.len())];
        let instance = rng.random_range(0..shared.endpoints.len());
        let door = Door::ALL[(seq + id) % Door::ALL.len()];
        let invoked_ms = now_ms();
        if let Ok(value) = doors.get(door, instance, &shared.counters[counter].0).await {
            let completed_ms = now_ms();
            shared.history.record_read(Read { counter, instance, door, invoked_ms, completed_ms, value });
        }
        seq += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..=20))).await;
    }
    Ok(())
}
