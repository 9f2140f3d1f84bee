//! Tally's front doors and serve loop.
//!
//! - [`config`]: `ServerConfig`, from TOML, environment and flags;
//! - [`server`]: binding, serving the three front doors over one engine, graceful shutdown;
//! - [`connections`]: how the HTTP and gRPC doors admit connections (limits, idle timeout);
//! - [`grpc`]: `tally.v1.CounterService`, `tally.v1.NamespaceService`, reflection, health;
//! - [`http`]: the HTTP/JSON routes, `/metrics`, `/healthz`, `/readyz`, `/openapi.json`;
//! - [`resp`]: the Redis protocol (RESP2/RESP3) front door;
//! - [`error`]: `ApiError` and its one mapping to gRPC codes and HTTP statuses;
//! - [`convert`]: wire values to domain values and back, validated once;
//! - [`metrics`]: the Prometheus recorder and per-request metrics.

pub mod auth;
pub mod batch;
pub mod config;
pub mod connections;
pub mod convert;
pub mod error;
pub mod events;
pub mod failed_auth;
pub mod grpc;
pub mod http;
pub mod list;
pub mod metrics;
pub mod resp;
pub mod series;
pub mod server;
pub mod tls;

pub use config::ServerConfig;

/// The commit this server was built from (`unknown` outside a git checkout).
pub const COMMIT: &str = env!("TALLY_COMMIT");
pub use error::ApiError;
pub use server::{Listeners, TerminationSignals, open_engine, serve};
