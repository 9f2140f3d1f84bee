//! `TestServer`: the real serve loop on port-0 listeners over the embedded store in a temp
//! directory, with a manual clock; and `Through`, the counter calls through any of its doors.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tally_client::Token;
use tally_core::{Clock, ManualClock, Timestamp};
use tally_engine::{Engine, LocalBestEffort, LocalCache};
use tally_server::config::AutoCreate;
use tally_server::{Listeners, ServerConfig};
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
        // As `open_engine` does: the engine takes its metric handles when it opens.
        tally_server::metrics::handle();
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

/// What a call through any door answers, as `tally-client` reports it.
pub use tally_client::{Applied, ClientError, Door};

/// The doors whose answers carry the same fields (tokens echoed, namespaces listed).
pub const DOORS: [Door; 2] = [Door::Grpc, Door::Http];
/// Every door, for what all three answer alike.
pub const ALL_DOORS: [Door; 3] = Door::ALL;

impl TestServer {
    /// A client of one of this server's doors.
    pub async fn client(&self, door: Door) -> tally_client::Client {
        let addr = match door {
            Door::Grpc => &self.grpc,
            Door::Http => &self.http,
            Door::Resp => &self.resp,
        };
        let options = tally_client::ConnectOptions::default();
        tally_client::Client::connect(door, addr, &options).await.expect("connect")
    }
}

/// The four counter calls through a door of a [`TestServer`], by `tally-client`: on the Redis
/// protocol `TALLY.ADD`/`TALLY.CLEAR` with a token, `INCRBY`/`DEL` without, `GET`. It echoes
/// no token, and lists no namespaces.
pub trait Through {
    async fn add(
        self,
        s: &TestServer,
        ns: &str,
        counter: &str,
        delta: i64,
        token: Option<(&str, Timestamp)>,
    ) -> Result<Applied, ClientError>;
    async fn add_and_get(
        self,
        s: &TestServer,
        ns: &str,
        counter: &str,
        delta: i64,
    ) -> Result<i64, ClientError>;
    async fn get(self, s: &TestServer, ns: &str, counter: &str) -> Result<i64, ClientError>;
    async fn clear(
        self,
        s: &TestServer,
        ns: &str,
        counter: &str,
        token: Option<(&str, Timestamp)>,
    ) -> Result<Applied, ClientError>;
    async fn namespaces(self, s: &TestServer) -> Vec<String>;
}

fn token((token, at): (&str, Timestamp)) -> Token {
    Token::at(token, at)
}

impl Through for Door {
    async fn add(
        self,
        s: &TestServer,
        ns: &str,
        counter: &str,
        delta: i64,
        t: Option<(&str, Timestamp)>,
    ) -> Result<Applied, ClientError> {
        s.client(self).await.add(ns, counter, delta, t.map(token).as_ref()).await
    }

    async fn add_and_get(
        self,
        s: &TestServer,
        ns: &str,
        counter: &str,
        delta: i64,
    ) -> Result<i64, ClientError> {
        s.client(self).await.add_and_get(ns, counter, delta, None).await
    }

    async fn get(self, s: &TestServer, ns: &str, counter: &str) -> Result<i64, ClientError> {
        s.client(self).await.get(ns, counter).await
    }

    async fn clear(
        self,
        s: &TestServer,
        ns: &str,
        counter: &str,
        t: Option<(&str, Timestamp)>,
    ) -> Result<Applied, ClientError> {
        s.client(self).await.clear(ns, counter, t.map(token).as_ref()).await
    }

    async fn namespaces(self, s: &TestServer) -> Vec<String> {
        s.client(self).await.namespaces().await.expect("list namespaces")
    }
}
