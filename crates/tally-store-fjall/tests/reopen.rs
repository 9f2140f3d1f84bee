//! What the embedded store keeps across a close and reopen, and what it refuses to open.

use std::sync::Arc;
use std::time::Duration;

use tally_core::{Checkpoint, CounterKey, Event, EventKind, IdempotencyToken, ManualClock, Timestamp};
use tally_store::{Appended, CounterStore, EventLog, StoreError};
use tally_store_fjall::{FjallOptions, FjallStore};

const WINDOW: Duration = Duration::from_secs(600);

fn open(dir: &std::path::Path) -> Result<FjallStore, StoreError> {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    FjallStore::open(dir, Arc::new(clock), FjallOptions::default())
}

#[tokio::test]
async fn events_and_checkpoints_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = CounterKey::parse_joined("ns:c").expect("key");
    let event = Event {
        key: key.clone(),
        token: IdempotencyToken::new("t", Timestamp::from_micros(10)).expect("token"),
        kind: EventKind::Add(3),
    };
    {
        let store = open(dir.path()).expect("open");
        assert_eq!(store.append(&event, Timestamp::MAX, WINDOW).await, Ok(Appended::New));
        let cp = Checkpoint { count: 1, until: Timestamp::from_micros(5) };
        store.put_checkpoint(&key, cp).await.expect("checkpoint");
    }
    let store = open(dir.path()).expect("reopen");
    // The token alone is remembered: a retry restamped with a new generation time finds it.
    let restamped =
        Event { token: IdempotencyToken::new("t", Timestamp::from_micros(11)).expect("token"), ..event };
    let stored_at = Timestamp::from_micros(10);
    assert_eq!(
        store.append(&restamped, Timestamp::MAX, WINDOW).await,
        Ok(Appended::Duplicate { generation_time: stored_at })
    );
    let state = store.counter_state(&key).await.expect("state");
    assert_eq!(state.last_write, Some(Timestamp::from_micros(10)));
    assert_eq!(state.checkpoint.map(|c| c.count), Some(1));
    assert_eq!(store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold").sum, 3);
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _first = open(dir.path()).expect("open");
    let err = open(dir.path()).err().expect("second open is refused");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.context().contains("cannot open the embedded store")),
        "{err}"
    );
}
