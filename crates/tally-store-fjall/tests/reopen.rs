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

fn event(key: &CounterKey, token: &str, micros: i64, kind: EventKind) -> Event {
    Event {
        key: key.clone(),
        token: IdempotencyToken::new(token, Timestamp::from_micros(micros)).expect("token"),
        kind,
    }
}

/// Acknowledged events wait in the journal (and in memory) until enough gather to move them
/// into the `events` keyspace. A process that ends before that must find them all again at
/// open: every read, the token, the counter's `last_write` and the scan of counters.
#[tokio::test]
async fn events_still_staged_when_the_process_ended_are_read_back_from_the_journal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = CounterKey::parse_joined("ns:staged").expect("key");
    {
        let store = open(dir.path()).expect("open");
        assert_eq!(
            store.append(&event(&key, "a", 30, EventKind::Add(5)), Timestamp::MAX, WINDOW).await,
            Ok(Appended::New)
        );
        assert_eq!(
            store.append_new(&event(&key, "b", 10, EventKind::Add(2)), Timestamp::MAX).await,
            Ok(Appended::New)
        );
        assert_eq!(
            store.append_new(&event(&key, "c", 20, EventKind::Clear), Timestamp::MAX).await,
            Ok(Appended::New)
        );
        // Dropped without a scan or a move: the events are in the journal only.
    }
    let store = open(dir.path()).expect("reopen");
    let fold = store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
    assert_eq!((fold.events, fold.apply_to(100)), (3, 5), "in time order: add 2, clear, add 5");
    let listed = store.list_events(&key, Timestamp::MIN, Timestamp::MAX, None, 10).await.expect("list");
    assert_eq!(listed.iter().map(|e| e.token.token()).collect::<Vec<_>>(), ["b", "c", "a"]);
    assert_eq!(store.counter_state(&key).await.expect("state").last_write, Some(Timestamp::from_micros(30)));
    let retry = store.append(&event(&key, "a", 31, EventKind::Add(5)), Timestamp::MAX, WINDOW).await;
    assert_eq!(retry, Ok(Appended::Duplicate { generation_time: Timestamp::from_micros(30) }));
    // The scan moves them into the tables first; then they are there once, also after a reopen.
    let scanned = store.scan_counters(None, None, 10).await.expect("scan");
    assert_eq!(scanned.len(), 1);
    assert_eq!(scanned[0].1.last_write, Some(Timestamp::from_micros(30)));
    drop(store);
    let store = open(dir.path()).expect("reopen after the move");
    let fold = store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
    assert_eq!((fold.events, fold.apply_to(100)), (3, 5), "each event once");
    // The token moved into the tables with its event.
    let retry = store.append(&event(&key, "a", 32, EventKind::Add(5)), Timestamp::MAX, WINDOW).await;
    assert_eq!(retry, Ok(Appended::Duplicate { generation_time: Timestamp::from_micros(30) }));
}

/// Paging through a counter's history while events are gathering, moving (three per commit)
/// and moved: each event comes exactly once, in order.
#[tokio::test]
async fn paging_across_staged_and_moved_events_lists_each_event_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let options = FjallOptions { stage_events: 4, move_slice: 3, ..FjallOptions::default() };
    let store = FjallStore::open(dir.path(), Arc::new(clock), options).expect("open");
    let key = CounterKey::parse_joined("ns:paged").expect("key");
    // Out of time order, so that staged and moved events interleave in key order.
    for i in 0..23i64 {
        let micros = (i * 7) % 23;
        store
            .append_new(&event(&key, &format!("t{i}"), micros, EventKind::Add(1)), Timestamp::MAX)
            .await
            .expect("append");
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page =
            store.list_events(&key, Timestamp::MIN, Timestamp::MAX, after.as_ref(), 5).await.expect("page");
        let Some(last) = page.last() else { break };
        after = Some(tally_store::EventCursor::after(last));
        seen.extend(page.iter().map(|e| e.token.generation_time().as_micros()));
    }
    assert_eq!(seen, (0..23).collect::<Vec<_>>());
    assert_eq!(store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold").events, 23);
}
