//! The conformance suite on the in-memory reference store.

use std::sync::Arc;

use tally_core::ManualClock;
use tally_store::MemoryStore;

async fn open(clock: ManualClock) -> (MemoryStore, ()) {
    (MemoryStore::new(Arc::new(clock)), ())
}

tally_store::store_suite!(open);
