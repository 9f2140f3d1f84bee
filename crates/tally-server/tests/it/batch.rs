//! `BatchAddCount` and `BatchGetCount` over gRPC and HTTP: every item answered on its own.

use serde_json::{Value, json};
use tally_proto::v1 as pb;
use tally_proto::v1::counter_service_client::CounterServiceClient;

use tally_server::ServerConfig;

use crate::support::TestServer;

fn add(
    namespace: &str,
    counter: &str,
    delta: i64,
    token: Option<&str>,
    s: &TestServer,
) -> pb::AddCountRequest {
    pb::AddCountRequest {
        namespace: namespace.to_owned(),
        counter_name: counter.to_owned(),
        delta,
        idempotency_token: token.map(|t| pb::IdempotencyToken {
            token: t.to_owned(),
            generation_time: Some(tally_server::convert::timestamp_to_proto(s.now())),
        }),
    }
}

#[tokio::test]
async fn batch_add_over_grpc_answers_each_item_in_order_and_refuses_only_bad_ones() {
    let s = TestServer::start_with(ServerConfig { max_body_bytes: 64 * 1024, ..TestServer::config() }).await;
    s.namespace("ev", "eventual").await;
    let mut client = CounterServiceClient::new(s.channel().await);
    let adds = vec![
        add("ev", "a", 2, None, &s),
        add("ev", "a", 3, Some("t-1"), &s),
        add("no such ns", "a", 1, None, &s),
        add("ev", "a", 3, Some("t-1"), &s),
        add("missing", "a", 1, None, &s),
        add("ev", "b", 7, None, &s),
    ];
    let results =
        client.batch_add_count(pb::BatchAddCountRequest { adds }).await.expect("batch").into_inner().results;
    use pb::batch_add_count_result::Result as R;
    let summary: Vec<_> = results
        .iter()
        .map(|r| match r.result.as_ref().expect("result") {
            R::Added(a) => format!("{}:{}", a.applied, a.count),
            R::Error(e) => e.code.clone(),
        })
        .collect();
    assert_eq!(summary, ["true:2", "true:5", "INVALID_ARGUMENT", "false:5", "NOT_FOUND", "true:7"]);

    let gets = ["a", "b", "never"]
        .iter()
        .map(|c| pb::GetCountRequest { namespace: "ev".into(), counter_name: (*c).into(), window: None })
        .chain([pb::GetCountRequest { namespace: "missing".into(), counter_name: "a".into(), window: None }])
        .collect();
    let read =
        client.batch_get_count(pb::BatchGetCountRequest { gets }).await.expect("batch get").into_inner();
    use pb::batch_get_count_result::Result as G;
    let counts: Vec<_> = read
        .results
        .iter()
        .map(|r| match r.result.as_ref().expect("result") {
            G::Count(c) => c.count.to_string(),
            G::Error(e) => e.code.clone(),
        })
        .collect();
    assert_eq!(counts, ["5", "7", "0", "NOT_FOUND"]);

    let too_many = (0..1001).map(|i| add("ev", &format!("c{i}"), 1, None, &s)).collect();
    let err = client.batch_add_count(pb::BatchAddCountRequest { adds: too_many }).await.expect_err("too big");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("at most 1000"), "{}", err.message());
    s.stop().await;
}

#[tokio::test]
async fn batch_add_over_http_answers_each_item_in_order_and_refuses_only_bad_ones() {
    let s = TestServer::start_with(ServerConfig { max_body_bytes: 64 * 1024, ..TestServer::config() }).await;
    s.namespace("ev", "eventual").await;
    let http = reqwest::Client::new();
    let token = json!({"token": "h-1", "generation_time": s.now().to_string()});
    let body = json!({"adds": [
        {"namespace": "ev", "counter_name": "a", "delta": 2},
        {"namespace": "ev", "counter_name": "a", "delta": 3, "idempotency_token": token},
        {"namespace": "ev", "counter_name": "a", "delta": 3, "idempotency_token": token},
        {"namespace": "missing", "counter_name": "a"},
        {"namespace": "ev", "counter_name": "b"}
    ]});
    let r = http
        .post(format!("{}/v1/counters:batchAdd", s.http))
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 5);
    assert_eq!((results[0]["applied"].as_bool(), results[0]["count"].as_i64()), (Some(true), Some(2)));
    assert_eq!((results[1]["applied"].as_bool(), results[1]["count"].as_i64()), (Some(true), Some(5)));
    assert_eq!((results[2]["applied"].as_bool(), results[2]["count"].as_i64()), (Some(false), Some(5)));
    assert_eq!(results[3]["error"]["code"], "NOT_FOUND");
    assert_eq!(results[4]["count"], 1, "delta defaults to 1");

    let gets = json!({"gets": [{"namespace": "ev", "counter_name": "a"}, {"namespace": "bad ns", "counter_name": "a"}]});
    let r = http
        .post(format!("{}/v1/counters:batchGet", s.http))
        .body(gets.to_string())
        .send()
        .await
        .expect("post");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["results"][0]["count"], 5);
    assert_eq!(v["results"][1]["error"]["code"], "INVALID_ARGUMENT");

    let unknown_field = json!({"adds": [{"namespace": "ev", "counter_name": "a", "dleta": 1}]});
    let r = http
        .post(format!("{}/v1/counters:batchAdd", s.http))
        .body(unknown_field.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400, "a malformed batch is refused whole and counts nothing");
    s.stop().await;
}
