//! Helpers of the format tests: committed data directories, copied and trimmed.

// Each test crate that includes this module uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tally_core::{
    CounterKey, CounterName, Event, EventKind, IdempotencyToken, ManualClock, Namespace, Timestamp,
};
use tally_store_fjall::{FjallOptions, FjallStore};

/// The idempotency window the fixtures' tokens were taken for.
pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// The fixtures' clock: 2026-11-30T00:00:00Z.
pub const NOW: i64 = 1_796_083_200_000_000;

pub fn key(ns: &str, counter: &str) -> CounterKey {
    CounterKey::new(Namespace::new(ns).expect("ns"), CounterName::new(counter).expect("counter"))
}

/// The event of `key` under `token`, generated at `time`.
pub fn event(key: &CounterKey, token: &str, time: Timestamp, kind: EventKind) -> Event {
    Event { key: key.clone(), token: IdempotencyToken::new(token, time).expect("token"), kind }
}

/// The fixtures' clock, moved by `offset_micros`.
pub fn at(offset_micros: i64) -> Timestamp {
    Timestamp::from_micros(NOW + offset_micros)
}

/// The committed fixture directory `name` under `tests/data`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// Opens the store in `dir` at the fixtures' time.
pub fn open(dir: &Path) -> FjallStore {
    FjallStore::open(dir, Arc::new(ManualClock::new(at(0))), FjallOptions::default()).expect("opens")
}

/// An empty store where the committed fixture `name` lies, for its writer to fill (run by
/// hand for a new format version; finish with [`trim_for_git`]).
pub fn rewrite_fixture(name: &str) -> (PathBuf, FjallStore) {
    let dir = fixture(name);
    let _ = std::fs::remove_dir_all(&dir);
    let store = open(&dir);
    (dir, store)
}

/// A copy of the committed fixture `name`, opened at the fixtures' time (keep the directory
/// while the store is used).
pub fn open_copy(name: &str) -> (tempfile::TempDir, FjallStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&fixture(name), dir.path());
    let store = open(dir.path());
    (dir, store)
}

/// Copies a committed fixture directory to `to`, so that opening it changes nothing in git.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("the committed fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Shrinks what git would store badly: journals are preallocated (64 MiB of zeros), so they
/// are cut after their last written byte, and empty folders (which git cannot hold, and
/// which the store does not need) are removed.
pub fn trim_for_git(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("fixture") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            trim_for_git(&path);
            if std::fs::read_dir(&path).expect("dir").next().is_none() {
                std::fs::remove_dir(&path).expect("remove empty dir");
            }
        } else if path.extension().is_some_and(|e| e == "jnl") {
            let bytes = std::fs::read(&path).expect("journal");
            let used = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            std::fs::write(&path, &bytes[..used]).expect("trim journal");
        }
    }
}
