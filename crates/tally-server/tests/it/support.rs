//! `TestServer`: the real serve loop on port-0 listeners over the embedded store in a temp
//! directory, with a manual clock; and `Door`, one client API over gRPC and over HTTP.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tally_core::{Clock, ManualClock, Timestamp};
use tally_engine::{Engine, LocalBestEffort, LocalCache};
use tally_proto::v1 as pb;
use tally_proto::v1::counter_service_client::CounterServiceClient;
use tally_proto::v1::namespace_service_client::NamespaceServiceClient;
use tally_server::config::AutoCreate;
use tally_server::{Listeners, ServerConfig, convert};
use tally_store::Store;
use tally_store_fjall::{FjallOptions, FjallStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub struct TestServer {
    pub http: String,
    pub grpc: String,
    /// `redis://127.0.0.1:PORT`.
    pub resp: String,
    /// `http://127.0.0.1:PORT` of the ops listener, when the config asks for one.
    pub ops: Option<String>,
    pub clock: ManualClock,
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// A server whose namespaces must be created before they are written.
    pub async fn start() -> Self {
        Self::start_with(Self::config()).await
    }

    /// The configuration of [`TestServer::start`].
    pub fn config() -> ServerConfig {
        let mut config = ServerConfig { max_body_bytes: 4096, ..ServerConfig::default() };
        config.engine.auto_create_namespaces = Some(AutoCreate::Off);
        config
    }

    /// Serves with `config` (its addresses are ignored: the listeners are on port 0).
    pub async fn start_with(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(Timestamp::from_millis(1_764_000_000_000));
        let store: Arc<dyn Store> = Arc::new(
            FjallStore::open(dir.path(), Arc::new(clock.clone()), FjallOptions::default()).expect("store"),
        );
        Self::start_over(store, clock, dir, config).await
    }

    /// Serves over the embedded store wrapped in a `FaultyStore`, for what the doors report
    /// when the store fails.
    pub async fn start_faulty() -> (Self, Arc<tally_store::faulty::FaultyStore>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(Timestamp::from_millis(1_764_000_000_000));
        let store: Arc<dyn Store> = Arc::new(
            FjallStore::open(dir.path(), Arc::new(clock.clone()), FjallOptions::default()).expect("store"),
        );
        let faulty = Arc::new(tally_store::faulty::FaultyStore::new(store));
        (Self::start_over(faulty.clone(), clock, dir, Self::config()).await, faulty)
    }

    /// Serves over an in-memory store that other instances may write too (as they share
    /// Cassandra), so this instance reads and folds through the store.
    pub async fn start_shared() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(Timestamp::from_millis(1_764_000_000_000));
        let store: Arc<dyn Store> = Arc::new(tally_store::MemoryStore::shared(Arc::new(clock.clone())));
        Self::start_over(store, clock, dir, Self::config()).await
    }

    async fn start_over(
        store: Arc<dyn Store>,
        clock: ManualClock,
        dir: tempfile::TempDir,
        config: ServerConfig,
    ) -> Self {
        let engine = Engine::open(
            store.clone(),
            Arc::new(LocalCache::new(1000)),
            Arc::new(LocalBestEffort::default()),
            Arc::new(clock.clone()),
            config.engine_options(),
        )
        .await
        .expect("engine");
        let listeners = Listeners {
            http: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            grpc: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            resp: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            ops: config.ops.map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")),
        };
        let (http, grpc, resp) = listeners.addrs().expect("addrs");
        let ops = listeners.ops_addr().expect("ops addr").map(|a| format!("http://{a}"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (engine, shutdown) = (engine.clone(), shutdown.clone());
            async move { tally_server::serve(engine, listeners, &config, shutdown).await }
        });
        Self {
            http: format!("http://{http}"),
            grpc: format!("http://{grpc}"),
            resp: format!("redis://{resp}"),
            ops,
            clock,
            engine,
            store,
            shutdown,
            task,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("serve task").expect("clean shutdown");
    }

    /// A Redis-protocol connection (RESP2, or RESP3 when `resp3`), unauthenticated.
    pub async fn redis(&self, resp3: bool) -> redis::aio::MultiplexedConnection {
        let url = if resp3 { format!("{}/?protocol=resp3", self.resp) } else { self.resp.clone() };
        redis::Client::open(url).expect("url").get_multiplexed_async_connection().await.expect("connect")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc.clone()).expect("uri").connect().await.expect("connect")
    }

    /// Moves time past the default write window and runs the rollups that became due.
    pub async fn converge(&self) {
        for _ in 0..10 {
            self.clock.advance(Duration::from_secs(1));
            self.engine.rollups().run_due().await;
        }
    }

    /// Creates a namespace through HTTP.
    pub async fn namespace(&self, name: &str, counter_type: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/v1/namespaces/{name}", self.http))
            .body(json!({"counter_type": counter_type}).to_string())
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// A refusal as both doors report it: the code name and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: String,
    pub message: String,
    /// The HTTP status, for HTTP.
    pub status: Option<u16>,
}

/// What a mutation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub applied: bool,
    pub token: Option<(String, Timestamp)>,
}

#[derive(Clone, Copy, Debug)]
pub enum Door {
    Grpc,
    Http,
    /// The Redis protocol: `TALLY.ADD`/`TALLY.CLEAR` with a token, `INCRBY`/`DEL` without,
    /// `GET`. It echoes no token, and lists no namespaces.
    Resp,
}

/// The doors whose answers carry the same fields (tokens echoed, namespaces listed).
pub const DOORS: [Door; 2] = [Door::Grpc, Door::Http];
/// Every door, for what all three answer alike.
pub const ALL_DOORS: [Door; 3] = [Door::Grpc, Door::Http, Door::Resp];

fn refused_resp(e: redis::RedisError) -> Refused {
    Refused {
        code: e.code().unwrap_or("ERR").to_owned(),
        message: e.detail().unwrap_or_default().to_owned(),
        status: None,
    }
}

fn resp_key(ns: &str, counter: &str) -> String {
    format!("{ns}:{counter}")
}

fn code_name(code: tonic::Code) -> String {
    match tally_server::error::code_of_grpc(code) {
        Some(code) => code.as_str().to_owned(),
        None => format!("{code:?}").to_uppercase(),
    }
}

fn refused_grpc(s: tonic::Status) -> Refused {
    Refused { code: code_name(s.code()), message: s.message().to_owned(), status: None }
}

fn proto_token((token, at): (&str, Timestamp)) -> pb::IdempotencyToken {
    pb::IdempotencyToken { token: token.to_owned(), generation_time: Some(convert::timestamp_to_proto(at)) }
}

fn json_token((token, at): (&str, Timestamp)) -> Value {
    json!({"token": token, "generation_time": at.to_string()})
}

async fn http_json(request: reqwest::RequestBuilder) -> Result<Value, Refused> {
    let r = request.send().await.expect("http request");
    let status = r.status().as_u16();
    let body: Value = if status == 204 { Value::Null } else { r.json().await.expect("json body") };
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(Refused {
            code: body["error"]["code"].as_str().expect("error code").to_owned(),
            message: body["error"]["message"].as_str().expect("error message").to_owned(),
            status: Some(status),
        })
    }
}

fn applied_from_json(v: &Value) -> Applied {
    let token = v["idempotency_token"].as_object().map(|t| {
        let time = Timestamp::parse_rfc3339(t["generation_time"].as_str().expect("time")).expect("rfc3339");
        (t["token"].as_str().expect("token").to_owned(), time)
    });
    Applied { applied: v["applied"].as_bool().expect("applied"), token }
}

impl Door {
    pub async fn add(
        self,
        s: &TestServer,
        ns: &str,
        counter: &str,
        delta: i64,
        token: Option<(&str, Timestamp)>,
    ) -> Result<Applied, Refused> {
        match self {
            Door::Grpc => {
                let mut c = CounterServiceClient::new(s.channel().await);
                let idempotency_token = token.map(proto_token);
                let request = pb::AddCountRequest {
                    namespace: ns.into(),
                    counter_name: counter.into(),
                    delta,
                    idempotency_token,
                };
                let r = c.add_count(request).await.map_err(refused_grpc)?.into_inner();
                Ok(Applied {
                    applied: r.applied,
                    token: r.idempotency_token.map(|t| {
                        (
                            t.token,
                            convert::timestamp_from_proto(&t.generation_time.expect("generation time"))
                                .expect("valid time"),
                        )
                    }),
                })
            }
            Door::Http => {
                let body = json!({"delta": delta, "idempotency_token": token.map(json_token)});
                let url = format!("{}/v1/namespaces/{ns}/counters/{}/add", s.http, encode(counter));
                let v = http_json(reqwest::Client::new().post(url).body(body.to_string())).await?;
                Ok(applied_from_json(&v))
            }
            Door::Resp => {
                let mut c = s.redis(false).await;
                let key = resp_key(ns, counter);
                let applied = match token {
                    Some((t, at)) => {
                        let applied: i64 = redis::cmd("TALLY.ADD")
                            .arg(&key)
                            .arg(delta)
                            .arg(t)
                            .arg(at.as_micros() / 1000)
                            .query_async(&mut c)
                            .await
                            .map_err(refused_resp)?;
                        applied == 1
                    }
                    None => {
                        let _: i64 = redis::cmd("INCRBY")
                            .arg(&key)
                            .arg(delta)
                            .query_async(&mut c)
                            .await
                            .map_err(refused_resp)?;
                        true
                    }
                };
                Ok(Applied { applied, token: None })
            }
        }
    }

    pub async fn add_and_get(
        self,
        s: &TestServer,
        ns: &str,
        counter: &str,
        delta: i64,
    ) -> Result<i64, Refused> {
        match self {
            Door::Grpc => {
                let mut c = CounterServiceClient::new(s.channel().await);
                let request = pb::AddAndGetCountRequest {
                    namespace: ns.into(),
                    counter_name: counter.into(),
                    delta,
                    idempotency_token: None,
                };
                Ok(c.add_and_get_count(request).await.map_err(refused_grpc)?.into_inner().count)
            }
            Door::Http => {
                let url = format!("{}/v1/namespaces/{ns}/counters/{}/add-and-get", s.http, encode(counter));
                let v = http_json(reqwest::Client::new().post(url).body(json!({"delta": delta}).to_string()))
                    .await?;
                Ok(v["count"].as_i64().expect("count"))
            }
            Door::Resp => {
                let mut c = s.redis(false).await;
                redis::cmd("INCRBY")
                    .arg(resp_key(ns, counter))
                    .arg(delta)
                    .query_async(&mut c)
                    .await
                    .map_err(refused_resp)
            }
        }
    }

    pub async fn get(self, s: &TestServer, ns: &str, counter: &str) -> Result<i64, Refused> {
        match self {
            Door::Grpc => {
                let mut c = CounterServiceClient::new(s.channel().await);
                let request = pb::GetCountRequest { namespace: ns.into(), counter_name: counter.into() };
                Ok(c.get_count(request).await.map_err(refused_grpc)?.into_inner().count)
            }
            Door::Http => {
                let url = format!("{}/v1/namespaces/{ns}/counters/{}", s.http, encode(counter));
                let v = http_json(reqwest::Client::new().get(url)).await?;
                Ok(v["count"].as_i64().expect("count"))
            }
            Door::Resp => {
                let mut c = s.redis(false).await;
                let value: Option<String> = redis::cmd("GET")
                    .arg(resp_key(ns, counter))
                    .query_async(&mut c)
                    .await
                    .map_err(refused_resp)?;
                Ok(value.map_or(0, |v| v.parse().expect("an integer")))
            }
        }
    }

    pub async fn clear(
        self,
        s: &TestServer,
        ns: &str,
        counter: &str,
        token: Option<(&str, Timestamp)>,
    ) -> Result<Applied, Refused> {
        match self {
            Door::Grpc => {
                let mut c = CounterServiceClient::new(s.channel().await);
                let idempotency_token = token.map(proto_token);
                let request = pb::ClearCountRequest {
                    namespace: ns.into(),
                    counter_name: counter.into(),
                    idempotency_token,
                };
                let r = c.clear_count(request).await.map_err(refused_grpc)?.into_inner();
                Ok(Applied { applied: r.applied, token: None })
            }
            Door::Http => {
                let body = json!({"idempotency_token": token.map(json_token)});
                let url = format!("{}/v1/namespaces/{ns}/counters/{}/clear", s.http, encode(counter));
                let v = http_json(reqwest::Client::new().post(url).body(body.to_string())).await?;
                Ok(applied_from_json(&v))
            }
            Door::Resp => {
                let mut c = s.redis(false).await;
                let key = resp_key(ns, counter);
                let command = match token {
                    Some((t, at)) => {
                        redis::cmd("TALLY.CLEAR").arg(&key).arg(t).arg(at.as_micros() / 1000).clone()
                    }
                    None => redis::cmd("DEL").arg(&key).clone(),
                };
                let applied: i64 = command.query_async(&mut c).await.map_err(refused_resp)?;
                Ok(Applied { applied: applied == 1, token: None })
            }
        }
    }

    pub async fn namespaces(self, s: &TestServer) -> Vec<String> {
        match self {
            Door::Grpc => {
                let mut c = NamespaceServiceClient::new(s.channel().await);
                let r = c.list_namespaces(pb::ListNamespacesRequest {}).await.expect("list").into_inner();
                r.namespaces.into_iter().map(|n| n.name).collect()
            }
            Door::Http => {
                let v = http_json(reqwest::Client::new().get(format!("{}/v1/namespaces", s.http)))
                    .await
                    .expect("list");
                v["namespaces"]
                    .as_array()
                    .expect("list")
                    .iter()
                    .map(|n| n["name"].as_str().expect("name").to_owned())
                    .collect()
            }
            Door::Resp => panic!("the Redis protocol lists no namespaces"),
        }
    }
}

/// Percent-encodes a path segment.
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
