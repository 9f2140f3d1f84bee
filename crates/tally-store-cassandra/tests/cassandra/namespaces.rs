//! A namespace deleted and created again while another instance still knows the deleted one.

use std::time::Duration;

use tally_core::{
    Clock, CounterKey, Event, EventKind, IdempotencyToken, ManualClock, NamespaceConfig, Timestamp,
};
use tally_store::{Appended, EventLog, NamespaceStore, StoreError};
use tally_store_cassandra::Layout;

use crate::support::{open_in, open_on};

const WINDOW: Duration = Duration::from_secs(600);

fn add(key: &CounterKey, token: &str, time: Timestamp) -> Event {
    Event {
        key: key.clone(),
        token: IdempotencyToken::new(token, time).expect("token"),
        kind: EventKind::Add(1),
    }
}

/// Instance B resolved the namespace before instance A deleted it. Once A may create it again,
/// B has forgotten the deleted one: its writes land in the new namespace (where A reads them),
/// and between the two it refuses writes to the deleted one.
#[tokio::test]
async fn an_instance_that_knew_a_deleted_namespace_writes_into_the_one_created_again() {
    let clock = ManualClock::new(Timestamp::from_millis(1_764_000_000_000));
    let (a, keyspace) = open_in(clock.clone(), Layout::default()).await;
    let b = open_on(clock.clone(), Layout::default(), &keyspace).await;
    let key = CounterKey::parse_joined("shared:c").expect("key");
    let config = NamespaceConfig::default();
    a.create_namespace(&key.namespace, &config).await.expect("create");
    let before = clock.now();
    assert_eq!(
        b.append(&add(&key, "b1", before), Timestamp::MAX, WINDOW).await.expect("b writes"),
        Appended::New
    );

    assert!(a.delete_namespace(&key.namespace).await.expect("delete"));
    let until = match a.create_namespace(&key.namespace, &config).await {
        Err(StoreError::NamespaceRecentlyDeleted { until, .. }) => until,
        other => panic!("created again at once: {other:?}"),
    };
    assert!(
        until > clock.now().saturating_add(Duration::from_secs(2)),
        "too soon for B to have re-read it: {until}"
    );

    // Past the time B re-reads what it knows, B sees the deletion.
    clock.advance(Duration::from_millis(2_100));
    let refused = b.append(&add(&key, "b2", clock.now()), Timestamp::MAX, WINDOW).await;
    assert_eq!(refused, Err(StoreError::NamespaceNotFound(key.namespace.clone())));

    clock.set(until);
    a.create_namespace(&key.namespace, &config).await.expect("create again");
    // A token made before the deletion, as a retry of B's first add would carry.
    let written = b.append(&add(&key, "b1", before), Timestamp::MAX, WINDOW).await.expect("b writes again");
    assert_eq!(written, Appended::New, "the deleted namespace's token showed through");
    let fold = a.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("a reads");
    assert_eq!(fold.sum, 1, "A does not see B's write into the namespace created again");
}

/// A keyspace written by schema version 1 (no incarnations) is brought to version 2 by the
/// first instance that opens it, and its namespaces keep their rows where they are.
#[tokio::test]
async fn a_version_1_keyspace_is_upgraded_and_its_namespaces_keep_their_data() {
    use scylla::client::session_builder::SessionBuilder;
    let clock = ManualClock::new(Timestamp::from_millis(1_764_000_000_000));
    let (old, keyspace) = open_in(clock.clone(), Layout::default()).await;
    let key = CounterKey::parse_joined("legacy:c").expect("key");
    // Written before its namespace exists: stored under the bare name, as version 1 stored all.
    old.append(&add(&key, "t", clock.now()), Timestamp::MAX, WINDOW).await.expect("append");
    old.create_namespace(&key.namespace, &NamespaceConfig::default()).await.expect("create");
    drop(old);
    let session =
        SessionBuilder::new().known_node(crate::support::test_node()).build().await.expect("session");
    for cql in [
        format!("ALTER TABLE {keyspace}.namespaces DROP incarnation"),
        format!("ALTER TABLE {keyspace}.namespaces DROP recreate_after"),
        format!("UPDATE {keyspace}.settings SET value = 1 WHERE name = 'schema_version'"),
    ] {
        session.query_unpaged(cql.as_str(), ()).await.unwrap_or_else(|e| panic!("{cql}: {e}"));
        session.await_schema_agreement().await.expect("schema agreement");
    }

    let upgraded = open_on(clock.clone(), Layout::default(), &keyspace).await;
    let version = session
        .query_unpaged(format!("SELECT value FROM {keyspace}.settings WHERE name = 'schema_version'"), ())
        .await
        .expect("read version")
        .into_rows_result()
        .expect("rows")
        .single_row::<(i64,)>()
        .expect("one row")
        .0;
    assert_eq!(version, tally_store_cassandra::schema::SCHEMA_VERSION);
    assert_eq!(upgraded.get_namespace(&key.namespace).await.expect("get"), Some(NamespaceConfig::default()));
    assert_eq!(upgraded.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold").sum, 1);
    // And it is deleted and created again like any other.
    assert!(upgraded.delete_namespace(&key.namespace).await.expect("delete"));
    assert_eq!(upgraded.fold(&key, Timestamp::MIN, Timestamp::MAX).await.expect("fold").sum, 0);
}
