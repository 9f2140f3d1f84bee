//! On-disk format 2, pinned: a data directory format 2 wrote, committed under
//! `tests/data/format-v2/`, which every later build must still open and read the same. Some
//! of its events are in the tables, others only in the journal of staged events (the process
//! ended before they were moved), so that a later build must read both.
//!
//! The fixture was written by the ignored test at the end:
//! `cargo test -p tally-store-fjall --test format_v2 -- --ignored write_the_format_2_fixture`.

use std::time::Duration;

use tally_core::{Checkpoint, CounterType, EventKind, Namespace, NamespaceConfig, Timestamp};
use tally_store::{CounterStore, EventLog, NamespaceStore, Stored};

mod common;
use common::{WINDOW, at, event, key, open_copy, rewrite_fixture, trim_for_git};

#[tokio::test]
async fn a_data_directory_written_by_format_2_opens_and_reads_its_tables_and_its_journal() {
    let (_dir, store) = open_copy("format-v2");

    let namespaces = store.list_namespaces().await.expect("namespaces");
    let shop = namespaces.iter().find(|(n, _)| n.as_str() == "shop").expect("shop");
    assert_eq!(shop.1.counter_type, CounterType::Accurate);

    let orders = key("shop", "orders");
    let state = store.counter_state(&orders).await.expect("state");
    assert_eq!(state.checkpoint, Some(Checkpoint { count: 10, until: at(-60_000_000) }));
    assert_eq!(state.last_write, Some(at(-1_000_000)), "the newest event, still staged");
    let fold = store.fold(&orders, at(-60_000_000), at(0)).await.expect("fold");
    assert_eq!((fold.events, fold.apply_to(10)), (3, 5), "add 3 (tables), clear and add 5 (journal)");
    let listed = store.list_events(&orders, Timestamp::MIN, Timestamp::MAX, None, 10).await.expect("list");
    let tokens: Vec<&str> = listed.iter().map(|e| e.token.token()).collect();
    assert_eq!(tokens, ["order-1", "order-2", "order-7", "order-9"]);
    let token = store.find_token(&orders, "order-9").await.expect("token");
    assert_eq!(token, Some(Stored { generation_time: at(-1_000_000), kind: EventKind::Add(5) }));

    let views = key("default", "home");
    let fold = store.fold(&views, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
    assert_eq!((fold.events, fold.apply_to(0)), (2, -3), "two tokenless adds, both staged");
    let scanned = store.scan_counters(None, None, 100).await.expect("scan");
    assert_eq!(
        scanned.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>(),
        ["shop:orders", "default:home"],
        "a counter whose events were all staged is scanned too"
    );
}

/// Writes the fixture: run by hand, once per format version.
#[tokio::test]
#[ignore = "writes tests/data/format-v2; run by hand for a new format version"]
async fn write_the_format_2_fixture() {
    let (dir, store) = rewrite_fixture("format-v2");
    let config = NamespaceConfig {
        counter_type: CounterType::Accurate,
        accept_limit: Duration::from_secs(30),
        ..NamespaceConfig::default()
    };
    store.create_namespace(&Namespace::new("shop").expect("ns"), &config).await.expect("create");
    let orders = key("shop", "orders");
    let deadline = Timestamp::MAX;
    for e in [
        event(&orders, "order-1", at(-90_000_000), EventKind::Add(10)),
        event(&orders, "order-2", at(-3_000_000), EventKind::Add(3)),
    ] {
        store.append(&e, deadline, WINDOW).await.expect("append");
    }
    store
        .put_checkpoint(&orders, Checkpoint { count: 10, until: at(-60_000_000) })
        .await
        .expect("checkpoint");
    // These two into the tables; the rest stays staged, in the journal only.
    store.compact().await.expect("compact");
    for e in [
        event(&orders, "order-7", at(-2_000_000), EventKind::Clear),
        event(&orders, "order-9", at(-1_000_000), EventKind::Add(5)),
    ] {
        store.append(&e, deadline, WINDOW).await.expect("append");
    }
    let home = key("default", "home");
    for (token, delta) in [("srv-1", -4), ("srv-2", 1)] {
        store
            .append_new(&event(&home, token, at(-500_000), EventKind::Add(delta)), deadline)
            .await
            .expect("append");
    }
    drop(store);
    trim_for_git(&dir);
}
