//! The serve loop: the engine on the embedded store behind both front doors, with graceful
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tally_cache_memcached::{MemcachedBestEffort, MemcachedCache, MemcachedOptions, MemcachedPool};
use tally_core::{Clock, SystemClock};
use tally_engine::cache::CheckpointCache;
use tally_engine::{BestEffortTable, Engine, LocalBestEffort, LocalCache};
use tally_store_cassandra::{CassandraOptions, CassandraStore};
use tally_store_fjall::FjallStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::http::HttpState;

/// The sockets a server serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// HTTP/JSON.
    pub http: TcpListener,
    /// gRPC.
    pub grpc: TcpListener,
    /// Redis protocol.
    pub resp: TcpListener,
    /// Health, readiness and metrics alone, when configured.
    pub ops: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(config: &ServerConfig) -> anyhow::Result<Self> {
        let http = TcpListener::bind(config.http)
            .await
            .with_context(|| format!("cannot listen on {} (http)", config.http))?;
        let grpc = TcpListener::bind(config.grpc)
            .await
            .with_context(|| format!("cannot listen on {} (grpc)", config.grpc))?;
        let resp = TcpListener::bind(config.resp)
            .await
            .with_context(|| format!("cannot listen on {} (resp)", config.resp))?;
        // A std listener: it is served by the ops thread's own runtime.
        let ops = match config.ops {
            Some(addr) => Some(
                std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on {addr} (ops)"))?,
            ),
            None => None,
        };
        Ok(Self { http, grpc, resp, ops })
    }

    /// The ops listener's address, when there is one.
    pub fn ops_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.ops.as_ref().map(std::net::TcpListener::local_addr).transpose()
    }

    /// The bound addresses: `(http, grpc, resp)`.
    pub fn addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr, SocketAddr)> {
        Ok((self.http.local_addr()?, self.grpc.local_addr()?, self.resp.local_addr()?))
    }
}

/// Opens the engine on the embedded store in `config.data_dir`.
pub async fn open_engine(config: &ServerConfig) -> anyhow::Result<Engine> {
    // The recorder first: the engine takes its metric handles when it opens, and a handle
    // taken before a recorder is installed records nothing.
    crate::metrics::handle();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn tally_store::Store> = if config.store_url == "embedded" {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
        Arc::new(
            FjallStore::open(&config.data_dir, clock.clone(), config.store_options())
                .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?,
        )
    } else {
        let options = CassandraOptions::from_url(&config.store_url)
            .map_err(|e| anyhow::anyhow!("invalid store_url: {e}"))?;
        Arc::new(
            CassandraStore::open(options, clock.clone())
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the store {}: {e}", config.store_url))?,
        )
    };
    // With memcached, both the checkpoint cache and `best_effort` counters live there, so
    // that every instance sees the same values.
    let (cache, best_effort): (Arc<dyn CheckpointCache>, Arc<dyn BestEffortTable>) =
        if config.cache_url == "local" {
            (Arc::new(LocalCache::new(config.engine.cache_capacity)), Arc::new(LocalBestEffort::default()))
        } else {
            let options = MemcachedOptions::from_url(&config.cache_url)
                .map_err(|e| anyhow::anyhow!("invalid cache_url: {e} (or \"local\")"))?;
            // Separate pools: a cache read gives up after 50 ms (the store answers instead), but
            // memcached is the only home of `best_effort` counters, so their calls wait longer.
            let counters = MemcachedOptions { timeout: Duration::from_secs(1), ..options.clone() };
            (
                MemcachedCache::new(Arc::new(MemcachedPool::new(options))),
                MemcachedBestEffort::new(Arc::new(MemcachedPool::new(counters))),
            )
        };
    let engine = Engine::open(store, cache, best_effort, clock, config.engine_options()).await?;
    if !config.peers.is_empty() {
        let token = Some(config.auth.peer_token.as_str()).filter(|t| !t.is_empty());
        let tls = crate::tls::Tls::load(&config.tls)?;
        crate::grpc::PeerRouter::attach(
            &engine,
            config.peers.clone(),
            &config.advertise,
            token,
            tls.as_ref(),
        )?;
    }
    Ok(engine)
}

/// Serves `engine` on both listeners until `shutdown` fires, then drains: readiness turns
/// off, in-flight requests finish, background tasks stop, due rollups run once more.
pub async fn serve(
    engine: Engine,
    listeners: Listeners,
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let auth = Arc::new(Authenticator::from_config(&config.auth)?);
    let tls = crate::tls::Tls::load(&config.tls)?;
    let background = engine.start_background(shutdown.child_token());
    let ready = Arc::new(AtomicBool::new(true));
    let metrics = crate::metrics::handle();
    let upkeep = metrics.clone();
    let upkeep = tokio::spawn(crate::metrics::run_upkeep_every(
        crate::metrics::UPKEEP_PERIOD,
        shutdown.clone(),
        move || {
            upkeep.run_upkeep();
            crate::metrics::record_process();
        },
    ));
    let state = HttpState {
        engine: engine.clone(),
        ready: ready.clone(),
        metrics,
        max_body_bytes: config.max_body_bytes,
        body_read_timeout: config.body_read_timeout,
        auth: auth.clone(),
        cors: crate::http::cors_layer(&config.cors_origins)?,
    };
    let ops = match listeners.ops {
        Some(listener) => {
            Some(crate::http::ops::serve_on_own_thread(state.clone(), listener, shutdown.clone())?)
        }
        None => None,
    };
    // Every door takes `max_connections`; HTTP and gRPC close idle connections, while Redis
    // clients keep idle pooled connections open, as Redis lets them. An HTTP/2 connection can
    // stay busy with frames alone (pings, a trickled header block), so on those two doors only
    // calls count as progress.
    use crate::connections::{Admission, Doorkeeper, Progress};
    let admission = |idle_timeout, progress| Admission {
        max_connections: config.max_connections,
        idle_timeout,
        progress,
    };
    let http = tokio::spawn(crate::http::serve(
        state,
        Doorkeeper::new(listeners.http, "http", admission(Some(config.idle_timeout), Progress::Calls)),
        config.header_read_timeout,
        tls.clone(),
        shutdown.clone().cancelled_owned(),
    ));
    let grpc = tokio::spawn(crate::grpc::serve(
        engine.clone(),
        Doorkeeper::new(listeners.grpc, "grpc", admission(Some(config.idle_timeout), Progress::Calls)),
        crate::grpc::GrpcLimits {
            max_message_bytes: config.max_body_bytes,
            body_read_timeout: config.body_read_timeout,
        },
        auth.clone(),
        tls.clone(),
        shutdown.clone().cancelled_owned(),
    ));

    let resp_options = crate::resp::RespOptions { limits: config.resp_limits(), auth, tls };
    let resp_door = Doorkeeper::new(listeners.resp, "resp", admission(None, Progress::Bytes));
    let resp = tokio::spawn(crate::resp::serve(engine.clone(), resp_door, resp_options, shutdown.clone()));

    shutdown.cancelled().await;
    ready.store(false, Ordering::Relaxed);
    tracing::info!("shutting down: finishing in-flight requests and due rollups");
    let drain = async {
        let (h, g, r, _) = tokio::join!(http, grpc, resp, upkeep);
        background.wait().await;
        let rolled = engine.rollups().run_due().await;
        tracing::info!(rollups = rolled, pending = engine.rollups().depth(), "drained");
        h.context("http task")?.context("http server")?;
        if let Some(ops) = ops {
            let ended = tokio::task::spawn_blocking(move || ops.join()).await.context("ops thread")?;
            ended.map_err(|_| anyhow::anyhow!("the ops thread panicked"))?.context("ops server")?;
        }
        g.context("grpc task")?.context("grpc server")?;
        r.context("resp task")?.context("resp server")?;
        anyhow::Ok(())
    };
    match tokio::time::timeout(config.shutdown_timeout, drain).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(timeout = ?config.shutdown_timeout, "shutdown timed out; pending rollups resume after restart");
            Ok(())
        }
    }
}

/// SIGINT and SIGTERM, caught from the moment [`TerminationSignals::install`] returns: a
/// signal that arrives after it (before anyone awaits [`TerminationSignals::recv`]) is kept, not
/// left to its default action of killing the process. Install it before announcing that the
/// server listens, so a supervisor that stops the server right away still gets a clean drain.
pub struct TerminationSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl TerminationSignals {
    /// Starts catching both signals.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the first of them; its name.
    pub async fn recv(mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
