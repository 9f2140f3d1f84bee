//! A namespace deleted and created again on Cassandra, through the real binary and `curl`.
//! Needs `TALLY_TEST_CASSANDRA` (see `scripts/test.sh`).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::Server;

/// Creating it again at once is refused with the documented code and the time it becomes
/// possible; from then on it starts empty, and the deleted namespace's token is free again.
#[test]
fn a_namespace_deleted_on_cassandra_is_created_again_once_every_instance_has_forgotten_it() {
    let node = std::env::var("TALLY_TEST_CASSANDRA").expect(
        "set TALLY_TEST_CASSANDRA=127.0.0.1:9042 after `bash scripts/cassandra.sh start` (scripts/test.sh does)",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("cassandra://{node}/recreate_{}", std::process::id());
    let server = Server::start_with(&dir.path().join("a"), &["--store".to_owned(), store]);
    let add = json!({"delta": 5, "idempotency_token": {"token": "order-1"}}).to_string();
    let path = "/v1/namespaces/orders/counters/c/add";
    let accurate = json!({"counter_type": "accurate"}).to_string();
    assert_eq!(server.curl("PUT", "/v1/namespaces/orders", Some(&accurate)).0, 201);
    assert_eq!(server.curl("POST", path, Some(&add)).0, 200);
    assert_eq!(server.curl("DELETE", "/v1/namespaces/orders", None).0, 204);

    let (status, body) = server.curl("PUT", "/v1/namespaces/orders", Some(&accurate));
    assert_eq!((status, &body["error"]["code"]), (400, &json!("FAILED_PRECONDITION")), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("can be created again from"), "{message}");

    // 2 s plus the default clock_skew of 1 s; polled, not slept, with a bound.
    let started = Instant::now();
    loop {
        let (status, body) = server.curl("PUT", "/v1/namespaces/orders", Some(&accurate));
        if status == 201 {
            break;
        }
        assert_eq!(body["error"]["code"], "FAILED_PRECONDITION", "{body}");
        assert!(started.elapsed() < Duration::from_secs(30), "still refused after 30 s: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.curl("GET", "/v1/namespaces/orders/counters/c", None).1["count"], 0);
    let (status, body) = server.curl("POST", path, Some(&add));
    assert_eq!(
        (status, &body["applied"]),
        (200, &json!(true)),
        "the deleted namespace's token showed through: {body}"
    );
    assert_eq!(server.curl("GET", "/v1/namespaces/orders/counters/c", None).1["count"], 5);
}
