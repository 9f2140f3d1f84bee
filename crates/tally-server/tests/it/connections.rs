//! How the HTTP and gRPC doors admit connections: `max_connections` each, `idle_timeout`.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::{Door, TestServer, Through};

fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// A flood of idle connections waits at its door: it takes neither the door's room for more
/// than `max_connections` nor anything from the other doors or the store.
#[tokio::test]
async fn a_door_at_max_connections_admits_the_next_one_only_when_one_closes() {
    let config = tally_server::ServerConfig { max_connections: 4, ..TestServer::config() };
    let s = TestServer::start_with(config).await;
    s.namespace("flood", "eventual").await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr(&s.http)).await.expect("connect"));
    }
    let client = reqwest::Client::new();
    let url = format!("{}/healthz", s.http);
    let mut waiting = Box::pin(client.get(&url).send());
    // The door is full: the request's connection waits in the kernel's accept queue.
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.as_mut()).await;
    assert!(early.is_err(), "served while the door held 4 connections: {early:?}");
    // The other doors and the store are untouched by it.
    assert!(Door::Grpc.add(&s, "flood", "c", 1, None).await.expect("gRPC add").applied);
    let mut resp = s.redis(false).await;
    let count: i64 = redis::cmd("INCRBY").arg("flood:c").arg(1).query_async(&mut resp).await.expect("INCRBY");
    assert_eq!(count, 2);
    drop(idle.pop());
    let answer = waiting.await.expect("served once a connection closed");
    assert!(answer.status().is_success(), "{answer:?}");
    s.stop().await;
}

#[tokio::test]
async fn an_idle_http_or_grpc_connection_is_closed_after_idle_timeout() {
    let config =
        tally_server::ServerConfig { idle_timeout: Duration::from_millis(200), ..TestServer::config() };
    let s = TestServer::start_with(config).await;
    for door in [&s.http, &s.grpc] {
        let mut idle = TcpStream::connect(addr(door)).await.expect("connect");
        let mut buf = [0u8; 64];
        // gRPC's server speaks first (its HTTP/2 settings); then nothing more comes.
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match idle.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{door}: an idle connection stayed open");
    }
    s.stop().await;
}

/// A client that trickles a request head a byte at a time (slowloris) keeps the idle clock
/// running forever; it is closed once `header_read_timeout` passes without a whole head, while
/// a prompt request on another connection is answered.
#[tokio::test]
async fn regression_an_http_request_head_trickled_past_header_read_timeout_is_closed() {
    use tokio::io::AsyncWriteExt;
    let config = tally_server::ServerConfig {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(60),
        ..TestServer::config()
    };
    let s = TestServer::start_with(config).await;
    let mut slow = TcpStream::connect(addr(&s.http)).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: tally\r\n").await.expect("write");
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 256];
        loop {
            // One more header byte every 100 ms: never a whole head, never idle.
            if slow.write_all(b"X").await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) | Err(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickled request head held its connection for 20 s");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    let r = reqwest::get(format!("{}/healthz", s.http)).await.expect("a prompt request");
    assert_eq!(r.status(), 200);
    s.stop().await;
}

/// A request body trickled a byte at a time past `body_read_timeout` is refused
/// `DEADLINE_EXCEEDED` (HTTP 408, the JSON error shape) before anything is done; until then
/// such a client held its connection for as long as it kept sending.
#[tokio::test]
async fn regression_an_http_body_trickled_past_body_read_timeout_is_refused() {
    use tokio::io::AsyncWriteExt;
    let config =
        tally_server::ServerConfig { body_read_timeout: Duration::from_millis(500), ..TestServer::config() };
    let s = TestServer::start_with(config).await;
    let body = br#"{"delta": 5}"#;
    let head = format!(
        "POST /v1/namespaces/default/counters/slow/add HTTP/1.1\r\nHost: tally\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut slow = TcpStream::connect(addr(&s.http)).await.expect("connect");
    slow.write_all(head.as_bytes()).await.expect("head");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    for byte in body.iter().cycle().take(200) {
        // One body byte every 100 ms: 1.2 s for the whole body.
        let _ = slow.write_all(&[*byte]).await;
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(r#""code":"DEADLINE_EXCEEDED""#) && answer.contains("body_read_timeout"),
        "{answer}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "refused before the timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(Door::Grpc.get(&s, "default", "slow").await.expect("get"), 0, "nothing was added");
    s.stop().await;
}

/// Health, readiness and metrics on the ops listener answer while the HTTP door is full.
#[tokio::test]
async fn the_ops_listener_answers_while_the_http_door_is_full() {
    let ops = Some("127.0.0.1:0".parse().expect("addr"));
    let config = tally_server::ServerConfig { max_connections: 2, ops, ..TestServer::config() };
    let s = TestServer::start_with(config).await;
    let ops = s.ops.clone().expect("an ops listener");
    let _idle = [
        TcpStream::connect(addr(&s.http)).await.expect("connect"),
        TcpStream::connect(addr(&s.http)).await.expect("connect"),
    ];
    let get = |path: &str| reqwest::get(format!("{ops}{path}"));
    let health = tokio::time::timeout(Duration::from_secs(10), get("/healthz")).await.expect("in time");
    assert_eq!(health.expect("healthz").status(), 200);
    assert_eq!(get("/readyz").await.expect("readyz").status(), 200);
    let metrics = get("/metrics").await.expect("metrics").text().await.expect("text");
    // (The gauge's value is not checked: servers of other tests in this process set it too.)
    assert!(metrics.contains("tally_connections{door=\"http\"}"), "{metrics}");
    let counter = get("/v1/namespaces").await.expect("a counter route");
    assert_eq!(counter.status(), 404, "only the operational routes are served there");
    s.stop().await;
}

/// An HTTP/2 connection to a door (the HTTP door speaks it too), driven by hand: what a gRPC
/// client never sends.
async fn raw_h2(door: &str) -> (h2::client::SendRequest<bytes::Bytes>, h2::client::Connection<TcpStream>) {
    let tcp = TcpStream::connect(addr(door)).await.expect("connect");
    h2::client::handshake(tcp).await.expect("HTTP/2 handshake")
}

/// Pings alone kept an HTTP/2 connection open for ever (each one is a byte of progress); the
/// gRPC and HTTP doors count calls instead, as gRPC servers' `MaxConnectionIdle` does.
#[tokio::test]
async fn regression_an_http2_connection_kept_busy_with_pings_alone_is_closed_after_idle_timeout() {
    let config =
        tally_server::ServerConfig { idle_timeout: Duration::from_millis(300), ..TestServer::config() };
    let s = TestServer::start_with(config).await;
    for door in [&s.grpc, &s.http] {
        let (_calls, mut connection) = raw_h2(door).await;
        let mut pings = connection.ping_pong().expect("ping handle");
        let driver = tokio::spawn(connection);
        let started = std::time::Instant::now();
        let mut pongs = 0;
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                // A ping every 50 ms: never 300 ms without a frame.
                match pings.ping(h2::Ping::opaque()).await {
                    Ok(_) => pongs += 1,
                    Err(_) => return,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(closed.is_ok(), "{door}: a connection that only pings stayed open for 20 s ({pongs} pongs)");
        assert!(pongs >= 3, "{door}: the server answered {pongs} pings: the connection was never kept busy");
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(250), "{door}: closed too early: {elapsed:?}");
        let _ = driver.await;
    }
    s.stop().await;
}

/// While calls keep coming, a gRPC connection stays open past `idle_timeout`.
#[tokio::test]
async fn calls_keep_a_grpc_connection_open_past_idle_timeout() {
    // 100 ms between calls, well inside the timeout even on a loaded machine; 1.5 s in all.
    let config = tally_server::ServerConfig { idle_timeout: Duration::from_secs(1), ..TestServer::config() };
    let s = TestServer::start_with(config).await;
    let options = tally_client::ConnectOptions::default();
    let client = tally_client::Client::connect(tally_client::Door::Grpc, addr(&s.grpc), &options)
        .await
        .expect("connect");
    for i in 1..=15 {
        let count = client.add_and_get("default", "kept", 1, None).await.expect("add on the same connection");
        assert_eq!(count, i);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

/// A gRPC request message trickled past `body_read_timeout` is refused `DEADLINE_EXCEEDED`
/// and nothing is done; until then such a call held its connection for as long as the client
/// kept sending.
#[tokio::test]
async fn regression_a_grpc_request_message_trickled_past_body_read_timeout_is_refused() {
    use prost::Message;
    let config =
        tally_server::ServerConfig { body_read_timeout: Duration::from_millis(500), ..TestServer::config() };
    let s = TestServer::start_with(config).await;
    let (calls, connection) = raw_h2(&s.grpc).await;
    tokio::spawn(connection);
    let mut calls = calls.ready().await.expect("ready");
    let request = http::Request::post(format!("{}/tally.v1.CounterService/AddCount", s.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (answer, mut body) = calls.send_request(request, false).expect("send");
    let message = tally_proto::v1::AddCountRequest {
        namespace: "default".into(),
        counter_name: "trickled".into(),
        delta: 5,
        idempotency_token: None,
    }
    .encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    framed.extend_from_slice(&message);
    let started = std::time::Instant::now();
    let trickle = tokio::spawn(async move {
        // One byte every 100 ms: the message would be whole after about 3 s.
        for byte in framed {
            if body.send_data(bytes::Bytes::from(vec![byte]), false).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let answer =
        tokio::time::timeout(Duration::from_secs(20), answer).await.expect("answered").expect("answer");
    let mut code = answer.headers().get("grpc-status").cloned();
    let mut text = answer.headers().get("grpc-message").cloned();
    if code.is_none() {
        let trailers = answer.into_body().trailers().await.expect("trailers").expect("some trailers");
        code = trailers.get("grpc-status").cloned();
        text = trailers.get("grpc-message").cloned();
    }
    let elapsed = started.elapsed();
    trickle.abort();
    assert_eq!(code.as_ref().map(|c| c.to_str().expect("ascii")), Some("4"), "DEADLINE_EXCEEDED; {text:?}");
    let text = text.map(|t| t.to_str().expect("ascii").to_owned()).unwrap_or_default();
    assert!(text.contains("body_read_timeout"), "{text}");
    assert!(elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    let count = Door::Grpc.get(&s, "default", "trickled").await.expect("get");
    assert_eq!(count, 0, "a refused call changed the count");
    s.stop().await;
}
