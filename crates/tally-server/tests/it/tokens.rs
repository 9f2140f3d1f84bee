//! A client's token alone makes a mutation apply once, on every door, whatever generation
//! time its retries carry (the same, a new one, or none).

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{Value, json};
use tally_proto::v1 as pb;
use tally_proto::v1::counter_service_client::CounterServiceClient;
use tally_server::convert;

use crate::support::{Door, TestServer, Through};

async fn grpc_add(
    s: &TestServer,
    counter: &str,
    delta: i64,
    token: pb::IdempotencyToken,
) -> pb::AddCountResponse {
    let mut c = CounterServiceClient::new(s.channel().await);
    let request = pb::AddCountRequest {
        namespace: "default".into(),
        counter_name: counter.into(),
        delta,
        idempotency_token: Some(token),
    };
    c.add_count(request).await.expect("add").into_inner()
}

async fn http_add(s: &TestServer, counter: &str, body: Value) -> (u16, Value) {
    let url = format!("{}/v1/namespaces/default/counters/{counter}/add", s.http);
    let r = reqwest::Client::new().post(url).body(body.to_string()).send().await.expect("post");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test]
async fn a_grpc_retry_restamped_each_attempt_counts_once() {
    let s = TestServer::start().await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let token = pb::IdempotencyToken {
            token: "order-7".into(),
            generation_time: Some(convert::timestamp_to_proto(s.now())),
        };
        answers.push(grpc_add(&s, "restamped", 4, token).await);
        s.clock.advance(Duration::from_millis(700));
    }
    let applied: Vec<bool> = answers.iter().map(|a| a.applied).collect();
    assert_eq!(applied, [true, false, false]);
    // Every answer carries the generation time the first arrival fixed.
    let times: Vec<_> =
        answers.iter().map(|a| a.idempotency_token.clone().expect("token").generation_time).collect();
    assert!(times.iter().all(|t| *t == times[0]), "{times:?}");
    assert_eq!(Door::Grpc.get(&s, "default", "restamped").await.expect("get"), 4);
    s.stop().await;
}

#[tokio::test]
async fn tokens_without_a_generation_time_apply_once_on_grpc_and_http() {
    let s = TestServer::start().await;
    let bare = pb::IdempotencyToken { token: "g-1".into(), generation_time: None };
    assert!(grpc_add(&s, "bare", 2, bare.clone()).await.applied);
    s.clock.advance(Duration::from_secs(30));
    let again = grpc_add(&s, "bare", 2, bare).await;
    assert!(!again.applied, "a retry past accept_limit is still a retry");

    let body = json!({"delta": 3, "idempotency_token": {"token": "h-1"}});
    let (status, first) = http_add(&s, "bare", body.clone()).await;
    assert_eq!((status, &first["applied"]), (200, &json!(true)));
    assert!(first["idempotency_token"]["generation_time"].is_string(), "{first}");
    let (_, second) = http_add(&s, "bare", body).await;
    assert_eq!(second["applied"], json!(false));
    assert_eq!(second["idempotency_token"], first["idempotency_token"]);
    assert_eq!(Door::Http.get(&s, "default", "bare").await.expect("get"), 5);

    // The same token with another mutation is still a conflict.
    let (status, refused) =
        http_add(&s, "bare", json!({"delta": 9, "idempotency_token": {"token": "h-1"}})).await;
    assert_eq!((status, &refused["error"]["code"]), (409, &json!("ALREADY_EXISTS")), "{refused}");
    s.stop().await;
}

#[tokio::test]
async fn redis_tally_add_with_a_token_applies_once() {
    let s = TestServer::start().await;
    let mut c = s.redis(false).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let applied: i64 = redis::cmd("TALLY.ADD")
            .arg("default:k")
            .arg(1)
            .arg("tok")
            .query_async(&mut c)
            .await
            .expect("add");
        answers.push(applied);
        s.clock.advance(Duration::from_secs(2));
    }
    assert_eq!(answers, [1, 0, 0]);
    // A token first sent over HTTP is the same token on the Redis door.
    let (_, http) = http_add(&s, "k", json!({"delta": 1, "idempotency_token": {"token": "shared"}})).await;
    assert_eq!(http["applied"], json!(true));
    let applied: i64 =
        redis::cmd("TALLY.ADD").arg("default:k").arg(1).arg("shared").query_async(&mut c).await.expect("add");
    assert_eq!(applied, 0);
    let v: String = c.get("default:k").await.expect("get");
    assert_eq!(v, "2");
    s.stop().await;
}

#[tokio::test]
async fn a_token_is_free_again_after_the_idempotency_window() {
    let s = TestServer::start().await;
    let token = || pb::IdempotencyToken { token: "w".into(), generation_time: None };
    assert!(grpc_add(&s, "window", 1, token()).await.applied);
    s.clock.advance(Duration::from_secs(9 * 60));
    assert!(!grpc_add(&s, "window", 1, token()).await.applied, "inside the 10 minute default");
    s.clock.advance(Duration::from_secs(2 * 60));
    assert!(grpc_add(&s, "window", 1, token()).await.applied, "past the window it is a new mutation");
    s.converge().await;
    assert_eq!(Door::Grpc.get(&s, "default", "window").await.expect("get"), 2);
    s.stop().await;
}
