//! The shared conformance suite.

use tally_core::ManualClock;
use tally_store_cassandra::{CassandraStore, Layout};

async fn open(clock: ManualClock) -> (CassandraStore, ()) {
    (super::support::open_with(clock, Layout::default()).await, ())
}

tally_store::store_suite!(open);
