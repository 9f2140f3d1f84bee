//! `tally serve`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tally_server::config::LogFormat;
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
    /// Also serve /healthz, /readyz and /metrics here, on a thread of their own that load on
    /// the other doors cannot starve [default: none].
    #[arg(long, value_name = "ADDR")]
    ops: Option<SocketAddr>,
    /// Log lines as `text` or `json` [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<tally_server::config::LogFormat>,
    /// Check the configuration (file, environment and flags), print it with secrets
    /// redacted, and exit: 0 if `serve` would accept it, 1 with the reason otherwise.
    /// Opens no store and no listener.
    #[arg(long)]
    check_config: bool,
}

/// Logs to stderr in the configured format; colour only when stderr is a terminal, so files
/// and pipes get plain text.
fn init_logs(config: &ServerConfig, filter: tracing_subscriber::EnvFilter) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut config = ServerConfig::load(args.config.as_deref(), &env)?;
    let data_dir_given = args.data_dir.is_some() || env.contains_key("TALLY_DATA_DIR");
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
    if let Some(ops) = args.ops {
        config.ops = Some(ops);
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    config.check().context("invalid configuration")?;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .with_context(|| format!("invalid log filter {:?}", config.log))?;
    if args.check_config {
        println!("configuration OK: {}", serde_json::to_string(&config.redacted())?);
        return Ok(());
    }
    init_logs(&config, filter);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %serde_json::to_string(&config.redacted())?,
        "tally starting"
    );
    if data_dir_given && config.store_url != "embedded" {
        tracing::warn!(data_dir = %config.data_dir.display(), store = %config.store_url, "--data-dir is ignored: it is the embedded store's, and the store is another");
    }
    fit_connections_to_open_files(&mut config);

    // Caught before the listening line, so a stop right after it still drains cleanly.
    let signals = tally_server::TerminationSignals::install().context("cannot catch SIGINT and SIGTERM")?;
    let engine = tally_server::open_engine(&config).await?;
    let listeners = Listeners::bind(&config).await?;
    let (http, grpc, resp) = listeners.addrs()?;
    // One line on stdout, for people and for scripts that start the server on port 0.
    let store = if config.store_url == "embedded" {
        config.data_dir.display().to_string()
    } else {
        config.store_url.clone()
    };
    let ops = match listeners.ops_addr()? {
        Some(addr) => format!(" ops={addr}"),
        None => String::new(),
    };
    println!(
        "tally listening http={http} grpc={grpc} resp={resp}{ops} store={store} cache={}",
        config.cache_url
    );

    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        let signal = signals.recv().await;
        tracing::info!(signal, "shutting down on {signal}");
        trigger.cancel();
    });
    tally_server::serve(engine, listeners, &config, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the open-files limit to the hard limit, and lowers `max_connections` where three
/// doors at that limit, plus the files kept for the store, would not fit: a flood of
/// connections must wait at the doors, never take the descriptors the store needs to flush.
fn fit_connections_to_open_files(config: &mut ServerConfig) {
    use tally_server::connections::{RESERVED_FILES, raise_open_files_limit};
    let soft = match raise_open_files_limit() {
        Ok((soft, hard)) => {
            tracing::info!(soft, hard, "open files limit");
            soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open files limit; max_connections is not checked against it");
            return;
        }
    };
    // Under a small limit the store keeps half of it rather than all of it.
    let reserve = RESERVED_FILES.min(soft / 2);
    let fits = usize::try_from((soft - reserve) / 3).unwrap_or(usize::MAX).max(1);
    if config.max_connections > fits {
        let message = "max_connections lowered so that three doors and the store fit in the open files limit; raise the hard limit (ulimit -Hn, LimitNOFILE=) to allow more";
        let (configured, lowered_to) = (config.max_connections, fits);
        // A limit someone chose is worth a warning; the default fitted to the machine is not.
        if configured == ServerConfig::default().max_connections {
            tracing::info!(configured, lowered_to, open_files_limit = soft, "{message}");
        } else {
            tracing::warn!(configured, lowered_to, open_files_limit = soft, "{message}");
        }
        config.max_connections = fits;
    }
}
