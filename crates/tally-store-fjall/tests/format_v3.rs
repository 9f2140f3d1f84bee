//! On-disk format 3, pinned: a data directory format 3 wrote, committed under
//! `tests/data/format-v3/`, which every later build must still open and read the same. Two
//! events took clients' tokens and were moved into the tables; two more took tokens and are
//! still staged, so that their tokens are only in the journal (the process ended before the
//! move), and a later build must find both kinds.
//!
//! The fixture was written by the ignored test at the end:
//! `cargo test -p tally-store-fjall --test format_v3 -- --ignored write_the_format_3_fixture`.

use tally_core::{EventKind, Timestamp};
use tally_store::{Appended, EventLog, Stored};

mod common;
use common::{WINDOW, at, event, key, open_copy, rewrite_fixture, trim_for_git};

#[tokio::test]
async fn a_data_directory_written_by_format_3_finds_the_tokens_of_its_tables_and_its_journal() {
    let (_dir, store) = open_copy("format-v3");
    let orders = key("shop", "orders");
    let fold = store.fold(&orders, Timestamp::MIN, Timestamp::MAX).await.expect("fold");
    assert_eq!((fold.events, fold.apply_to(0)), (4, 5), "add 10, add 3 (tables), clear, add 5 (journal)");
    for (token, time, kind) in [
        ("order-1", at(-90_000_000), EventKind::Add(10)),
        ("order-2", at(-3_000_000), EventKind::Add(3)),
        ("order-7", at(-2_000_000), EventKind::Clear),
        ("order-9", at(-1_000_000), EventKind::Add(5)),
    ] {
        let found = store.find_token(&orders, token).await.expect("token");
        assert_eq!(found, Some(Stored { generation_time: time, kind }), "{token}");
        // A retry stamped anew is the duplicate it is, whether its token moved or not.
        let retry = event(&orders, token, at(-10), kind);
        let appended = store.append(&retry, Timestamp::MAX, WINDOW).await.expect("retry");
        assert_eq!(appended, Appended::Duplicate { generation_time: time }, "{token}");
    }
    // Moved into the tables now, the journal's tokens are still found.
    store.compact().await.expect("compact");
    let found = store.find_token(&orders, "order-9").await.expect("token");
    assert_eq!(found, Some(Stored { generation_time: at(-1_000_000), kind: EventKind::Add(5) }));
}

/// Writes the fixture: run by hand, once per format version.
#[tokio::test]
#[ignore = "writes tests/data/format-v3; run by hand for a new format version"]
async fn write_the_format_3_fixture() {
    let (dir, store) = rewrite_fixture("format-v3");
    let orders = key("shop", "orders");
    let append = |token, time, kind| {
        let e = event(&orders, token, time, kind);
        let store = &store;
        async move { store.append(&e, Timestamp::MAX, WINDOW).await.expect("append") }
    };
    append("order-1", at(-90_000_000), EventKind::Add(10)).await;
    append("order-2", at(-3_000_000), EventKind::Add(3)).await;
    // These two, and their tokens, into the tables; the rest stays staged, in the journal only.
    store.compact().await.expect("compact");
    append("order-7", at(-2_000_000), EventKind::Clear).await;
    append("order-9", at(-1_000_000), EventKind::Add(5)).await;
    drop(store);
    trim_for_git(&dir);
}
