//! The writer remembers committed `last_write` values and checkpoints; what it remembers must
//! never outlive the state itself.

use std::sync::Arc;

use tally_core::{
    Checkpoint, CounterKey, CounterName, Event, EventKind, IdempotencyToken, ManualClock, Namespace,
    NamespaceConfig, Timestamp,
};
use tally_store::{CounterState, CounterStore, EventLog, NamespaceStore};
use tally_store_fjall::{FjallOptions, FjallStore};

fn add(key: &CounterKey, token: &str, micros: i64) -> Event {
    Event {
        key: key.clone(),
        token: IdempotencyToken::new(token, Timestamp::from_micros(micros)).expect("token"),
        kind: EventKind::Add(1),
    }
}

/// Were it not forgotten, a remembered `last_write` of 500 would survive the deletion of its namespace:
/// the new event at 100 would write no `last_write` at all, and rollups would never see it.
#[tokio::test]
async fn regression_remembered_state_is_forgotten_when_its_namespace_is_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(Timestamp::from_micros(1_000));
    let store = FjallStore::open(dir.path(), Arc::new(clock), FjallOptions::default()).expect("open");
    let key = CounterKey::new(Namespace::new("reborn").expect("ns"), CounterName::new("c").expect("name"));
    let config = NamespaceConfig::default();

    store.create_namespace(&key.namespace, &config).await.expect("create");
    store
        .append(&add(&key, "old", 500), Timestamp::MAX, std::time::Duration::from_secs(600))
        .await
        .expect("append");
    let old = Checkpoint { count: 1, until: Timestamp::from_micros(501) };
    store.put_checkpoint(&key, old).await.expect("checkpoint");
    assert!(store.delete_namespace(&key.namespace).await.expect("delete"));

    store.create_namespace(&key.namespace, &config).await.expect("create again");
    store
        .append(&add(&key, "new", 100), Timestamp::MAX, std::time::Duration::from_secs(600))
        .await
        .expect("append");
    let fresh = Checkpoint { count: 0, until: Timestamp::from_micros(50) };
    assert_eq!(store.put_checkpoint(&key, fresh).await.expect("checkpoint"), fresh);
    let state = store.counter_state(&key).await.expect("state");
    assert_eq!(
        state,
        CounterState { checkpoint: Some(fresh), last_write: Some(Timestamp::from_micros(100)) }
    );
    assert!(state.has_unfolded_events());
}
