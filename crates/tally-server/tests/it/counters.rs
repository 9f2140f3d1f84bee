//! Every operation on every counter type, through both front doors.

use std::time::Duration;

use tally_core::CounterKey;

use crate::support::{DOORS, TestServer};

#[tokio::test]
async fn every_operation_on_every_counter_type_through_both_doors() {
    let s = TestServer::start().await;
    for (ns, ty) in [("be", "best_effort"), ("ev", "eventual"), ("acc", "accurate")] {
        s.namespace(ns, ty).await;
        for door in DOORS {
            let c = format!("{door:?}:views/α b");
            let first = door.add(&s, ns, &c, 5, None).await.expect("add");
            assert!(first.applied);
            assert_eq!(
                first.token.is_some(),
                ty != "best_effort",
                "{ty}: server token only for durable types"
            );
            let count = door.add_and_get(&s, ns, &c, 2).await.expect("add-and-get");
            // One instance on the embedded store: every type answers the count after the add.
            assert_eq!(count, 7, "{ty} {door:?} add-and-get");
            s.converge().await;
            assert_eq!(door.get(&s, ns, &c).await.expect("get"), 7, "{ty} {door:?}");
            s.clock.advance(Duration::from_millis(10));
            door.clear(&s, ns, &c, None).await.expect("clear");
            door.add(&s, ns, &c, 3, None).await.expect("add after clear");
            s.converge().await;
            assert_eq!(door.get(&s, ns, &c).await.expect("get"), 3, "{ty} {door:?} after clear");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn idempotent_retries_count_once_through_both_doors() {
    let s = TestServer::start().await;
    s.namespace("acc", "accurate").await;
    for door in DOORS {
        let c = format!("{door:?}");
        let at = s.now();
        let first = door.add(&s, "acc", &c, 10, Some(("tok-1", at))).await.expect("add");
        let retry = door.add(&s, "acc", &c, 10, Some(("tok-1", at))).await.expect("retry");
        assert_eq!((first.applied, retry.applied), (true, false));
        assert_eq!(retry.token, Some(("tok-1".to_owned(), at)));
        assert_eq!(door.get(&s, "acc", &c).await.expect("get"), 10);
        let clear = door.clear(&s, "acc", &c, Some(("tok-2", s.now()))).await.expect("clear");
        let again = door.clear(&s, "acc", &c, Some(("tok-2", s.now()))).await.expect("clear retry");
        assert_eq!((clear.applied, again.applied), (true, false));
        assert_eq!(door.get(&s, "acc", &c).await.expect("get"), 0);
    }
    s.stop().await;
}

#[tokio::test]
async fn a_write_through_one_door_is_read_through_the_other() {
    let s = TestServer::start().await;
    s.namespace("acc", "accurate").await;
    let [grpc, http] = DOORS;
    grpc.add(&s, "acc", "shared", 4, None).await.expect("add");
    http.add(&s, "acc", "shared", 6, None).await.expect("add");
    assert_eq!(grpc.get(&s, "acc", "shared").await.expect("get"), 10);
    assert_eq!(http.get(&s, "acc", "shared").await.expect("get"), 10);
    assert_eq!(grpc.namespaces(&s).await, http.namespaces(&s).await);
    let key = CounterKey::parse_joined("acc:shared").expect("key");
    assert!(s.store.counter_state(&key).await.expect("state").last_write.is_some());
    s.stop().await;
}
