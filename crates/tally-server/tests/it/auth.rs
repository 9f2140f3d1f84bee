//! Authentication and authorization on every front door: a missing or wrong token is
//! UNAUTHENTICATED, a token without the scope is PERMISSION_DENIED, and neither changes anything.

use redis::AsyncCommands;
use serde_json::json;
use tally_core::{CounterKey, CounterType, Namespace, NamespaceConfig};
use tally_proto::v1 as pb;
use tally_proto::v1::counter_service_client::CounterServiceClient;
use tally_server::ServerConfig;
use tally_server::auth::{AuthSection, TokenEntry};
use tonic::metadata::MetadataValue;

use crate::support::TestServer;

const WRITER: &str = "writer-token-0000001";
const READER: &str = "reader-token-0000001";
const ADMIN: &str = "admin-token-00000001";
const PEER: &str = "peer-token-000000001";

async fn server() -> TestServer {
    let entry = |name: &str, token: &str, scope: &str| TokenEntry {
        name: name.to_owned(),
        token: token.to_owned(),
        scopes: vec![scope.to_owned()],
    };
    let auth = AuthSection {
        enabled: true,
        peer_token: String::new(),
        tokens: vec![
            entry("writer", WRITER, "write:web"),
            entry("reader", READER, "read:*"),
            entry("admin", ADMIN, "admin:*"),
            entry("peer", PEER, "peer"),
        ],
    };
    let server = TestServer::start_with(ServerConfig { auth, ..TestServer::config() }).await;
    for ns in ["web", "app"] {
        let config = NamespaceConfig { counter_type: CounterType::Accurate, ..NamespaceConfig::default() };
        server.engine.create_namespace(&Namespace::new(ns).expect("ns"), config).await.expect("namespace");
    }
    server
}

async fn count(server: &TestServer, key: &str) -> i64 {
    let key = CounterKey::parse_joined(key).expect("key");
    server.engine.get_count(&key).await.expect("count").value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_need_a_token_with_the_scope() {
    let s = server().await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut request = http.request(method, format!("{}{path}", s.http)).json(&json!({}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let status_and_code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        (status, body["error"]["code"].as_str().unwrap_or("").to_owned())
    };
    use reqwest::Method as M;

    assert_eq!(call(M::GET, "/healthz", None).await.expect("healthz").status(), 200);
    // The dashboard's page and script hold no data: served without a token, with a policy
    // that lets them load nothing but this server's script and API.
    for path in ["/ui", "/ui/app.js"] {
        let r = call(M::GET, path, None).await.expect("dashboard");
        assert_eq!(r.status(), 200, "{path}");
        let policy = r.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
        assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"), "{policy}");
    }
    for path in ["/metrics", "/readyz", "/openapi.json", "/v1/namespaces"] {
        let r = call(M::GET, path, None).await.expect("request");
        assert_eq!(status_and_code(r).await, (401, "UNAUTHENTICATED".to_owned()), "{path}");
    }
    assert_eq!(call(M::GET, "/metrics", Some(READER)).await.expect("metrics").status(), 200);

    let add = "/v1/namespaces/web/counters/c/add";
    for (token, want) in [
        (None, (401, "UNAUTHENTICATED")),
        (Some("not-a-configured-token"), (401, "UNAUTHENTICATED")),
        (Some(READER), (403, "PERMISSION_DENIED")),
    ] {
        let r = call(M::POST, add, token).await.expect("add");
        assert_eq!(status_and_code(r).await, (want.0, want.1.to_owned()), "{token:?}");
    }
    let r = call(M::POST, "/v1/namespaces/app/counters/c/add", Some(WRITER)).await.expect("add");
    assert_eq!(status_and_code(r).await, (403, "PERMISSION_DENIED".to_owned()), "write:web on app");
    assert_eq!(call(M::POST, add, Some(WRITER)).await.expect("add").status(), 200);
    assert_eq!((count(&s, "web:c").await, count(&s, "app:c").await), (1, 0), "refused adds wrote nothing");

    let r = call(M::GET, "/v1/namespaces/web/counters/c", Some(READER)).await.expect("get");
    assert_eq!(r.json::<serde_json::Value>().await.expect("json")["count"], json!(1));
    let r = call(M::GET, "/v1/namespaces/web/counters/c", Some(WRITER)).await.expect("get");
    assert_eq!(r.status(), 200, "write includes read");

    // Namespaces: admin only; the list shows what the token can read.
    let r = call(M::PUT, "/v1/namespaces/new", Some(WRITER)).await.expect("put");
    assert_eq!(status_and_code(r).await, (403, "PERMISSION_DENIED".to_owned()));
    let r = call(M::DELETE, "/v1/namespaces/web", Some(READER)).await.expect("delete");
    assert_eq!(status_and_code(r).await, (403, "PERMISSION_DENIED".to_owned()));
    assert!(s.engine.get_namespace(&Namespace::new("web").expect("ns")).await.is_ok(), "web survived");
    assert_eq!(call(M::PUT, "/v1/namespaces/new", Some(ADMIN)).await.expect("put").status(), 201);
    let listed: serde_json::Value =
        call(M::GET, "/v1/namespaces", Some(WRITER)).await.expect("list").json().await.expect("json");
    let names: Vec<_> =
        listed["namespaces"].as_array().expect("list").iter().map(|n| n["name"].clone()).collect();
    assert_eq!(names, vec![json!("web")]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_need_a_token_with_the_scope_and_health_needs_none() {
    let s = server().await;
    let channel = s.channel().await;
    let mut client = CounterServiceClient::new(channel.clone());
    let add = |token: Option<&str>, namespace: &str| {
        let mut request = tonic::Request::new(pb::AddCountRequest {
            namespace: namespace.to_owned(),
            counter_name: "c".to_owned(),
            delta: 5,
            idempotency_token: None,
        });
        if let Some(token) = token {
            let value = MetadataValue::try_from(format!("Bearer {token}")).expect("metadata");
            request.metadata_mut().insert("authorization", value);
        }
        request
    };
    for (token, namespace, want) in [
        (None, "web", tonic::Code::Unauthenticated),
        (Some("not-a-configured-token"), "web", tonic::Code::Unauthenticated),
        (Some(READER), "web", tonic::Code::PermissionDenied),
        (Some(WRITER), "app", tonic::Code::PermissionDenied),
    ] {
        let status = client.add_count(add(token, namespace)).await.expect_err("refused");
        assert_eq!(status.code(), want, "{token:?} on {namespace}: {status:?}");
    }
    client.add_count(add(Some(WRITER), "web")).await.expect("allowed");
    assert_eq!((count(&s, "web:c").await, count(&s, "app:c").await), (5, 0), "refused adds wrote nothing");

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
    assert_eq!(reply.expect("health without a token").into_inner().status, 1, "SERVING");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_commands_need_auth_with_the_scope() {
    let s = server().await;
    let mut c = s.redis(false).await;
    let code = |e: redis::RedisError| e.code().unwrap_or("").to_owned();

    let refused: redis::RedisResult<i64> = c.incr("web:c", 1).await;
    assert_eq!(code(refused.expect_err("before AUTH")), "UNAUTHENTICATED");
    let wrong: redis::RedisResult<()> =
        redis::cmd("AUTH").arg("not-a-configured-token").query_async(&mut c).await;
    assert_eq!(code(wrong.expect_err("wrong token")), "UNAUTHENTICATED");
    let still: redis::RedisResult<i64> = c.get("web:c").await;
    assert_eq!(code(still.expect_err("still not authenticated")), "UNAUTHENTICATED");

    let () = redis::cmd("AUTH").arg(READER).query_async(&mut c).await.expect("reader");
    let denied: redis::RedisResult<i64> = c.incr("web:c", 1).await;
    assert_eq!(code(denied.expect_err("read only")), "PERMISSION_DENIED");

    let () = redis::cmd("AUTH").arg("default").arg(WRITER).query_async(&mut c).await.expect("writer");
    assert_eq!(c.incr::<_, _, i64>("web:c", 2).await.expect("allowed"), 2);
    // A pipeline of adds runs concurrently; each is still checked.
    let mut pipe = redis::pipe();
    pipe.ignore_errors().cmd("INCRBY").arg("web:d").arg(1).cmd("INCRBY").arg("app:d").arg(1);
    let replies: Vec<redis::Value> = pipe.query_async(&mut c).await.expect("pipeline");
    assert_eq!(replies[0], redis::Value::Int(1), "web is in scope");
    assert!(
        matches!(&replies[1], redis::Value::ServerError(e) if e.code() == "PERMISSION_DENIED"),
        "app is out of the writer's scope: {:?}",
        replies[1]
    );
    let del: redis::RedisResult<i64> = redis::cmd("DEL").arg("web:c").arg("app:c").query_async(&mut c).await;
    assert_eq!(code(del.expect_err("one key out of scope")), "PERMISSION_DENIED");
    assert_eq!(
        (count(&s, "web:c").await, count(&s, "web:d").await, count(&s, "app:d").await),
        (2, 1, 0),
        "refused commands wrote nothing"
    );

    // HELLO 3 AUTH authenticates a fresh connection in one step.
    let mut fresh = s.redis(false).await;
    let _: redis::Value = redis::cmd("HELLO")
        .arg(3)
        .arg("AUTH")
        .arg("default")
        .arg(READER)
        .query_async(&mut fresh)
        .await
        .expect("hello");
    assert_eq!(fresh.get::<_, i64>("web:c").await.expect("read"), 2);
    s.stop().await;
}

/// A batch is authorised item by item: an add outside the token's scopes is refused and
/// changes nothing, while the items it may touch run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_items_outside_the_token_s_scopes_are_refused_one_by_one() {
    let s = server().await;
    let http = reqwest::Client::new();
    let body = json!({"adds": [
        {"namespace": "web", "counter_name": "c", "delta": 2},
        {"namespace": "app", "counter_name": "c", "delta": 5}
    ]});
    let r = http
        .post(format!("{}/v1/counters:batchAdd", s.http))
        .bearer_auth(WRITER)
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["results"][0]["count"], 2);
    assert_eq!(v["results"][1]["error"]["code"], "PERMISSION_DENIED");
    assert_eq!((count(&s, "web:c").await, count(&s, "app:c").await), (2, 0));

    let unauthenticated = http
        .post(format!("{}/v1/counters:batchAdd", s.http))
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!((count(&s, "web:c").await, count(&s, "app:c").await), (2, 0));
    s.stop().await;
}

/// Any valid token could hand rollup triggers to `PeerService` (even `read:` of a namespace that
/// does not exist), so a client could flood the rollup queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_peer_service_needs_the_peer_scope() {
    use tally_proto::v1::peer_service_client::PeerServiceClient;
    let s = server().await;
    let mut client = PeerServiceClient::new(s.channel().await);
    let trigger = |token: &str| {
        let counter = pb::CounterRef { namespace: "web".to_owned(), counter_name: "c".to_owned() };
        let mut request =
            tonic::Request::new(pb::TriggerRollupsRequest { counters: vec![counter], due: None });
        let value = MetadataValue::try_from(format!("Bearer {token}")).expect("metadata");
        request.metadata_mut().insert("authorization", value);
        request
    };
    for token in [READER, WRITER, ADMIN] {
        let status = client.trigger_rollups(trigger(token)).await.expect_err("not a peer");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{token}: {status:?}");
    }
    let accepted = client.trigger_rollups(trigger(PEER)).await.expect("a peer").into_inner().accepted;
    assert_eq!(accepted, 1);
    s.stop().await;
}

/// After too many failed authentications from one address, that address is refused
/// `RESOURCE_EXHAUSTED` (HTTP 429) on every door, even with a valid token, until its window ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_lock_the_address_out_on_every_door() {
    let s = server().await;
    let http = reqwest::Client::new();
    let namespaces = format!("{}/v1/namespaces", s.http);
    for i in 0..tally_server::failed_auth::MAX_FAILURES {
        let r = http.get(&namespaces).bearer_auth(format!("guess-{i:016}")).send().await.expect("send");
        assert_eq!(r.status(), 401);
    }
    let locked = http.get(&namespaces).bearer_auth(READER).send().await.expect("send");
    assert_eq!(locked.status(), 429, "a valid token from the same address waits");
    let body: serde_json::Value = locked.json().await.expect("json");
    assert_eq!(body["error"]["code"], "RESOURCE_EXHAUSTED", "{body}");
    let mut client = CounterServiceClient::new(s.channel().await);
    let mut request = tonic::Request::new(pb::GetCountRequest {
        namespace: "web".to_owned(),
        counter_name: "c".to_owned(),
        window: None,
    });
    request
        .metadata_mut()
        .insert("authorization", MetadataValue::try_from(format!("Bearer {READER}")).expect("v"));
    let status = client.get_count(request).await.expect_err("locked out on gRPC too");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    s.stop().await;
}

/// A counter's events show its tokens and deltas: listing them needs the `read` scope of its
/// namespace, on both doors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_a_counter_s_events_needs_the_read_scope() {
    let s = server().await;
    let url = format!("{}/v1/namespaces/app/counters/c/events", s.http);
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.expect("get").status(), 401, "no token");
    assert_eq!(http.get(&url).bearer_auth(WRITER).send().await.expect("get").status(), 403, "write:web only");
    assert_eq!(http.get(&url).bearer_auth(READER).send().await.expect("get").status(), 200, "read:*");
    let mut grpc = CounterServiceClient::new(s.channel().await);
    let mut request = tonic::Request::new(pb::ListEventsRequest {
        namespace: "app".into(),
        counter_name: "c".into(),
        ..Default::default()
    });
    let bearer = MetadataValue::try_from(format!("Bearer {WRITER}")).expect("header");
    request.metadata_mut().insert("authorization", bearer);
    let refused = grpc.list_events(request).await.expect_err("outside the scope");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    s.stop().await;
}
