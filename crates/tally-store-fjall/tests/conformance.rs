//! The shared conformance suite on the embedded store, twice: with its default staging of
//! events, and with moves into the `events` keyspace begun every few events and made two
//! events at a time, so that the suite's reads meet events gathering, moving, in the keyspace
//! and, mid-move, in both.

use std::sync::Arc;

use tally_core::ManualClock;
use tally_store_fjall::{FjallOptions, FjallStore};

fn open_with(clock: ManualClock, options: FjallOptions) -> (FjallStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open(dir.path(), Arc::new(clock), options).expect("open");
    (store, dir)
}

mod staged_by_default {
    use super::*;

    async fn open(clock: ManualClock) -> (FjallStore, tempfile::TempDir) {
        open_with(clock, FjallOptions::default())
    }

    tally_store::store_suite!(open);
}

mod moved_in_small_slices {
    use super::*;

    async fn open(clock: ManualClock) -> (FjallStore, tempfile::TempDir) {
        open_with(clock, FjallOptions { stage_events: 3, move_slice: 2, ..FjallOptions::default() })
    }

    tally_store::store_suite!(open);
}
