//! The server's configuration: a TOML file, environment overrides, then command-line flags.
//!
//! Every field is documented in `config/tally.example.toml`, which a test parses and compares
//! with the defaults here, so the example cannot drift.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
pub use tally_engine::AutoCreate;
use tally_engine::EngineOptions;
use tally_store_fjall::FjallOptions;

/// Everything `tally serve` can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the embedded store keeps its data.
    pub data_dir: PathBuf,
    /// Which store: `embedded` (fjall in `data_dir`) or `cassandra://host[:port][,…]/keyspace`.
    pub store_url: String,
    /// Which checkpoint cache: `local` (in-process) or `memcached://host[:port]`.
    pub cache_url: String,
    /// gRPC addresses (`host:port`) of every instance sharing the store, this one included;
    /// empty for no rollup routing.
    pub peers: Vec<String>,
    /// This instance's entry in `peers`.
    pub advertise: String,
    /// HTTP/JSON listen address.
    pub http: SocketAddr,
    /// gRPC listen address.
    pub grpc: SocketAddr,
    /// Redis protocol (RESP2/RESP3) listen address.
    pub resp: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are also served, on a thread of their own so
    /// that load on the counter doors cannot starve them; unset: only on the HTTP door.
    pub ops: Option<SocketAddr>,
    /// Most connections open at once on each door (HTTP, gRPC, RESP); further ones wait to be
    /// accepted.
    pub max_connections: usize,
    /// An HTTP or gRPC connection with no request in flight or answered for this long is
    /// closed (bytes alone, such as HTTP/2 pings, do not keep it open).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// An HTTP/1 request head (request line and headers) must arrive whole within this long of
    /// its first byte; a connection that trickles one is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An HTTP request body, or a gRPC request message (to the end of its stream), must arrive
    /// whole within this long of its head; a slower one is refused (`DEADLINE_EXCEEDED`, HTTP
    /// 408) before anything is done.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most arguments in one RESP command.
    pub resp_max_args: usize,
    /// Largest request body (HTTP) or message (gRPC), in bytes.
    pub max_body_bytes: usize,
    /// Web origins (`https://dash.example.com`) whose pages may call the HTTP API from a
    /// browser (CORS); `*` for any. Empty: no CORS headers, browsers keep pages out.
    pub cors_origins: Vec<String>,
    /// How long a shutdown may take to finish in-flight requests and rollups.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Log filter, in `RUST_LOG` syntax.
    pub log: String,
    /// Log lines as `text` (coloured only on a terminal) or `json` (one object per line).
    pub log_format: LogFormat,
    /// The engine.
    pub engine: EngineOptions,
    /// The embedded store.
    pub store: StoreSection,
    /// Authentication and authorization.
    pub auth: crate::auth::AuthSection,
    /// TLS on the front doors.
    pub tls: crate::tls::TlsSection,
}

/// `log_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => anyhow::bail!("log format must be `text` or `json`, not {other:?}"),
        }
    }
}

/// `[store]`: the embedded store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Most requests one group commit takes.
    pub max_batch: usize,
    /// Block cache size in bytes.
    pub cache_bytes: u64,
    /// How long a write may wait for the writer before it is shed (`RESOURCE_EXHAUSTED`).
    #[serde(with = "humantime_serde")]
    pub max_queue_wait: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./tally-data"),
            store_url: "embedded".to_owned(),
            cache_url: "local".to_owned(),
            peers: Vec::new(),
            advertise: String::new(),
            http: SocketAddr::from(([127, 0, 0, 1], 7080)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 7090)),
            resp: SocketAddr::from(([127, 0, 0, 1], 7379)),
            ops: None,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            resp_max_args: 1024,
            max_body_bytes: 64 * 1024,
            cors_origins: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            log: "info,fjall=warn,lsm_tree=warn,scylla=warn".to_owned(),
            log_format: LogFormat::Text,
            engine: EngineOptions::default(),
            store: StoreSection::default(),
            auth: crate::auth::AuthSection::default(),
            tls: crate::tls::TlsSection::default(),
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        let o = FjallOptions::default();
        Self { max_batch: o.max_batch, cache_bytes: o.cache_bytes, max_queue_wait: o.max_queue_wait }
    }
}

/// Environment variables that override the file, and the fields they set.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("TALLY_DATA_DIR", "data_dir"),
    ("TALLY_STORE", "store_url"),
    ("TALLY_CACHE", "cache_url"),
    ("TALLY_PEERS", "peers"),
    ("TALLY_ADVERTISE", "advertise"),
    ("TALLY_HTTP", "http"),
    ("TALLY_GRPC", "grpc"),
    ("TALLY_RESP", "resp"),
    ("TALLY_OPS", "ops"),
    ("TALLY_LOG", "log"),
    ("TALLY_LOG_FORMAT", "log_format"),
];

impl ServerConfig {
    /// Parses a TOML file's text.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// The defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&std::path::Path>, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                Self::from_toml(&text).with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => Self::default(),
        };
        for (var, field) in ENV_OVERRIDES {
            if let Some(value) = env.get(*var) {
                config.set(field, value).with_context(|| format!("invalid {var}={value:?}"))?;
            }
        }
        Ok(config)
    }

    /// Sets one top-level field from text (for the environment and flags).
    pub fn set(&mut self, field: &str, value: &str) -> anyhow::Result<()> {
        match field {
            "data_dir" => self.data_dir = PathBuf::from(value),
            "store_url" => self.store_url = value.to_owned(),
            "cache_url" => self.cache_url = value.to_owned(),
            "peers" => {
                self.peers =
                    value.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect();
            }
            "advertise" => self.advertise = value.to_owned(),
            "http" => self.http = value.parse().context("expected an address such as 127.0.0.1:7080")?,
            "grpc" => self.grpc = value.parse().context("expected an address such as 127.0.0.1:7090")?,
            "resp" => self.resp = value.parse().context("expected an address such as 127.0.0.1:7379")?,
            "ops" => self.ops = Some(value.parse().context("expected an address such as 127.0.0.1:7081")?),
            "log" => self.log = value.to_owned(),
            "log_format" => self.log_format = value.parse()?,
            other => anyhow::bail!("unknown field {other}"),
        }
        Ok(())
    }

    /// Everything that can be checked without opening the store or a listener: the
    /// authentication tokens, the TLS files, the peer list and the engine's bounds. `tally
    /// serve` runs it before it opens anything, and `tally serve --check-config` alone.
    pub fn check(&self) -> anyhow::Result<()> {
        crate::auth::Authenticator::from_config(&self.auth).context("[auth]")?;
        crate::tls::Tls::load(&self.tls).context("[tls]")?;
        tracing_filter_is_valid(&self.log)?;
        self.engine.check().map_err(|e| anyhow::anyhow!("[engine] {e}"))?;
        let positive = [
            ("max_connections", self.max_connections),
            ("resp_max_args", self.resp_max_args),
            ("max_body_bytes", self.max_body_bytes),
        ];
        for (name, value) in positive {
            anyhow::ensure!(value > 0, "{name} = 0: it must be at least 1");
        }
        anyhow::ensure!(!self.idle_timeout.is_zero(), "idle_timeout = 0s: it must be at least 1ms");
        anyhow::ensure!(
            !self.header_read_timeout.is_zero(),
            "header_read_timeout = 0s: it must be at least 1ms"
        );
        anyhow::ensure!(!self.body_read_timeout.is_zero(), "body_read_timeout = 0s: it must be at least 1ms");
        anyhow::ensure!(
            !self.store.max_queue_wait.is_zero(),
            "[store] max_queue_wait = 0s: it must be at least 1ms (every write would be shed)"
        );
        crate::http::cors_layer(&self.cors_origins)?;
        if !self.peers.is_empty() {
            anyhow::ensure!(
                self.peers.contains(&self.advertise),
                "advertise {:?} must be one of peers {:?}",
                self.advertise,
                self.peers
            );
        }
        Ok(())
    }

    /// The configuration with every secret replaced, for logs.
    pub fn redacted(&self) -> Self {
        let mut out = self.clone();
        if !out.auth.peer_token.is_empty() {
            out.auth.peer_token = "<redacted>".into();
        }
        for entry in &mut out.auth.tokens {
            entry.token = "<redacted>".into();
        }
        out
    }

    /// The engine's options as `tally serve` opens it: `[engine]`, with namespaces made on
    /// their first write (`eventual`) on the embedded store when `auto_create_namespaces` is
    /// unset.
    pub fn engine_options(&self) -> EngineOptions {
        let mut options = self.engine.clone();
        if options.auto_create_namespaces.is_none() && self.store_url == "embedded" {
            options.auto_create_namespaces = Some(AutoCreate::Eventual);
        }
        options
    }

    /// The Redis door's request limits: `resp_max_args` arguments of at most `max_body_bytes`
    /// each, and a request may hold its arguments at their size limit, up to 1 MiB in total.
    pub fn resp_limits(&self) -> crate::resp::Limits {
        crate::resp::Limits {
            max_args: self.resp_max_args,
            max_bulk: self.max_body_bytes,
            max_request: self.max_body_bytes.max(1 << 20),
        }
    }

    /// The embedded store's options.
    pub fn store_options(&self) -> FjallOptions {
        FjallOptions {
            max_batch: self.store.max_batch,
            cache_bytes: self.store.cache_bytes,
            max_queue_wait: self.store.max_queue_wait,
            ..FjallOptions::default()
        }
    }
}

/// Refuses a log filter that is a log format: `TALLY_LOG=json` would parse as a filter that
/// keeps only the (nonexistent) target `json`, and silently drop every line.
fn tracing_filter_is_valid(filter: &str) -> anyhow::Result<()> {
    let word = filter.trim();
    anyhow::ensure!(
        !matches!(word, "json" | "text"),
        "log filter {word:?} is a log format: set log_format (TALLY_LOG_FORMAT={word}) and leave log as a filter such as \"info\""
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::CounterType;

    #[test]
    fn the_shipped_example_parses_and_documents_the_defaults() {
        let text = include_str!("../../../config/tally.example.toml");
        assert_eq!(ServerConfig::from_toml(text).expect("example parses"), ServerConfig::default());
    }

    #[test]
    fn environment_overrides_the_file_and_bad_values_are_named() {
        let env = HashMap::from([("TALLY_HTTP".to_owned(), "127.0.0.1:9999".to_owned())]);
        let config = ServerConfig::load(None, &env).expect("loads");
        assert_eq!(config.http.port(), 9999);
        let env = HashMap::from([("TALLY_GRPC".to_owned(), "nowhere".to_owned())]);
        let err = ServerConfig::load(None, &env).expect_err("bad address");
        assert!(format!("{err:#}").contains("invalid TALLY_GRPC=\"nowhere\""), "{err:#}");
    }

    #[test]
    fn namespaces_are_made_on_first_write_on_the_embedded_store_unless_turned_off() {
        let embedded = ServerConfig::default();
        assert_eq!(embedded.engine_options().auto_create_type(), Some(CounterType::Eventual));
        let cassandra =
            ServerConfig { store_url: "cassandra://127.0.0.1:9042/tally".into(), ..embedded.clone() };
        assert_eq!(cassandra.engine_options().auto_create_type(), None);
        let off = ServerConfig::from_toml("[engine]\nauto_create_namespaces = \"off\"").expect("parses");
        assert_eq!(off.engine_options().auto_create_type(), None);
        let accurate =
            ServerConfig::from_toml("[engine]\nauto_create_namespaces = \"accurate\"").expect("parses");
        assert_eq!(accurate.engine_options().auto_create_type(), Some(CounterType::Accurate));
        let err =
            ServerConfig::from_toml("[engine]\nauto_create_namespaces = \"yes\"").expect_err("bad value");
        assert!(err.to_string().contains("unknown variant `yes`"), "{err}");
    }

    #[test]
    fn check_refuses_what_cannot_work_before_anything_opens() {
        assert!(ServerConfig::default().check().is_ok());
        let mut zero = ServerConfig::default();
        zero.engine.rollup_queues = 0;
        assert!(zero.check().expect_err("zero queues").to_string().contains("rollup_queues = 0"));
        let json = ServerConfig { log: "json".into(), ..ServerConfig::default() };
        assert!(
            format!("{:#}", json.check().expect_err("a format as filter")).contains("TALLY_LOG_FORMAT=json")
        );
        let env = HashMap::from([("TALLY_LOG_FORMAT".to_owned(), "json".to_owned())]);
        assert_eq!(ServerConfig::load(None, &env).expect("loads").log_format, LogFormat::Json);
        let env = HashMap::from([("TALLY_LOG_FORMAT".to_owned(), "xml".to_owned())]);
        assert!(
            format!("{:#}", ServerConfig::load(None, &env).expect_err("bad")).contains("`text` or `json`")
        );
    }

    #[test]
    fn redacted_hides_every_secret() {
        let mut config = ServerConfig::default();
        config.auth.peer_token = "peer-secret-0123456789".into();
        config.auth.tokens.push(crate::auth::TokenEntry {
            name: "ops".into(),
            token: "ops-secret-0123456789".into(),
            scopes: vec!["admin:*".into()],
        });
        let text = serde_json::to_string(&config.redacted()).expect("json");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("\"name\":\"ops\""), "{text}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = ServerConfig::from_toml("htp = \"127.0.0.1:1\"").expect_err("typo");
        assert!(err.to_string().contains("unknown field `htp`"), "{err}");
    }
}
