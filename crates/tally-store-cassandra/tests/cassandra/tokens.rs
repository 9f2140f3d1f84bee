//! A token taken without its event: what an append leaves behind when it fails between taking
//! the token (a lightweight transaction) and writing the event row. A later append of the
//! token must never answer a duplicate of an event that is not stored.

use std::time::Duration;

use scylla::client::session_builder::SessionBuilder;
use tally_core::{Clock, CounterKey, Event, EventKind, IdempotencyToken, ManualClock, Timestamp};
use tally_store::{Appended, EventLog, StoreError};
use tally_store_cassandra::Layout;

use crate::support::{open_in, test_node};

const WINDOW: Duration = Duration::from_secs(600);

/// Takes `token` for `Add(delta)` at `time` as a failed append would have: the token row and
/// nothing else.
async fn take_token_only(keyspace: &str, token: &str, time: Timestamp, delta: i64, until: Timestamp) {
    let session = SessionBuilder::new().known_node(test_node()).build().await.expect("session");
    let cql = format!(
        "INSERT INTO {keyspace}.tokens (namespace, counter, idempotency_token, generation_time, mutation, until) \
         VALUES ('ns', 'c', ?, ?, ?, ?)"
    );
    let values = (token, time.as_micros(), format!("add:{delta}"), until.as_micros());
    session.query_unpaged(cql, values).await.expect("token row");
}

fn event(token: &str, time: Timestamp, delta: i64) -> Event {
    Event {
        key: CounterKey::parse_joined("ns:c").expect("key"),
        token: IdempotencyToken::new(token, time).expect("token"),
        kind: EventKind::Add(delta),
    }
}

#[tokio::test]
async fn regression_a_retry_of_a_token_whose_event_never_landed_is_not_answered_as_a_duplicate() {
    let clock = ManualClock::new(Timestamp::from_millis(1_764_000_000_000));
    let (store, keyspace) = open_in(clock.clone(), Layout::default()).await;
    let key = CounterKey::parse_joined("ns:c").expect("key");
    let now = clock.now();
    let until = now.saturating_add(WINDOW);

    // Within its deadline the retry writes the missing event on the first append's behalf.
    take_token_only(&keyspace, "landed-late", now, 5, until).await;
    let retry = event("landed-late", now.saturating_add(Duration::from_millis(3)), 5);
    let far = now.saturating_add(Duration::from_secs(60));
    assert_eq!(store.append(&retry, far, WINDOW).await, Ok(Appended::Duplicate { generation_time: now }));
    assert_eq!(store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold").sum, 5);

    // Past its deadline it cannot: it is refused, and nothing claims the add was applied.
    take_token_only(&keyspace, "never-landed", now, 7, until).await;
    let late = event("never-landed", now, 7);
    let err = store.append(&late, now, WINDOW).await.expect_err("the event is missing and too late to write");
    assert!(matches!(err, StoreError::DeadlinePassed { .. }), "{err:?}");
    assert_eq!(store.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold").sum, 5);

    // A late retry of a token whose event is stored is still a duplicate.
    let late_retry = event("landed-late", now, 5);
    assert_eq!(
        store.append(&late_retry, now, WINDOW).await,
        Ok(Appended::Duplicate { generation_time: now })
    );
}
