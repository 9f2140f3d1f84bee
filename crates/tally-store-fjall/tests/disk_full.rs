//! A real full disk: the embedded store on a small tmpfs, filled until writes fail.
//!
//! Needs to mount a tmpfs (root, as in CI). Where the machine does not allow it the test
//! fails with that reason, unless `TALLY_TEST_SKIP_DISK_FULL=1` says to skip it; it never
//! passes silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tally_core::{CounterKey, Event, EventKind, IdempotencyToken, SystemClock, Timestamp};
use tally_store::{Appended, EventLog, StoreError};
use tally_store_fjall::{FjallOptions, FjallStore};

const WINDOW: Duration = Duration::from_secs(600);

/// A size-limited tmpfs, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts one at a directory named after `test` (tests run at once in one process).
    fn mount(megabytes: u32, test: &str) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("tally-disk-full-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Self { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the store's background threads may still be closing their files.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A 24 MiB tmpfs for `test`, or `None` where none can be mounted and
/// `TALLY_TEST_SKIP_DISK_FULL=1` says to skip.
fn tmpfs(test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(24, test) {
        Ok(fs) => Some(fs),
        Err(_) if std::env::var("TALLY_TEST_SKIP_DISK_FULL").is_ok_and(|v| v == "1") => {
            eprintln!("skipped: TALLY_TEST_SKIP_DISK_FULL=1");
            None
        }
        Err(e) => panic!(
            "cannot mount a tmpfs for the disk-full test ({e}); run as root or set TALLY_TEST_SKIP_DISK_FULL=1"
        ),
    }
}

/// Fills the file system at `dir` with a ballast file until `leave` bytes are free.
fn ballast(dir: &Path, leave: u64) -> PathBuf {
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().expect("df runs");
    let free: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes");
    let path = dir.join("ballast");
    std::fs::write(&path, vec![7u8; usize::try_from(free.saturating_sub(leave)).expect("size")])
        .expect("write ballast");
    path
}

/// The kind of the first `std::io::Error` among the causes of `error`, if any.
fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        next = e.source();
    }
    None
}

fn event(key: &CounterKey, i: u32, now: Timestamp) -> Event {
    Event {
        key: key.clone(),
        token: IdempotencyToken::new(&format!("token-{i:08}"), now).expect("token"),
        kind: EventKind::Add(1),
    }
}

fn open(dir: &Path) -> FjallStore {
    FjallStore::open(dir, Arc::new(SystemClock), FjallOptions::default()).expect("open store")
}

#[tokio::test]
async fn a_full_disk_is_unavailable_acknowledges_nothing_unsynced_and_heals_without_a_restart() {
    let Some(fs) = tmpfs("commits") else { return };
    let data = fs.dir.join("data");
    let store = open(&data);
    let ballast = ballast(&fs.dir, 2 << 20);
    let key = CounterKey::parse_joined("disk:full").expect("key");
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let deadline = Timestamp::MAX;

    // Write in concurrent rounds (one group commit each) until the disk is full.
    let (mut acked, mut refused, mut causes) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = 0u32;
    while refused.is_empty() {
        assert!(next < 2_000_000, "2 million events did not fill 2 MiB: is the tmpfs limited?");
        let round: Vec<Event> = (next..next + 256).map(|i| event(&key, i, now)).collect();
        next += 256;
        let answers = join_all(round.iter().map(|e| store.append(e, deadline, WINDOW))).await;
        for (e, answer) in round.into_iter().zip(answers) {
            match answer {
                Ok(Appended::New) => acked.push(e),
                Err(error @ StoreError::Unavailable(_)) => {
                    refused.push(e);
                    causes.push(io_kind(&error));
                }
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
    // The refusal keeps the file system's own error as its cause, not only its words.
    assert!(causes.contains(&Some(std::io::ErrorKind::StorageFull)), "causes of the refusals: {causes:?}");
    // Free the space; the same store object must come back by itself.
    std::fs::remove_file(&ballast).expect("remove ballast");
    let started = Instant::now();
    let first_retry = loop {
        match store.append(&refused[0], deadline, WINDOW).await {
            Ok(answer) => break answer,
            Err(StoreError::Unavailable(_)) if started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the store did not recover within 20 s after space was freed: {e}"),
        }
    };
    assert!(matches!(first_retry, Appended::New | Appended::Duplicate { .. }));
    // Retrying every refused event with its token lands each exactly once.
    for e in &refused[1..] {
        let answer = store.append(e, deadline, WINDOW).await.expect("retry after recovery");
        assert!(matches!(answer, Appended::New | Appended::Duplicate { .. }), "{answer:?}");
    }
    let total = acked.len() + refused.len();
    let fold = store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
    assert_eq!(fold.events as usize, total, "every acknowledged event is there, and each retry once");
    assert_eq!(fold.sum, i128::try_from(total).expect("sum"));

    // And it was all synced: a fresh open of the directory sees the same.
    drop(store);
    let reopened = open(&data);
    let fold = reopened.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold after reopen");
    assert_eq!(fold.events as usize, total);
    assert!(!acked.is_empty(), "some events were acknowledged before the disk filled");
}

/// A move of staged events whose tables cannot be written (the disk filled after the events
/// were journaled) is answered `UNAVAILABLE`; the store closes as after a failed write,
/// reopens once there is room, and has every event exactly once, moved or staged again.
#[tokio::test]
async fn a_move_that_cannot_write_its_tables_loses_nothing_and_heals_without_a_restart() {
    let Some(fs) = tmpfs("move") else { return };
    let data = fs.dir.join("data");
    // Enough events that a thread of its own prepares the move.
    const EVENTS: u32 = 20_000;
    let options = FjallOptions { stage_events: usize::MAX, ..FjallOptions::default() };
    let store = FjallStore::open(&data, Arc::new(SystemClock), options).expect("open store");
    let key = CounterKey::parse_joined("disk:move").expect("key");
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let events: Vec<Event> = (0..EVENTS).map(|i| event(&key, i, now)).collect();
    for round in events.chunks(1_000) {
        let answers = join_all(round.iter().map(|e| store.append(e, Timestamp::MAX, WINDOW))).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(Appended::New))), "{answers:?}");
    }
    let ballast = ballast(&fs.dir, 16 << 10);
    let error = store.compact().await.expect_err("the move's tables do not fit");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert_eq!(io_kind(&error), Some(std::io::ErrorKind::StorageFull), "{error}");

    // The writer reopens the store before its next batch: the next add.
    std::fs::remove_file(&ballast).expect("remove ballast");
    let started = Instant::now();
    let next = event(&key, EVENTS, now);
    loop {
        match store.append(&next, Timestamp::MAX, WINDOW).await {
            Ok(answer) => break assert_eq!(answer, Appended::New),
            Err(StoreError::Unavailable(_)) if started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the store did not recover within 20 s after space was freed: {e}"),
        }
    }
    let total = EVENTS + 1;
    let fold = store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
    assert_eq!((fold.events, fold.sum), (u64::from(total), i128::from(total)), "every event once");
    // Staged again from the journal, the events move this time, and their tokens stay taken.
    store.compact().await.expect("the move fits now");
    let retry = store.append(&events[7], Timestamp::MAX, WINDOW).await.expect("retry");
    assert!(matches!(retry, Appended::Duplicate { .. }), "{retry:?}");
    drop(store);
    let reopened = open(&data);
    let fold = reopened.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold after reopen");
    assert_eq!((fold.events, fold.sum), (u64::from(total), i128::from(total)));
}
