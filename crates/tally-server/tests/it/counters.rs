//! Every operation on every counter type, through both front doors.

use std::time::Duration;

use tally_core::CounterKey;

use crate::support::{ALL_DOORS, DOORS, Door, TestServer, Through};

#[tokio::test]
async fn every_operation_on_every_counter_type_through_every_door() {
    let s = TestServer::start().await;
    for (ns, ty) in [("be", "best_effort"), ("ev", "eventual"), ("acc", "accurate")] {
        s.namespace(ns, ty).await;
        for door in ALL_DOORS {
            let c = format!("{door:?}:views/α b");
            let first = door.add(&s, ns, &c, 5, None).await.expect("add");
            assert!(first.applied);
            assert_eq!(
                first.token.is_some(),
                ty != "best_effort" && door != Door::Resp,
                "{ty}: server token only for durable types, echoed where the protocol can"
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
        assert_eq!(retry.token, Some(tally_client::Token::at("tok-1", at)));
        assert_eq!(door.get(&s, "acc", &c).await.expect("get"), 10);
        let clear = door.clear(&s, "acc", &c, Some(("tok-2", s.now()))).await.expect("clear");
        let again = door.clear(&s, "acc", &c, Some(("tok-2", s.now()))).await.expect("clear retry");
        assert_eq!((clear.applied, again.applied), (true, false));
        assert_eq!(door.get(&s, "acc", &c).await.expect("get"), 0);
    }
    s.stop().await;
}

/// The three doors, the Redis protocol included, answer alike: a token counts once and a retry
/// says so, a clear with a token likewise, a tokenless add counts, and each reads what the
/// others wrote.
#[tokio::test]
async fn a_token_counts_once_and_every_door_reads_the_others_writes() {
    let s = TestServer::start().await;
    s.namespace("acc", "accurate").await;
    for door in ALL_DOORS {
        let c = format!("{door:?}");
        let at = s.now();
        let first = door.add(&s, "acc", &c, 10, Some(("tok-1", at))).await.expect("add");
        let retry = door.add(&s, "acc", &c, 10, Some(("tok-1", at))).await.expect("retry");
        assert_eq!((first.applied, retry.applied), (true, false), "{door:?}");
        assert_eq!(door.get(&s, "acc", &c).await.expect("get"), 10, "{door:?}");
        let clear = door.clear(&s, "acc", &c, Some(("tok-2", s.now()))).await.expect("clear");
        let again = door.clear(&s, "acc", &c, Some(("tok-2", s.now()))).await.expect("clear retry");
        assert_eq!((clear.applied, again.applied), (true, false), "{door:?}");
        // Later than the clear: at the same time, events order by token, and `srv-` sorts first.
        s.clock.advance(Duration::from_millis(10));
        assert!(door.add(&s, "acc", &c, 5, None).await.expect("tokenless add").applied);
        assert_eq!(door.add_and_get(&s, "acc", &c, 2).await.expect("add-and-get"), 7, "{door:?}");
    }
    for writer in ALL_DOORS {
        let c = format!("shared-{writer:?}");
        writer.add(&s, "acc", &c, 4, Some(("w", s.now()))).await.expect("add");
        for reader in ALL_DOORS {
            assert_eq!(reader.get(&s, "acc", &c).await.expect("get"), 4, "{writer:?} → {reader:?}");
        }
    }
    let other_counter = Door::Resp.add(&s, "acc", "c", 1, Some(("tok-1", s.now()))).await;
    assert!(other_counter.is_ok(), "a token is per counter: {other_counter:?}");
    let conflict =
        Door::Resp.clear(&s, "acc", "Resp", Some(("tok-1", s.now()))).await.expect_err("reused token");
    assert_eq!(conflict.code(), Some(tally_core::ErrorCode::AlreadyExists), "{conflict:?}");
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

#[tokio::test]
async fn list_counters_pages_with_a_prefix_over_grpc_and_http() {
    use tally_proto::v1 as pb;
    use tally_proto::v1::counter_service_client::CounterServiceClient;
    let s = TestServer::start().await;
    s.namespace("shop", "accurate").await;
    for i in 0..12 {
        let name = if i % 3 == 0 { format!("views:{i}") } else { format!("orders:{i}") };
        Door::Grpc.add(&s, "shop", &name, i, None).await.expect("add");
    }
    let mut client = CounterServiceClient::new(s.channel().await);
    let (mut seen, mut page_token) = (Vec::new(), String::new());
    loop {
        let request = pb::ListCountersRequest {
            namespace: "shop".into(),
            prefix: "orders:".into(),
            page_size: 3,
            page_token: page_token.clone(),
        };
        let r = client.list_counters(request).await.expect("list").into_inner();
        assert!(r.counters.len() <= 3);
        seen.extend(r.counters.iter().map(|c| (c.counter_name.clone(), c.count)));
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    seen.sort();
    let mut expected: Vec<_> = (0..12).filter(|i| i % 3 != 0).map(|i| (format!("orders:{i}"), i)).collect();
    expected.sort();
    assert_eq!(seen, expected);

    let url = format!("{}/v1/namespaces/shop/counters?prefix=views:&limit=1000", s.http);
    let v: serde_json::Value = reqwest::get(&url).await.expect("get").json().await.expect("json");
    let mut names: Vec<&str> = v["counters"]
        .as_array()
        .expect("counters")
        .iter()
        .map(|c| c["counter_name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["views:0", "views:3", "views:6", "views:9"], "{v}");
    assert_eq!(v["next_page_token"], serde_json::Value::Null);
    let bad = reqwest::get(format!("{}/v1/namespaces/shop/counters?limit=5000", s.http)).await.expect("get");
    assert_eq!(bad.status(), 400);
    let bad = reqwest::get(format!("{}/v1/namespaces/shop/counters?colour=red", s.http)).await.expect("get");
    assert_eq!(bad.status(), 400);
    s.stop().await;
}

/// `ListEvents` over gRPC and HTTP: the same history, oldest first, clears included, in
/// pages that resume where the last one stopped; a bad page token is `INVALID_ARGUMENT`.
#[tokio::test]
async fn list_events_gives_the_same_history_over_grpc_and_http() {
    let s = TestServer::start().await;
    s.namespace("audit", "accurate").await;
    let now = s.now();
    Door::Grpc.add(&s, "audit", "c", 3, Some(("t1", now))).await.expect("add");
    Door::Http.clear(&s, "audit", "c", Some(("t2", now))).await.expect("clear");
    Door::Grpc.add(&s, "audit", "c", -4, Some(("t3", now))).await.expect("add");

    let mut grpc = tally_proto::v1::counter_service_client::CounterServiceClient::new(s.channel().await);
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = tally_proto::v1::ListEventsRequest {
            namespace: "audit".into(),
            counter_name: "c".into(),
            page_size: 2,
            page_token,
            ..Default::default()
        };
        let page = grpc.list_events(request).await.expect("ListEvents").into_inner();
        seen.extend(page.events.iter().map(|e| (e.token.clone(), e.kind, e.delta, e.folded)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let (add, clear) =
        (tally_proto::v1::MutationKind::Add as i32, tally_proto::v1::MutationKind::Clear as i32);
    assert_eq!(
        seen,
        [
            ("t1".to_owned(), add, 3, false),
            ("t2".to_owned(), clear, 0, false),
            ("t3".to_owned(), add, -4, false)
        ]
    );

    let body: serde_json::Value = reqwest::get(format!("{}/v1/namespaces/audit/counters/c/events", s.http))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let tokens: Vec<_> =
        body["events"].as_array().expect("events").iter().map(|e| e["token"].clone()).collect();
    assert_eq!(tokens, [serde_json::json!("t1"), serde_json::json!("t2"), serde_json::json!("t3")], "{body}");
    assert_eq!(body["events"][1]["kind"], serde_json::json!("clear"));
    assert_eq!(body["next_page_token"], serde_json::json!(null));
    let bad = reqwest::get(format!("{}/v1/namespaces/audit/counters/c/events?page_token=nope", s.http))
        .await
        .expect("get");
    assert_eq!(bad.status(), 400);
    s.stop().await;
}

/// `GetCountSeries` over gRPC and HTTP: the same buckets, a clear counted in its bucket and
/// not subtracted, the total as the windowed count; a bad step is `INVALID_ARGUMENT`, a
/// `best_effort` counter `FAILED_PRECONDITION`.
#[tokio::test]
async fn get_count_series_and_windowed_counts_agree_over_grpc_and_http() {
    let s = TestServer::start().await;
    s.namespace("series", "eventual").await;
    let start = s.now();
    for (i, delta) in [(0u64, 2), (0, 3), (1, 4)] {
        let at = start.saturating_add(Duration::from_secs(60 * i) + Duration::from_millis(i + 1));
        s.clock.set(at);
        Door::Grpc.add(&s, "series", "c", delta, Some((&format!("t{i}-{delta}"), at))).await.expect("add");
    }
    s.clock.advance(Duration::from_millis(5));
    Door::Http.clear(&s, "series", "c", None).await.expect("clear");

    let mut grpc = tally_proto::v1::counter_service_client::CounterServiceClient::new(s.channel().await);
    let request = tally_proto::v1::GetCountSeriesRequest {
        namespace: "series".into(),
        counter_name: "c".into(),
        from: Some(tally_server::convert::timestamp_to_proto(start)),
        to: Some(tally_server::convert::timestamp_to_proto(start.saturating_add(Duration::from_secs(180)))),
        step: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        last: None,
    };
    let series = grpc.get_count_series(request).await.expect("GetCountSeries").into_inner();
    let buckets: Vec<_> = series.buckets.iter().map(|b| (b.added, b.adds, b.clears)).collect();
    assert_eq!(buckets, [(5, 2, 0), (4, 1, 1), (0, 0, 0)]);
    assert_eq!(series.total, 9);
    assert_eq!(Door::Grpc.get(&s, "series", "c").await.expect("get"), 0, "the count is the value now");

    let url = format!(
        "{}/v1/namespaces/series/counters/c/series?from={}&to={}&step=1m",
        s.http,
        start,
        start.saturating_add(Duration::from_secs(180))
    );
    let body: serde_json::Value = reqwest::get(&url).await.expect("get").json().await.expect("json");
    let http: Vec<_> = body["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| {
            (
                b["added"].as_i64().expect("added"),
                b["adds"].as_u64().expect("adds"),
                b["clears"].as_u64().expect("clears"),
            )
        })
        .collect();
    assert_eq!(http, buckets, "{body}");
    assert_eq!((body["total"].as_i64(), body["step"].as_str()), (Some(9), Some("1m")), "{body}");
    let last = reqwest::get(format!("{}/v1/namespaces/series/counters/c/series?last=10m&step=1m", s.http))
        .await
        .expect("get")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    assert_eq!(last["buckets"].as_array().map(Vec::len), Some(10), "{last}");
    assert_eq!(last["total"].as_i64(), Some(9), "{last}");

    // The windowed count is the series' total over one bucket: over HTTP and gRPC.
    let windowed = reqwest::get(format!("{}/v1/namespaces/series/counters/c?window=10m", s.http))
        .await
        .expect("get")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    assert_eq!(
        (windowed["count"].as_i64(), &windowed["as_of"]),
        (Some(9), &serde_json::Value::Null),
        "{windowed}"
    );
    let asked = tally_proto::v1::GetCountRequest {
        namespace: "series".into(),
        counter_name: "c".into(),
        window: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
    };
    assert_eq!(grpc.get_count(asked).await.expect("GetCount").into_inner().count, 9);

    let bad = reqwest::get(format!("{}/v1/namespaces/series/counters/c/series?step=1us", s.http))
        .await
        .expect("get");
    assert_eq!(bad.status(), 400);
    s.namespace("fleeting", "best_effort").await;
    let refused =
        reqwest::get(format!("{}/v1/namespaces/fleeting/counters/c/series", s.http)).await.expect("get");
    assert_eq!(refused.status(), 400, "FAILED_PRECONDITION");
    let refused =
        reqwest::get(format!("{}/v1/namespaces/fleeting/counters/c?window=1h", s.http)).await.expect("get");
    assert_eq!(refused.status(), 400, "a windowed count of a best_effort counter");
    s.stop().await;
}
