//! On-disk format 1, pinned: the bytes of every key and value kind, and a data directory this
//! format wrote, committed under `tests/data/format-v1/`, which every later build must still
//! open and read the same. A change that fails here changes the format: it needs a new
//! format version and a migration, not a new fixture.
//!
//! The fixture was written by the ignored test at the end:
//! `cargo test -p tally-store-fjall --test format_v1 -- --ignored write_the_format_1_fixture`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tally_core::{
    Checkpoint, CounterKey, CounterName, CounterType, Event, EventKind, IdempotencyToken, ManualClock,
    Namespace, NamespaceConfig, Timestamp,
};
use tally_store::{CounterStore, EventLog, NamespaceStore, Stored};
use tally_store_fjall::key_codec as codec;
use tally_store_fjall::{FjallOptions, FjallStore};

/// The fixture's clock: 2026-11-30T00:00:00Z.
const NOW: i64 = 1_796_083_200_000_000;
const WINDOW: Duration = Duration::from_secs(3600);

fn key(ns: &str, counter: &str) -> CounterKey {
    CounterKey::new(Namespace::new(ns).expect("ns"), CounterName::new(counter).expect("counter"))
}

fn at(offset_micros: i64) -> Timestamp {
    Timestamp::from_micros(NOW + offset_micros)
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-v1")
}

fn open(dir: &Path) -> FjallStore {
    FjallStore::open(dir, Arc::new(ManualClock::new(at(0))), FjallOptions::default()).expect("opens")
}

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
    assert_eq!(codec::event_value(EventKind::Add(-2)), [0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(codec::event_value(EventKind::Add(258)), [0, 2, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(codec::event_value(EventKind::Clear), [1]);
    assert_eq!(codec::time_value(Timestamp::from_micros(258)), [2, 1, 0, 0, 0, 0, 0, 0]);
    let cp = Checkpoint { count: -1, until: Timestamp::from_micros(1) };
    assert_eq!(
        codec::checkpoint_value(cp),
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(codec::token_key(&k, "t"), [2, b'n', b's', 0, 2, b'c', b'1', b't']);
    // Format 2 is format 1 plus the journal: one entry per group commit, its events in order.
    assert_eq!((codec::FORMAT_VERSION, codec::UPGRADES_FROM), (2, 1));
    assert_eq!(codec::journal_key(1), [0, 0, 0, 0, 0, 0, 0, 1]);
    let mut entry = Vec::new();
    codec::push_journal_event(&mut entry, &event, &codec::event_value(EventKind::Clear));
    assert_eq!(entry, [[0, 16].as_slice(), &event, &[1, 1]].concat());
}

#[tokio::test]
async fn a_data_directory_written_by_format_1_opens_and_reads_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&fixture(), dir.path());
    let store = open(dir.path());

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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("the committed fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn event(key: &CounterKey, token: &str, time: Timestamp, kind: EventKind) -> Event {
    Event { key: key.clone(), token: IdempotencyToken::new(token, time).expect("token"), kind }
}

/// Writes the fixture: run by hand, once per format version.
#[tokio::test]
#[ignore = "writes tests/data/format-v1; run by hand for a new format version"]
async fn write_the_format_1_fixture() {
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    let store = open(&dir);
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
        event(&orders, "order-7", at(-2_000_000), EventKind::Clear),
        event(&orders, "order-9", at(-1_000_000), EventKind::Add(5)),
    ] {
        store.append(&e, deadline, WINDOW).await.expect("append");
    }
    store
        .put_checkpoint(&orders, Checkpoint { count: 10, until: at(-60_000_000) })
        .await
        .expect("checkpoint");
    let home = key("default", "home");
    for (token, delta) in [("srv-1", -4), ("srv-2", 1)] {
        store
            .append_new(&event(&home, token, at(-500_000), EventKind::Add(delta)), deadline)
            .await
            .expect("append");
    }
    // Everything into tables, so that the journal holds nothing the fixture needs.
    store.compact().await.expect("compact");
    drop(store);
    trim_for_git(&dir);
}

/// Shrinks what git would store badly: journals are preallocated (64 MiB of zeros), so they
/// are cut after their last written byte, and empty folders (which git cannot hold, and
/// which the store does not need) are removed.
fn trim_for_git(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("fixture") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            trim_for_git(&path);
            if std::fs::read_dir(&path).expect("dir").next().is_none() {
                std::fs::remove_dir(&path).expect("remove empty dir");
            }
        } else if path.extension().is_some_and(|e| e == "jnl") {
            let bytes = std::fs::read(&path).expect("journal");
            let used = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            std::fs::write(&path, &bytes[..used]).expect("trim journal");
        }
    }
}
