//! The Redis protocol front door, driven by the `redis` crate (a client library not ours).

use std::time::Duration;

use redis::AsyncCommands;

use crate::support::TestServer;

fn code(e: &redis::RedisError) -> String {
    e.code().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn counter_commands_map_onto_the_engine_in_both_protocol_versions() {
    let s = TestServer::start().await;
    s.namespace("acc", "accurate").await;
    for resp3 in [false, true] {
        let mut c = s.redis(resp3).await;
        let k = format!("acc:views:{resp3}");
        let n: i64 = c.incr(&k, 1).await.expect("incr");
        assert_eq!(n, 1);
        let n: i64 = redis::cmd("INCRBY").arg(&k).arg(41).query_async(&mut c).await.expect("incrby");
        assert_eq!(n, 42);
        let n: i64 = redis::cmd("DECR").arg(&k).query_async(&mut c).await.expect("decr");
        assert_eq!(n, 41);
        let n: i64 = redis::cmd("DECRBY").arg(&k).arg(1).query_async(&mut c).await.expect("decrby");
        assert_eq!(n, 40);
        let v: String = c.get(&k).await.expect("get");
        assert_eq!(v, "40");
        let values: Vec<String> =
            redis::cmd("MGET").arg(&k).arg("acc:never").query_async(&mut c).await.expect("mget");
        assert_eq!(values, ["40", "0"]);
        let cleared: i64 = c.del(&k).await.expect("del");
        assert_eq!(cleared, 1);
        s.clock.advance(Duration::from_millis(1));
        let v: String = c.get(&k).await.expect("get");
        assert_eq!(v, "0");
    }
    s.stop().await;
}

#[tokio::test]
async fn keys_without_a_colon_are_in_the_default_namespace() {
    let s = TestServer::start().await;
    let mut c = s.redis(false).await;
    let _: i64 = c.incr("plain", 5).await.expect("incr");
    s.converge().await;
    let v: String = c.get("default:plain").await.expect("get");
    assert_eq!(v, "5");
    s.stop().await;
}

#[tokio::test]
async fn pipelines_keep_order_and_reads_see_earlier_adds() {
    let s = TestServer::start().await;
    s.namespace("acc", "accurate").await;
    let mut c = s.redis(false).await;
    let mut pipe = redis::pipe();
    for _ in 0..100 {
        pipe.cmd("INCR").arg("acc:p");
    }
    pipe.cmd("GET").arg("acc:p").cmd("DEL").arg("acc:p");
    for _ in 0..5 {
        pipe.cmd("INCRBY").arg("acc:p").arg(2);
    }
    pipe.cmd("GET").arg("acc:p");
    let (incrs, rest): (Vec<i64>, Vec<redis::Value>) = {
        let all: Vec<redis::Value> = pipe.query_async(&mut c).await.expect("pipeline");
        let (a, b) = all.split_at(100);
        (a.iter().map(|v| redis::from_redis_value_ref(v).expect("int")).collect(), b.to_vec())
    };
    let mut sorted = incrs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=100).collect::<Vec<_>>(), "each concurrent INCR saw a distinct count");
    let get: String = redis::from_redis_value_ref(&rest[0]).expect("get");
    assert_eq!(get, "100", "the GET after 100 INCRs sees them all");
    let last: String = redis::from_redis_value_ref(&rest[7]).expect("get");
    assert_eq!(last, "10", "adds after the DEL count, adds before it do not");
    s.stop().await;
}

#[tokio::test]
async fn pipelined_adds_to_one_eventual_counter_all_count_and_answer_in_order() {
    let s = TestServer::start().await;
    s.namespace("ev", "eventual").await;
    let mut c = s.redis(false).await;
    let mut pipe = redis::pipe();
    for _ in 0..50 {
        pipe.cmd("INCR").arg("ev:hot");
        pipe.cmd("INCRBY").arg("ev:hot").arg(2);
    }
    let answers: Vec<i64> = pipe.query_async(&mut c).await.expect("pipeline");
    // As Redis answers: each add the count after it, though nothing is rolled up yet.
    let expected: Vec<i64> = (0..50).flat_map(|i| [3 * i + 1, 3 * i + 3]).collect();
    assert_eq!(answers, expected);
    s.converge().await;
    let v: String = c.get("ev:hot").await.expect("get");
    assert_eq!(v, "150", "every pipelined add counted once");
    s.stop().await;
}

#[tokio::test]
async fn tally_add_is_idempotent() {
    let s = TestServer::start().await;
    s.namespace("acc", "accurate").await;
    let mut c = s.redis(false).await;
    let at = s.now().as_millis();
    let first: i64 = redis::cmd("TALLY.ADD")
        .arg("acc:t")
        .arg(7)
        .arg("tok-1")
        .arg(at)
        .query_async(&mut c)
        .await
        .expect("add");
    let retry: i64 = redis::cmd("TALLY.ADD")
        .arg("acc:t")
        .arg(7)
        .arg("tok-1")
        .arg(at)
        .query_async(&mut c)
        .await
        .expect("retry");
    assert_eq!((first, retry), (1, 0));
    let v: String = c.get("acc:t").await.expect("get");
    assert_eq!(v, "7");
    let reused =
        redis::cmd("TALLY.ADD").arg("acc:t").arg(8).arg("tok-1").arg(at).query_async::<i64>(&mut c).await;
    assert_eq!(code(&reused.expect_err("reused")), "ALREADY_EXISTS");
    let old = at - 60_000;
    let too_old =
        redis::cmd("TALLY.ADD").arg("acc:t").arg(1).arg("tok-2").arg(old).query_async::<i64>(&mut c).await;
    let e = too_old.expect_err("too old");
    assert_eq!(code(&e), "OUT_OF_RANGE");
    assert!(e.to_string().contains("too old"), "{e}");
    s.stop().await;
}

#[tokio::test]
async fn tally_clear_is_idempotent_and_ordered_by_its_token_time() {
    let s = TestServer::start().await;
    s.namespace("acc", "accurate").await;
    let mut c = s.redis(false).await;
    let at = s.now().as_millis();
    let add = |delta: i64, token: &str, ms: i64| {
        redis::cmd("TALLY.ADD").arg("acc:c").arg(delta).arg(token).arg(ms).clone()
    };
    let _: i64 = add(5, "before", at - 2).query_async(&mut c).await.expect("add before");
    let _: i64 = add(3, "after", at + 2).query_async(&mut c).await.expect("add after");
    let clear = redis::cmd("TALLY.CLEAR").arg("acc:c").arg("clear-1").arg(at).clone();
    let first: i64 = clear.query_async(&mut c).await.expect("clear");
    let retry: i64 = clear.query_async(&mut c).await.expect("retry");
    assert_eq!((first, retry), (1, 0), "the retry of a clear is acknowledged without applying again");
    let v: String = c.get("acc:c").await.expect("get");
    assert_eq!(v, "3", "the clear removed the add before its time and kept the one after");
    let reused: Result<i64, _> = add(1, "clear-1", at).query_async(&mut c).await;
    assert_eq!(code(&reused.expect_err("token of a clear reused for an add")), "ALREADY_EXISTS");
    let wrong = redis::cmd("TALLY.CLEAR").arg("acc:c").query_async::<i64>(&mut c).await;
    assert_eq!(code(&wrong.expect_err("no token")), "INVALID_ARGUMENT");
    let v: String = c.get("acc:c").await.expect("get");
    assert_eq!(v, "3", "refused commands changed nothing");
    s.stop().await;
}

#[tokio::test]
async fn bad_input_gets_error_replies_and_changes_nothing() {
    let s = TestServer::start().await;
    s.namespace("acc", "accurate").await;
    let mut c = s.redis(false).await;
    let e = redis::cmd("INCRBY")
        .arg("acc:b")
        .arg("ten")
        .query_async::<i64>(&mut c)
        .await
        .expect_err("not an integer");
    assert_eq!(code(&e), "INVALID_ARGUMENT");
    let e = redis::cmd("INCRBY")
        .arg("acc:b")
        .arg("99999999999999999999")
        .query_async::<i64>(&mut c)
        .await
        .expect_err("range");
    assert_eq!(code(&e), "INVALID_ARGUMENT");
    let _: i64 = c.incr("acc:b", i64::MAX).await.expect("incr max");
    let e = c.incr::<_, _, i64>("acc:b", 1).await.expect_err("overflow");
    assert_eq!(code(&e), "OUT_OF_RANGE");
    let e =
        redis::cmd("DECRBY").arg("acc:c").arg(i64::MIN).query_async::<i64>(&mut c).await.expect_err("neg");
    assert_eq!(code(&e), "OUT_OF_RANGE");
    let e = c.incr::<_, _, i64>(format!("acc:{}", "k".repeat(300)), 1).await.expect_err("long key");
    assert_eq!(code(&e), "INVALID_ARGUMENT");
    let e = c.incr::<_, _, i64>("nowhere:k", 1).await.expect_err("unknown namespace");
    assert_eq!(code(&e), "NOT_FOUND");
    let e = redis::cmd("INCR").query_async::<i64>(&mut c).await.expect_err("arity");
    assert!(e.to_string().contains("wrong number of arguments for 'incr'"), "{e}");
    let e =
        redis::cmd("HSET").arg("a").arg("b").arg("c").query_async::<i64>(&mut c).await.expect_err("unknown");
    assert_eq!(code(&e), "ERR");
    assert!(e.to_string().contains("unknown command 'hset'"), "{e}");
    let v: String = c.get("acc:b").await.expect("get");
    assert_eq!(v, i64::MAX.to_string());
    let v: String = c.get("acc:c").await.expect("get");
    assert_eq!(v, "0");
    s.stop().await;
}

#[tokio::test]
async fn connection_commands_that_clients_send_are_answered() {
    let s = TestServer::start().await;
    let mut c = s.redis(true).await;
    let pong: String = redis::cmd("PING").query_async(&mut c).await.expect("ping");
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("ECHO").arg("hi").query_async(&mut c).await.expect("echo");
    assert_eq!(echo, "hi");
    let _: () = redis::cmd("SELECT").arg(0).query_async(&mut c).await.expect("select 0");
    assert!(redis::cmd("SELECT").arg(1).query_async::<()>(&mut c).await.is_err());
    let _: () = redis::cmd("CLIENT").arg("SETNAME").arg("me").query_async(&mut c).await.expect("setname");
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query_async(&mut c).await.expect("getname");
    assert_eq!(name, "me");
    let _: () = redis::cmd("AUTH").arg("anything").query_async(&mut c).await.expect("auth");
    let config: std::collections::HashMap<String, String> =
        redis::cmd("CONFIG").arg("GET").arg("appendonly").query_async(&mut c).await.expect("config");
    assert_eq!(config.get("appendonly").map(String::as_str), Some("yes"));
    let info: String = redis::cmd("INFO").query_async(&mut c).await.expect("info");
    assert!(info.contains("tally_version:"), "{info}");
    let commands: Vec<redis::Value> = redis::cmd("COMMAND").query_async(&mut c).await.expect("command");
    let count: usize = redis::cmd("COMMAND").arg("COUNT").query_async(&mut c).await.expect("count");
    assert_eq!(commands.len(), count, "COMMAND lists the whole table");
    s.stop().await;
}

#[tokio::test]
async fn oversized_and_malformed_requests_are_protocol_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let addr = s.resp.trim_start_matches("redis://").to_owned();
    // The test server's limit is 4096 bytes: a bulk announced larger is refused before it is sent.
    for request in [&b"*2\r\n$4\r\nINCR\r\n$999999999\r\n"[..], b"*1\r\n$x\r\n", b"*99999\r\n"] {
        let mut socket = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        socket.write_all(request).await.expect("write");
        let mut reply = String::new();
        socket.read_to_string(&mut reply).await.expect("read until the server closes");
        assert!(reply.starts_with("-ERR Protocol error"), "{reply:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn hello_switches_protocol_and_quit_closes_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let addr = s.resp.trim_start_matches("redis://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let requests: &[&[u8]] = &[
        b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n",
        b"*1\r\n$3\r\nGET\r\n",
        b"*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n",
        b"*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$8\r\nLIB-NAME\r\n$4\r\ntest\r\n",
        b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n",
        b"*2\r\n$5\r\nHELLO\r\n$1\r\n4\r\n",
        b"*1\r\n$4\r\nQUIT\r\n",
        b"*1\r\n$4\r\nPING\r\n",
    ];
    for r in requests {
        socket.write_all(r).await.expect("write");
    }
    let mut replies = String::new();
    socket.read_to_string(&mut replies).await.expect("the server closes after QUIT");
    assert!(
        replies.starts_with("%7\r\n$6\r\nserver\r\n$5\r\ntally\r\n"),
        "HELLO 3 answers a RESP3 map: {replies:?}"
    );
    assert!(replies.contains("$5\r\nproto\r\n:3\r\n"), "{replies:?}");
    assert!(
        replies.contains("-INVALID_ARGUMENT wrong number of arguments for 'get' command\r\n"),
        "{replies:?}"
    );
    assert!(replies.contains("$9\r\nincrement\r\n"), "COMMAND DOCS names the arguments: {replies:?}");
    assert!(replies.contains("\r\n+OK\r\n:"), "SETINFO is OK: {replies:?}");
    assert!(replies.contains("-NOPROTO"), "{replies:?}");
    assert!(replies.ends_with("+OK\r\n"), "QUIT answers OK and nothing after it is run: {replies:?}");
    s.stop().await;
}

#[tokio::test]
async fn any_redis_key_counts_with_no_set_up_when_namespaces_are_made_on_first_write() {
    let mut config = TestServer::config();
    config.engine.auto_create_namespaces = None; // as served on the embedded store
    let s = TestServer::start_with(config).await;
    let mut c = s.redis(false).await;
    let v: String = c.get("user:1000:visits").await.expect("get before any write");
    assert_eq!(v, "0", "a read makes nothing and answers 0");
    let answers: Vec<i64> = futures::future::join_all((0..3).map(|_| {
        let mut c = c.clone();
        async move { c.incr::<_, _, i64>("user:1000:visits", 1).await.expect("incr") }
    }))
    .await;
    let mut sorted = answers.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2, 3], "each INCR answers the count after it: {answers:?}");
    let v: String = c.get("user:1000:visits").await.expect("get");
    assert_eq!(v, "3", "read your own writes, with no rollup run");
    let ns = s.engine.get_namespace(&tally_core::Namespace::new("user").expect("ns")).await.expect("made");
    assert_eq!(ns.counter_type, tally_core::CounterType::Eventual);
    // Refused as before: a key whose namespace part is not a valid name.
    let err = c.incr::<_, _, i64>("no spaces:x", 1).await.expect_err("bad namespace");
    assert_eq!(code(&err), "INVALID_ARGUMENT");
    s.stop().await;
}

#[tokio::test]
async fn scan_keys_and_exists_list_counter_keys() {
    let s = TestServer::start().await;
    s.namespace("user", "eventual").await;
    s.namespace("page", "accurate").await;
    let mut c = s.redis(false).await;
    for i in 0..30 {
        let _: i64 = c.incr(format!("user:{i}:visits"), 1).await.expect("incr");
    }
    let _: i64 = c.incr("page:home", 1).await.expect("incr");
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("user:*")
            .arg("COUNT")
            .arg(7)
            .query_async(&mut c)
            .await
            .expect("scan");
        seen.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    seen.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("user:{i}:visits")).collect();
    expected.sort();
    assert_eq!(seen, expected);
    let mut everything: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.expect("keys");
    everything.sort();
    assert_eq!(everything.len(), 31);
    assert!(everything.contains(&"page:home".to_owned()));
    let some: Vec<String> = redis::cmd("KEYS").arg("user:1?:visits").query_async(&mut c).await.expect("keys");
    assert_eq!(some.len(), 10, "{some:?}");
    let n: i64 = redis::cmd("EXISTS")
        .arg("user:1:visits")
        .arg("user:99:visits")
        .arg("page:home")
        .query_async(&mut c)
        .await
        .expect("exists");
    assert_eq!(n, 2);
    let bad =
        redis::cmd("SCAN").arg(424242).query_async::<redis::Value>(&mut c).await.expect_err("unknown cursor");
    assert!(bad.to_string().contains("invalid cursor"), "{bad}");
    s.stop().await;
}

#[tokio::test]
async fn multi_exec_runs_the_queued_commands_as_a_pipeline() {
    let s = TestServer::start().await;
    s.namespace("tx", "accurate").await;
    let mut c = s.redis(false).await;
    let (a, b, got): (i64, i64, String) = redis::pipe()
        .atomic()
        .incr("tx:a", 2)
        .incr("tx:a", 3)
        .get("tx:a")
        .query_async(&mut c)
        .await
        .expect("MULTI/EXEC");
    assert_eq!((a, b, got.as_str()), (2, 5, "5"));
    // A command refused while queueing discards the transaction.
    let aborted: redis::RedisResult<(i64,)> =
        redis::pipe().atomic().incr("tx:a", 1).cmd("FLUSHALL").query_async(&mut c).await;
    assert!(aborted.is_err(), "{aborted:?}");
    let v: String = c.get("tx:a").await.expect("get");
    assert_eq!(v, "5", "nothing of an aborted transaction ran");
    let discard: String = redis::cmd("DISCARD")
        .query_async(&mut c)
        .await
        .map(|()| "OK".to_owned())
        .unwrap_or_else(|e| e.to_string());
    assert!(discard.contains("DISCARD without MULTI"), "{discard}");
    s.stop().await;
}

#[tokio::test]
async fn command_info_and_config_answer_what_clients_ask() {
    let s = TestServer::start().await;
    let mut c = s.redis(false).await;
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query_async(&mut c).await.expect("count");
    assert!(count >= 20, "{count}");
    let info: Vec<redis::Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("incrby")
        .arg("nosuch")
        .query_async(&mut c)
        .await
        .expect("info");
    let redis::Value::Array(incrby) = &info[0] else { panic!("{info:?}") };
    assert_eq!(incrby[1], redis::Value::Int(3), "arity");
    assert_eq!(
        (&incrby[3], &incrby[4], &incrby[5]),
        (&redis::Value::Int(1), &redis::Value::Int(1), &redis::Value::Int(1))
    );
    assert_eq!(info[1], redis::Value::Nil);
    let docs: redis::Value =
        redis::cmd("COMMAND").arg("DOCS").arg("incrby").query_async(&mut c).await.expect("docs");
    assert!(format!("{docs:?}").contains("increment"), "{docs:?}");
    let text: String = redis::cmd("INFO").query_async(&mut c).await.expect("info");
    for line in [
        "# Server",
        "redis_version:",
        "# Clients",
        "connected_clients:1",
        "# Stats",
        "total_commands_processed:",
        "# Keyspace",
        "db0:keys=",
    ] {
        assert!(text.contains(line), "no {line} in {text}");
    }
    let only: String = redis::cmd("INFO").arg("clients").query_async(&mut c).await.expect("info");
    assert!(only.contains("# Clients") && !only.contains("# Server"), "{only}");
    let set = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("no")
        .query_async::<redis::Value>(&mut c)
        .await
        .expect_err("refused");
    assert!(set.to_string().contains("CONFIG SET is not supported"), "{set}");
    s.stop().await;
}

#[tokio::test]
async fn ttl_expire_and_persist_say_that_counters_have_no_per_key_timeout() {
    let s = TestServer::start().await;
    s.namespace("d", "eventual").await;
    let mut c = s.redis(false).await;
    let _: i64 = c.incr("d:k", 1).await.expect("incr");
    let ttl: i64 = redis::cmd("TTL").arg("d:k").query_async(&mut c).await.expect("ttl");
    assert_eq!(ttl, -1, "exists, no timeout");
    let ttl: i64 = redis::cmd("PTTL").arg("d:never").query_async(&mut c).await.expect("pttl");
    assert_eq!(ttl, -2, "never written");
    let persisted: i64 = redis::cmd("PERSIST").arg("d:k").query_async(&mut c).await.expect("persist");
    assert_eq!(persisted, 0);
    let e = redis::cmd("EXPIRE").arg("d:k").arg(10).query_async::<i64>(&mut c).await.expect_err("refused");
    assert!(e.to_string().contains("durable and never expire"), "{e}");
    let url = format!("{}/v1/namespaces/fast", s.http);
    let body = r#"{"counter_type": "best_effort", "best_effort_ttl": "30s"}"#;
    reqwest::Client::new()
        .put(url)
        .body(body)
        .send()
        .await
        .expect("put")
        .error_for_status()
        .expect("created");
    let _: i64 = c.incr("fast:k", 1).await.expect("incr");
    let e = redis::cmd("TTL").arg("fast:k").query_async::<i64>(&mut c).await.expect_err("not tracked");
    assert!(e.to_string().contains("live 30s after their last write"), "{e}");
    let e = redis::cmd("EXPIRE").arg("fast:k").arg(5).query_async::<i64>(&mut c).await.expect_err("refused");
    assert!(e.to_string().contains("best_effort_ttl, not per key"), "{e}");
    s.stop().await;
}
