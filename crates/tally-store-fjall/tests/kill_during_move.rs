//! A process killed with SIGKILL while its store moves staged events into their tables loses
//! no acknowledged event and doubles none.
//!
//! The test runs itself again as a child process (`KILL_DURING_MOVE_DIR` names the child's
//! data directory) that appends rounds of events with client tokens and prints how many are
//! acknowledged; moves are made small so that they follow each other, most of the child's
//! time is spent in one, and a kill at any moment is likely to land inside one. The parent
//! kills the child several times on the same directory and checks, after each, that every
//! acknowledged event is there once and its token still taken.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tally_core::{CounterKey, Event, EventKind, IdempotencyToken, SystemClock, Timestamp};
use tally_store::{Appended, CounterStore, EventLog};
use tally_store_fjall::{FjallOptions, FjallStore};

const CHILD_DIR: &str = "KILL_DURING_MOVE_DIR";
const CHILD_FIRST: &str = "KILL_DURING_MOVE_FIRST";
const WINDOW: Duration = Duration::from_secs(600);
/// Events per round; a move every `STAGE_EVENTS`, prepared on a thread of its own.
const ROUND: u32 = 500;
const STAGE_EVENTS: usize = 8_192;
/// Acknowledged events after which each child is killed.
const KILL_AFTER: u32 = 30_000;
const KILLS: u32 = 3;

fn key() -> CounterKey {
    CounterKey::parse_joined("kill:c").expect("key")
}

fn event(i: u32) -> Event {
    // One generation time for all: a retry must find the same event, whatever its round.
    let now = Timestamp::from_micros(1_700_000_000_000_000);
    Event {
        key: key(),
        token: IdempotencyToken::new(&format!("t{i:08}"), now).expect("token"),
        kind: EventKind::Add(1),
    }
}

fn open(dir: &Path) -> FjallStore {
    let options = FjallOptions { stage_events: STAGE_EVENTS, ..FjallOptions::default() };
    FjallStore::open(dir, Arc::new(SystemClock), options).expect("open store")
}

/// The child: appends rounds from event `first` on, printing each acknowledged round, until
/// it is killed.
async fn child(dir: &Path, first: u32) {
    let store = open(dir);
    let mut next = first;
    let mut out = std::io::stdout();
    loop {
        let round: Vec<Event> = (next..next + ROUND).map(event).collect();
        let answers = join_all(round.iter().map(|e| store.append(e, Timestamp::MAX, WINDOW))).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(Appended::New))), "{answers:?}");
        next += ROUND;
        writeln!(out, "acked {next}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// A child process, SIGKILLed when dropped: also when an assertion fails before the kill, so
/// that no child goes on writing.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a child on `dir` from event `first` and kills it once it has acknowledged events up to
/// `first + KILL_AFTER`; returns the end (exclusive) of what it acknowledged.
fn run_and_kill(dir: &Path, first: u32) -> u32 {
    let mut child = Child(
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "a_process_killed_while_moves_write_their_tables_loses_and_doubles_nothing",
                "--nocapture",
            ])
            .env(CHILD_DIR, dir)
            .env(CHILD_FIRST, first.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the child"),
    );
    let mut acked = first;
    for line in BufReader::new(child.0.stdout.take().expect("stdout")).lines() {
        let line = line.expect("read the child");
        if let Some(n) = line.strip_prefix("acked ") {
            acked = n.parse().expect("a count");
            if acked >= first + KILL_AFTER {
                break;
            }
        }
    }
    drop(child);
    assert!(acked >= first + KILL_AFTER, "the child stopped after event {acked}");
    acked
}

/// Events a child may have written past what it acknowledged before the kill landed (a round
/// or two); the next child starts past them.
const GAP: u32 = 100 * ROUND;

#[test]
fn a_process_killed_while_moves_write_their_tables_loses_and_doubles_nothing() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let first = std::env::var(CHILD_FIRST).expect("first").parse().expect("a number");
        return runtime.block_on(child(Path::new(&dir), first));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // Per child: its first event and the end of what it acknowledged.
    let mut runs: Vec<(u32, u32)> = Vec::new();
    let mut first = 0;
    for kill in 1..=KILLS {
        let acked = run_and_kill(dir.path(), first);
        runs.push((first, acked));
        first = acked + GAP;
        runtime.block_on(async {
            let store = open(dir.path());
            // Every acknowledged event's token is taken; any event past them may have landed.
            let mut present = 0u64;
            for &(from, acked) in &runs {
                for i in from..acked + GAP {
                    let found = store.find_token(&key(), event(i).token.token()).await.expect("find");
                    assert!(found.is_some() || i >= acked, "kill {kill}: acknowledged event {i} was lost");
                    present += u64::from(found.is_some());
                }
            }
            let fold = store.fold(&key(), Timestamp::MIN, Timestamp::MAX).await.expect("fold");
            assert_eq!(fold.events, present, "kill {kill}: each event that landed counts once");
            assert_eq!(fold.sum, i128::from(present), "kill {kill}");
            let state = store.counter_state(&key()).await.expect("state");
            assert!(state.last_write.is_some(), "kill {kill}: the pending scan would find the counter");
        });
    }
}
