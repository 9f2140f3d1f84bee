//! The HTTP route table, the OpenAPI document and the operational routes agree.

use std::collections::BTreeSet;

use serde_json::Value;
use tally_server::http::ROUTES;

use crate::support::TestServer;

#[tokio::test]
async fn openapi_describes_exactly_the_served_routes() {
    let s = TestServer::start().await;
    let doc: Value =
        reqwest::get(format!("{}/openapi.json", s.http)).await.expect("get").json().await.expect("json");
    let mut described = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            described.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<_> = ROUTES.iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
    assert_eq!(described, served, "routes and /openapi.json differ");
    // Each described operation is the route's own, by name, with a summary.
    for route in ROUTES {
        let described = &doc["paths"][route.path][route.method.to_lowercase()];
        assert_eq!(described["operationId"], route.operation.as_str(), "{} {}", route.method, route.path);
        assert!(described["summary"].as_str().is_some_and(|s| !s.is_empty()), "{}", route.operation);
    }
    let codes = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"];
    let all: Vec<&str> = tally_core::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, &serde_json::json!(all), "the OpenAPI error codes are every ErrorCode");
    // Every listed route is really routed: it never answers the router's "no route" error.
    for route in ROUTES {
        let path = route.path.replace("{ns}", "default").replace("{counter}", "c");
        let method = reqwest::Method::from_bytes(route.method.as_bytes()).expect("method");
        let r =
            reqwest::Client::new().request(method, format!("{}{path}", s.http)).send().await.expect("send");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(!body.contains("no route for"), "{} {path} is not routed: {status} {body}", route.method);
        assert_ne!(status, 405, "{} {path}", route.method);
    }
    let r = reqwest::get(format!("{}/v2/nothing", s.http)).await.expect("get");
    assert_eq!(r.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let s = TestServer::start().await;
    reqwest::Client::new()
        .post(format!("{}/v1/namespaces/default/counters/m/add", s.http))
        .send()
        .await
        .expect("add");
    let metrics = reqwest::get(format!("{}/metrics", s.http)).await.expect("get").text().await.expect("text");
    for needle in [
        "tally_requests_total{transport=\"http\",operation=\"AddCount\",code=\"OK\"}",
        "tally_request_duration_seconds_bucket{transport=\"http\",operation=\"AddCount\"",
        "tally_group_commit_batch_requests_bucket",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
    let health: Value =
        reqwest::get(format!("{}/healthz", s.http)).await.expect("get").json().await.expect("json");
    assert_eq!(health["status"], "ok");
    let ready = reqwest::get(format!("{}/readyz", s.http)).await.expect("get");
    assert_eq!(ready.status(), 200);
    let wrong = reqwest::Client::new().delete(format!("{}/healthz", s.http)).send().await.expect("delete");
    assert_eq!(wrong.status(), 405);
    let v: Value = wrong.json().await.expect("json");
    assert!(v["error"]["message"].as_str().expect("message").contains("does not accept DELETE"));
    s.stop().await;
}

#[tokio::test]
async fn namespace_put_creates_then_updates_and_delete_removes() {
    let s = TestServer::start().await;
    let url = format!("{}/v1/namespaces/shop", s.http);
    let client = reqwest::Client::new();
    let created = client
        .put(&url)
        .body(r#"{"counter_type":"accurate","accept_limit":"10s"}"#)
        .send()
        .await
        .expect("put");
    assert_eq!(created.status(), 201);
    let updated = client.put(&url).body(r#"{"coalesce":"2s"}"#).send().await.expect("put");
    assert_eq!(updated.status(), 200);
    let v: Value = updated.json().await.expect("json");
    assert_eq!(v["config"]["counter_type"], "accurate");
    assert_eq!(v["config"]["accept_limit"], "10s");
    assert_eq!(v["config"]["coalesce"], "2s");
    let retype = client.put(&url).body(r#"{"counter_type":"eventual"}"#).send().await.expect("put");
    assert_eq!(retype.status(), 400);
    let v: Value = retype.json().await.expect("json");
    assert_eq!(v["error"]["code"], "FAILED_PRECONDITION");
    assert_eq!(client.delete(&url).send().await.expect("delete").status(), 204);
    assert_eq!(client.get(&url).send().await.expect("get").status(), 404);
    let default = client.delete(format!("{}/v1/namespaces/default", s.http)).send().await.expect("delete");
    assert_eq!(default.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn grpc_health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let s = TestServer::start().await;
    let mut health = HealthClient::new(s.channel().await);
    for service in ["tally.v1.CounterService", "tally.v1.NamespaceService"] {
        let r =
            health.check(HealthCheckRequest { service: service.into() }).await.expect("check").into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }
    let mut reflection = ServerReflectionClient::new(s.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflect")
        .into_inner();
    let answer = answers.message().await.expect("answer").expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"tally.v1.CounterService".to_owned()), "{names:?}");
    assert!(names.contains(&"tally.v1.NamespaceService".to_owned()), "{names:?}");
    // Health is listed; the instances' own PeerService is not.
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("PeerService")), "{names:?}");
    // The older v1alpha protocol, which ghz and older grpcurl releases use.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let mut alpha = AlphaClient::new(s.channel().await);
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut answers =
        alpha.server_reflection_info(futures::stream::iter([request])).await.expect("reflect").into_inner();
    let answer = answers.message().await.expect("answer").expect("one answer");
    let Some(AlphaResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer")
    };
    assert!(list.service.iter().any(|s| s.name == "tally.v1.CounterService"));
    s.stop().await;
}

#[tokio::test]
async fn every_exported_metric_has_help_and_build_and_process_metrics_are_there() {
    let s = TestServer::start().await;
    let mut resp = s.redis(false).await;
    let _: i64 = redis::cmd("INCR").arg("m").query_async(&mut resp).await.expect("incr");
    let metrics = reqwest::get(format!("{}/metrics", s.http)).await.expect("get").text().await.expect("text");
    let typed: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(typed.len() > 5, "{metrics}");
    for name in typed {
        assert!(metrics.contains(&format!("# HELP {name} ")), "{name} has no HELP line:\n{metrics}");
        assert!(
            tally_server::metrics::DESCRIBED.iter().any(|(n, _, _)| *n == name),
            "{name} is exported but not in metrics::DESCRIBED"
        );
    }
    for needle in [
        "tally_build_info{version=\"",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "tally_connections{door=\"resp\"} ",
        "tally_operations_in_flight ",
        "tally_store_seconds_bucket{operation=\"append_new\"",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
    // The INCR's append was recorded, not only registered: the engine takes its metric
    // handles when it opens, after the recorder is installed.
    let appends = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tally_store_seconds_count{operation=\"append_new\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(appends.is_some_and(|n| n >= 1.0), "append_new count {appends:?} in:\n{metrics}");
    s.stop().await;
}

/// A request with both `Content-Length` and `Transfer-Encoding`: the HTTP library reads the
/// body by `Transfer-Encoding` alone, drops `Content-Length` before any handler could see it,
/// and closes the connection after answering, as RFC 9112 (6.1) allows instead of refusing.
/// The close is what stops a smuggled request: bytes a proxy in front took for the next request
/// on this connection are never read as one.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_read_as_chunked_and_the_connection_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    s.namespace("web", "eventual").await;
    let mut tcp =
        tokio::net::TcpStream::connect(s.http.trim_start_matches("http://")).await.expect("connect");
    // A proxy reading 4 bytes by Content-Length would forward the rest as a second request.
    let request = "POST /v1/namespaces/web/counters/c/add HTTP/1.1\r\nHost: tally\r\n\
        Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
        c\r\n{\"delta\": 1}\r\n0\r\n\r\n\
        POST /v1/namespaces/web/counters/c/add HTTP/1.1\r\nHost: tally\r\n\
        Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"delta\": 5}";
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.expect("read until the server closes");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one answer, then the close: {answer}");
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("connection: close"), "{answer}");
    let key = tally_core::CounterKey::parse_joined("web:c").expect("key");
    assert_eq!(s.engine.get_count(&key).await.expect("count").value, 1, "the request after it was not read");
    s.stop().await;
}

/// A stopped writer thread (a panic in it) left `/readyz` saying ready while every write
/// failed, so no supervisor would restart or drain the process.
#[tokio::test]
async fn regression_readyz_is_503_once_the_store_can_no_longer_write() {
    let (s, faulty) = TestServer::start_faulty().await;
    let readyz = format!("{}/readyz", s.http);
    assert_eq!(reqwest::get(&readyz).await.expect("readyz").status(), 200);
    faulty.stop_writer();
    let r = reqwest::get(&readyz).await.expect("readyz");
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "not writable", "{body}");
    assert!(body["reason"].as_str().is_some_and(|r| r.contains("writer")), "{body}");
    assert_eq!(
        reqwest::get(format!("{}/healthz", s.http)).await.expect("healthz").status(),
        200,
        "still alive"
    );
    s.stop().await;
}

/// The OpenAPI document missed the 401, 403, 405, 429 and 504 answers, the bearer scheme and
/// the operations' summaries.
#[tokio::test]
async fn regression_openapi_lists_every_error_status_the_bearer_scheme_and_summaries() {
    let doc = tally_server::http::openapi::spec();
    let statuses: Vec<String> =
        tally_server::http::openapi::error_statuses().iter().map(u16::to_string).collect();
    for needed in ["400", "401", "403", "404", "405", "409", "413", "429", "500", "503", "504"] {
        assert!(statuses.iter().any(|s| s == needed), "{needed} missing from {statuses:?}");
    }
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            assert!(operation["summary"].is_string(), "{method} {path} has no summary");
            if path.starts_with("/v1/") {
                for status in &statuses {
                    assert!(operation["responses"][status].is_object(), "{method} {path} lacks {status}");
                }
            }
        }
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], serde_json::json!([]));
}

#[tokio::test]
async fn cors_answers_the_configured_origins_only() {
    let cors_origins = vec!["https://dash.example.com".to_owned()];
    let s = TestServer::start_with(tally_server::ServerConfig { cors_origins, ..TestServer::config() }).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/namespaces", s.http);
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://dash.example.com")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{preflight:?}");
    let allowed = preflight.headers()["access-control-allow-origin"].to_str().expect("ascii");
    assert_eq!(allowed, "https://dash.example.com");
    let get = client.get(&url).header("origin", "https://dash.example.com").send().await.expect("get");
    assert_eq!(get.headers()["access-control-allow-origin"], "https://dash.example.com");
    let other = client.get(&url).header("origin", "https://evil.example").send().await.expect("get");
    assert!(other.headers().get("access-control-allow-origin").is_none(), "{other:?}");
    s.stop().await;
    // Without the setting, no CORS headers at all.
    let plain = TestServer::start().await;
    let r = client
        .get(format!("{}/v1/namespaces", plain.http))
        .header("origin", "https://dash.example.com")
        .send();
    assert!(r.await.expect("get").headers().get("access-control-allow-origin").is_none());
    plain.stop().await;
}

#[test]
fn cors_origins_that_are_not_origins_are_refused_at_start() {
    for bad in ["dash.example.com", "https://dash.example.com/path", "https://dash.example.com/"] {
        let config = tally_server::ServerConfig { cors_origins: vec![bad.to_owned()], ..Default::default() };
        let error = config.check().expect_err(bad).to_string();
        assert!(error.contains(bad), "{error}");
    }
    let any = tally_server::ServerConfig { cors_origins: vec!["*".to_owned()], ..Default::default() };
    assert!(any.check().is_ok());
}

/// What the HTTP library answers on its own to a request it cannot parse came with an empty
/// body; it now has the JSON error shape every other refusal has, and changes nothing.
#[tokio::test]
async fn regression_requests_the_http_library_cannot_parse_are_refused_in_the_json_error_shape() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    s.namespace("web", "eventual").await;
    let add = "POST /v1/namespaces/web/counters/c/add HTTP/1.1\r\nHost: tally\r\n\
        Content-Type: application/json\r\nContent-Length: 12\r\n";
    let huge = format!("{add}X-Padding: {}\r\n\r\n{{\"delta\": 1}}", "p".repeat(100 << 10));
    for (request, status, code) in [
        (format!("{add}Bad Header\r\n\r\n{{\"delta\": 1}}"), "400", "INVALID_ARGUMENT"),
        (
            "P@ST /v1/namespaces/web/counters/c/add HTTP/1.1\r\nHost: tally\r\n\r\n".to_owned(),
            "400",
            "INVALID_ARGUMENT",
        ),
        (huge, "431", "OUT_OF_RANGE"),
    ] {
        let mut tcp =
            tokio::net::TcpStream::connect(s.http.trim_start_matches("http://")).await.expect("connect");
        // The server may answer and close before it has read all of a huge head.
        let _ = tcp.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("an answer: {answer:?}"));
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    let key = tally_core::CounterKey::parse_joined("web:c").expect("key");
    assert_eq!(s.engine.get_count(&key).await.expect("count").value, 0, "a refused request counted");
    s.stop().await;
}
