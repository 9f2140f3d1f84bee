use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tally_core::ManualClock;
use tally_store_cassandra::{CassandraOptions, CassandraStore, Layout};

/// Address of the test node.
pub fn test_node() -> String {
    std::env::var("TALLY_TEST_CASSANDRA").expect(
        "set TALLY_TEST_CASSANDRA=127.0.0.1:9042 after `bash scripts/cassandra.sh start` to run the Cassandra suites",
    )
}

/// A keyspace no other test uses: the process id and a sequence number.
fn fresh_keyspace() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!("test_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Opens a store on a fresh keyspace with `layout`.
pub async fn open_with(clock: ManualClock, layout: Layout) -> CassandraStore {
    open_in(clock, layout).await.0
}

/// [`open_with`], and the keyspace's name.
pub async fn open_in(clock: ManualClock, layout: Layout) -> (CassandraStore, String) {
    let keyspace = fresh_keyspace();
    (open_on(clock, layout, &keyspace).await, keyspace)
}

/// A store on `keyspace`, as another instance sharing it would open one.
pub async fn open_on(clock: ManualClock, layout: Layout, keyspace: &str) -> CassandraStore {
    // The suite checks a deadline one second away; the test node (scripts/cassandra.sh) drops
    // writes after one second, so a one-second write timeout keeps the store's promise.
    let keyspace = keyspace.to_owned();
    let options = CassandraOptions {
        nodes: vec![test_node()],
        keyspace: keyspace.clone(),
        write_timeout: Duration::from_secs(1),
        layout,
        ..CassandraOptions::default()
    };
    CassandraStore::open(options, Arc::new(clock)).await.expect("open Cassandra store")
}
