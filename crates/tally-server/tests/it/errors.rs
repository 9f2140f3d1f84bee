//! Every class of bad input, over both doors: the documented code, and nothing written.
//!
//! The table in README.md ("Errors") lists the same rows.

use std::time::Duration;

use serde_json::json;
use tally_core::{CounterKey, Namespace};
use tally_store::CounterState;

use crate::support::{ALL_DOORS, ClientError, Door, TestServer, Through};

/// Asserts the store holds no counter and only the namespaces `namespaces`.
async fn nothing_written(s: &TestServer, namespaces: &[&str]) {
    let counters = s.store.scan_counters(None, None, 10).await.expect("scan");
    assert!(counters.is_empty(), "counters were written: {counters:?}");
    let stored: Vec<String> =
        s.store.list_namespaces().await.expect("list").into_iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(stored, namespaces);
}

fn expect(
    result: Result<impl std::fmt::Debug, ClientError>,
    code: &str,
    status: u16,
    door: Door,
    what: &str,
) -> ClientError {
    let refused = result.expect_err(what);
    assert_eq!(refused.code().map(|c| c.as_str()), Some(code), "{door:?} {what}: {refused}");
    if let (Door::Http, ClientError::Refused { http_status, .. }) = (door, &refused) {
        assert_eq!(*http_status, Some(status), "{what}");
    }
    refused
}

#[tokio::test]
async fn bad_names_and_unknown_namespaces_are_refused_over_every_door() {
    let s = TestServer::start().await;
    let long_ns = "n".repeat(65);
    let long_counter = "c".repeat(257);
    for door in ALL_DOORS {
        let r = expect(
            door.add(&s, "bad ns!", "c", 1, None).await,
            "INVALID_ARGUMENT",
            400,
            door,
            "invalid namespace",
        );
        assert!(r.message().contains("namespace \"bad ns!\" contains ' '"), "{}", r.message());
        let r = expect(
            door.add(&s, &long_ns, "c", 1, None).await,
            "INVALID_ARGUMENT",
            400,
            door,
            "long namespace",
        );
        assert!(r.message().contains("namespace is 65 bytes long; the limit is 64 bytes"), "{}", r.message());
        let r = expect(
            door.add(&s, "default", "a\tb", 1, None).await,
            "INVALID_ARGUMENT",
            400,
            door,
            "control char",
        );
        assert!(r.message().contains("counter name"), "{}", r.message());
        let r = expect(
            door.get(&s, "default", &long_counter).await,
            "INVALID_ARGUMENT",
            400,
            door,
            "long counter",
        );
        assert!(r.message().contains("counter name is 257 bytes long"), "{}", r.message());
        let r =
            expect(door.add(&s, "nowhere", "c", 1, None).await, "NOT_FOUND", 404, door, "unknown namespace");
        assert_eq!(r.message(), "namespace nowhere does not exist");
        expect(door.get(&s, "nowhere", "c").await, "NOT_FOUND", 404, door, "unknown namespace read");
    }
    nothing_written(&s, &["default"]).await;
    s.stop().await;
}

#[tokio::test]
async fn window_violations_are_refused_over_every_door() {
    let s = TestServer::start().await;
    for door in ALL_DOORS {
        let old = s.now().saturating_sub(Duration::from_secs(6));
        let r = expect(
            door.add(&s, "default", "c", 1, Some(("t", old))).await,
            "OUT_OF_RANGE",
            400,
            door,
            "too old",
        );
        assert!(
            r.message().contains("is too old") && r.message().contains("accept_limit 5s"),
            "{}",
            r.message()
        );
        let future = s.now().saturating_add(Duration::from_secs(2));
        let r = expect(
            door.clear(&s, "default", "c", Some(("t", future))).await,
            "OUT_OF_RANGE",
            400,
            door,
            "future",
        );
        assert!(
            r.message().contains("too far in the future") && r.message().contains("clock_skew 1s"),
            "{}",
            r.message()
        );
    }
    nothing_written(&s, &["default"]).await;
    s.stop().await;
}

#[tokio::test]
async fn overflow_and_reused_tokens_are_refused_and_change_nothing() {
    let s = TestServer::start().await;
    s.namespace("acc", "accurate").await;
    for door in ALL_DOORS {
        let c = format!("{door:?}");
        door.add(&s, "acc", &c, i64::MAX, Some(("max", s.now()))).await.expect("add max");
        let r = expect(door.add(&s, "acc", &c, 1, None).await, "OUT_OF_RANGE", 400, door, "overflow");
        assert!(r.message().contains("would overflow the signed 64-bit range"), "{}", r.message());
        let at = s.now();
        door.add(&s, "acc", &c, -5, Some(("reused", at))).await.expect("add");
        let r = expect(
            door.add(&s, "acc", &c, -6, Some(("reused", at))).await,
            "ALREADY_EXISTS",
            409,
            door,
            "reuse",
        );
        assert!(
            r.message().contains("was already used") && r.message().contains("an add of -5"),
            "{}",
            r.message()
        );
        assert_eq!(door.get(&s, "acc", &c).await.expect("get"), i64::MAX - 5);
    }
    s.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_refused_over_every_door() {
    let s = TestServer::start().await;
    // The test server's limit is 4096 bytes; a 5000-byte token name fills the message.
    let big = "x".repeat(5000);
    for door in [Door::Grpc, Door::Http] {
        let r = expect(
            door.add(&s, "default", "c", 1, Some((&big, s.now()))).await,
            "OUT_OF_RANGE",
            413,
            door,
            "big",
        );
        assert!(r.message().contains("4096"), "{}", r.message());
    }
    // The Redis protocol refuses it as Redis does an oversized argument: `-ERR Protocol
    // error`, before reading it, and closes the connection.
    let r = Door::Resp.add(&s, "default", "c", 1, Some((&big, s.now()))).await.expect_err("big");
    assert!(matches!(r, ClientError::Protocol { .. }) && r.wrote_nothing(), "{r:?}");
    assert!(r.message().contains("Protocol error") && r.message().contains("4096"), "{}", r.message());
    nothing_written(&s, &["default"]).await;
    s.stop().await;
}

#[tokio::test]
async fn malformed_http_bodies_are_refused_with_invalid_argument() {
    let s = TestServer::start().await;
    let url = format!("{}/v1/namespaces/default/counters/c/add", s.http);
    let cases = [
        ("{\"delta\": 1", "EOF while parsing"),
        ("{\"delta\": \"one\"}", "invalid type: string \"one\", expected i64"),
        ("{\"delta\": 1, \"colour\": 2}", "unknown field `colour`"),
        ("{\"delta\": 1, \"idempotency_token\": {\"token\": \"\"}}", "must not be empty"),
        (
            "{\"delta\": 1, \"idempotency_token\": {\"token\": \"t\", \"generation_time\": \"soon\"}}",
            "not an RFC 3339 time",
        ),
        ("{\"delta\": 18446744073709551616}", "expected i64"),
        ("{\"delta\": 1, \"delta\": 2}", "duplicate field `delta`"),
        ("{\"idempotency_token\": {\"token\": \"a\", \"token\": \"b\"}}", "duplicate field `token`"),
        ("[5]", "expected an object, found an array"),
    ];
    for (body, needle) in cases {
        let r = reqwest::Client::new().post(&url).body(body).send().await.expect("post");
        assert_eq!(r.status(), 400, "{body}");
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "INVALID_ARGUMENT", "{body}");
        let message = v["error"]["message"].as_str().expect("message");
        assert!(message.contains(needle), "{body}: {message}");
    }
    let r = reqwest::Client::new()
        .put(format!("{}/v1/namespaces/typo", s.http))
        .body(json!({"acept_limit": "2s"}).to_string())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 400);
    // A path whose percent-encoding is not UTF-8 gets the same JSON error shape.
    let r = reqwest::get(format!("{}/v1/namespaces/default/counters/%FF", s.http)).await.expect("get");
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.expect("json error body");
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
    nothing_written(&s, &["default"]).await;
    let key =
        CounterKey::new(Namespace::default_namespace(), tally_core::CounterName::new("c").expect("name"));
    assert_eq!(s.store.counter_state(&key).await.expect("state"), CounterState::default());
    s.stop().await;
}

#[tokio::test]
async fn regression_a_generation_time_past_the_representable_range_is_out_of_range() {
    let s = TestServer::start().await;
    let url = format!("{}/v1/namespaces/default/counters/c/add", s.http);
    for time in ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-05:00"] {
        let body = format!(
            "{{\"delta\": 1, \"idempotency_token\": {{\"token\": \"far\", \"generation_time\": \"{time}\"}}}}"
        );
        let r = reqwest::Client::new().post(&url).body(body).send().await.expect("post");
        assert_eq!(r.status(), 400, "{time}");
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "OUT_OF_RANGE", "{time}: {v}");
    }
    s.stop().await;
}

#[tokio::test]
async fn regression_a_json_body_with_a_duplicate_field_is_refused_and_changes_nothing() {
    let s = TestServer::start().await;
    let url = format!("{}/v1/namespaces/default/counters/dup/add", s.http);
    let r = reqwest::Client::new().post(&url).body(r#"{"delta": 1, "delta": 2}"#).send().await.expect("post");
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT", "{v}");
    let count: serde_json::Value = reqwest::get(format!("{}/v1/namespaces/default/counters/dup", s.http))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(count["count"], 0, "{count}");
    s.stop().await;
}

/// Sends bytes as they are, for requests no protobuf encoder would make.
#[derive(Default)]
struct RawBytes;

struct RawEncoder;

struct AnyReply;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = AnyReply;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> AnyReply {
        AnyReply
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for AnyReply {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, _: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        Ok(Some(()))
    }
}

/// Malformed protobuf and strings that are not UTF-8 were answered `INTERNAL`, which tells a
/// client the add may have been applied; they never are.
#[tokio::test]
async fn regression_a_request_that_does_not_decode_is_invalid_argument() {
    let s = TestServer::start().await;
    s.namespace("web", "eventual").await;
    let not_protobuf = vec![0xff, 0xff, 0xff, 0xff];
    // Field 1 (namespace), length 2, bytes that are not UTF-8.
    let not_utf8 = vec![0x0a, 0x02, 0xff, 0xfe, 0x12, 0x01, b'c', 0x18, 0x01];
    for body in [not_protobuf, not_utf8] {
        let mut grpc = tonic::client::Grpc::new(s.channel().await);
        grpc.ready().await.expect("ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tally.v1.CounterService/AddCount");
        let status =
            grpc.unary(tonic::Request::new(body.clone()), path, RawBytes).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{body:?}: {status:?}");
    }
    nothing_written(&s, &["default", "web"]).await;
    s.stop().await;
}
