//! `tally serve`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tally_server::{Listeners, ServerConfig};
use tokio_util::sync::CancellationToken;

/// Flags override the config file and the environment.
#[derive(Args)]
pub struct ServeArgs {
    /// TOML config file; every field is documented in config/tally.example.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory of the embedded store [default: ./tally-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Store: `embedded` or `cassandra://host[:port][,…]/keyspace` [default: embedded].
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Checkpoint cache: `local` or `memcached://host[:port]` [default: local].
    #[arg(long, value_name = "URL")]
    cache: Option<String>,
    /// gRPC addresses of every instance sharing the store, comma-separated, for rollup routing.
    #[arg(long, value_name = "HOST:PORT,…")]
    peers: Option<String>,
    /// This instance's entry in `--peers`.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// HTTP/JSON listen address [default: 127.0.0.1:7080].
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// gRPC listen address [default: 127.0.0.1:7090].
    #[arg(long, value_name = "ADDR")]
    grpc: Option<SocketAddr>,
    /// Redis protocol listen address [default: 127.0.0.1:7379].
    #[arg(long, value_name = "ADDR")]
    resp: Option<SocketAddr>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut config = ServerConfig::load(args.config.as_deref(), &env)?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(store) = args.store {
        config.store_url = store;
    }
    if let Some(cache) = args.cache {
        config.cache_url = cache;
    }
    if let Some(peers) = args.peers {
        config.set("peers", &peers)?;
    }
    if let Some(advertise) = args.advertise {
        config.advertise = advertise;
    }
    if let Some(http) = args.http {
        config.http = http;
    }
    if let Some(grpc) = args.grpc {
        config.grpc = grpc;
    }
    if let Some(resp) = args.resp {
        config.resp = resp;
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log).context("invalid log filter")?)
        .with_writer(std::io::stderr)
        .init();

    let engine = tally_server::open_engine(&config).await?;
    let listeners = Listeners::bind(&config).await?;
    let (http, grpc, resp) = listeners.addrs()?;
    // One line on stdout, for people and for scripts that start the server on port 0.
    let store = if config.store_url == "embedded" {
        config.data_dir.display().to_string()
    } else {
        config.store_url.clone()
    };
    println!("tally listening http={http} grpc={grpc} resp={resp} store={store} cache={}", config.cache_url);

    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        tally_server::termination_signal().await;
        trigger.cancel();
    });
    tally_server::serve(engine, listeners, &config, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
