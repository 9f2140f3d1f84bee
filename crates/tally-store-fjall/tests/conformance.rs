//! The shared conformance suite on the embedded store.

use std::sync::Arc;

use tally_core::ManualClock;
use tally_store_fjall::{FjallOptions, FjallStore};

async fn open(clock: ManualClock) -> (FjallStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open(dir.path(), Arc::new(clock), FjallOptions::default()).expect("open");
    (store, dir)
}

tally_store::store_suite!(open);
