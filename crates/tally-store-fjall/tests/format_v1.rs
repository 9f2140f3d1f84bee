//! On-disk format 1, pinned: the bytes of every key and value kind, and a data directory this
//! format wrote, committed under `tests/data/format-v1/`, which every later build must still
//! open and read the same. A change that fails here changes the format: it needs a new
//! format version and a migration, not a new fixture.
//!
//! The fixture was written by a build of format 1, with the ignored test that ended this file
//! then (`git show 941fe06:crates/tally-store-fjall/tests/format_v1.rs`); builds of format 2
//! upgrade what they open, so they can no longer write it.

use std::time::Duration;

use tally_core::{Checkpoint, CounterType, EventKind, Timestamp};
use tally_store::{CounterStore, EventLog, NamespaceStore, Stored};
use tally_store_fjall::key_codec as codec;

mod common;
use common::{at, key, open_copy};

#[test]
fn every_key_and_value_kind_is_pinned_bytes() {
    let k = key("ns", "c1");
    assert_eq!(codec::namespace_prefix(&k.namespace), [2, b'n', b's']);
    assert_eq!(codec::counter_prefix(&k), [2, b'n', b's', 0, 2, b'c', b'1']);
    // Time: big-endian with the sign bit flipped, so that byte order is time order.
    let event = codec::event_key(&k, Timestamp::from_micros(1), "t");
    assert_eq!(event, [2, b'n', b's', 0, 2, b'c', b'1', 0x80, 0, 0, 0, 0, 0, 0, 1, b't']);
    let before_epoch = codec::event_key(&k, Timestamp::from_micros(-1), "t");
    assert_eq!(&before_epoch[7..15], [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(*codec::event_value(EventKind::Add(-2)), [0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(*codec::event_value(EventKind::Add(258)), [0, 2, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(*codec::event_value(EventKind::Clear), [1]);
    assert_eq!(codec::time_value(Timestamp::from_micros(258)), [2, 1, 0, 0, 0, 0, 0, 0]);
    let cp = Checkpoint { count: -1, until: Timestamp::from_micros(1) };
    assert_eq!(
        codec::checkpoint_value(cp),
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(codec::token_key(&k, "t"), [2, b'n', b's', 0, 2, b'c', b'1', b't']);
    // Format 2 is format 1 plus the journal: one entry per group commit, its events in order;
    // format 3 adds the tokens they took (`key_codec.rs` pins those bytes).
    assert_eq!((codec::FORMAT_VERSION, codec::UPGRADES_FROM), (3, &[1, 2][..]));
    assert_eq!(codec::journal_key(1), [0, 0, 0, 0, 0, 0, 0, 1]);
    let mut entry = Vec::new();
    codec::push_journal_event(&mut entry, &event, &codec::event_value(EventKind::Clear), None);
    assert_eq!(entry, [[0, 16].as_slice(), &event, &[1, 1]].concat());
}

#[tokio::test]
async fn a_data_directory_written_by_format_1_opens_and_reads_the_same() {
    let (_dir, store) = open_copy("format-v1");

    let namespaces = store.list_namespaces().await.expect("namespaces");
    let shop = namespaces.iter().find(|(n, _)| n.as_str() == "shop").expect("shop");
    assert_eq!(shop.1.counter_type, CounterType::Accurate);
    assert_eq!(shop.1.accept_limit, Duration::from_secs(30));

    let orders = key("shop", "orders");
    let state = store.counter_state(&orders).await.expect("state");
    assert_eq!(state.checkpoint, Some(Checkpoint { count: 10, until: at(-60_000_000) }));
    assert_eq!(state.last_write, Some(at(-1_000_000)));
    let fold = store.fold(&orders, at(-60_000_000), at(0)).await.expect("fold");
    assert_eq!((fold.events, fold.apply_to(10)), (3, 5), "add 3, clear, add 5 after the checkpoint");
    let token = store.find_token(&orders, "order-7").await.expect("token");
    assert_eq!(token, Some(Stored { generation_time: at(-2_000_000), kind: EventKind::Clear }));

    let views = key("default", "home");
    let fold = store.fold(&views, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
    assert_eq!((fold.events, fold.apply_to(0)), (2, -3), "two tokenless adds");
    let scanned = store.scan_counters(None, None, 100).await.expect("scan");
    assert_eq!(
        scanned.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>(),
        ["shop:orders", "default:home"],
        "in key order: a namespace's length comes first"
    );
}
