//! A Rust client of Tally: the same calls through any of its three doors (gRPC, HTTP/JSON,
//! the Redis protocol) behind one [`Client`], with every refusal an [`ErrorCode`].
//!
//! ```no_run
//! use tally_client::{Client, ConnectOptions, Door, Token};
//!
//! # async fn demo() -> Result<(), tally_client::ClientError> {
//! let client = Client::connect(Door::Grpc, "127.0.0.1:7090", &ConnectOptions::default()).await?;
//! // One token per logical add: a retry after a lost answer is then applied once.
//! let token = Token::new("order-1234-paid");
//! loop {
//!     match client.add("shop", "orders", 1, Some(&token)).await {
//!         Ok(applied) => break println!("applied now: {}", applied.applied),
//!         Err(e) if e.is_retriable() => continue,
//!         Err(e) => return Err(e),
//!     }
//! }
//! println!("count: {}", client.get("shop", "orders").await?);
//! # Ok(()) }
//! ```
//!
//! What an error says about a mutation is [`ClientError::wrote_nothing`]: `true` only when the
//! server said that nothing was written (or nothing was sent). Anything else, a lost
//! connection, a timeout, `UNAVAILABLE` or `INTERNAL`, may have been written: retry with the
//! same token and it is applied once.
//!
//! The doors differ where the protocols do: the Redis protocol echoes no token, cannot add
//! and read back with a token in one command, and lists no namespaces (those calls answer
//! [`ClientError::Unsupported`]). TLS is offered on the gRPC door (feature `tls`).

mod error;
mod grpc;
mod http;
mod resp;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use error::ClientError;
pub use grpc::{Authed, Bearer, GrpcDoor};
pub use tally_core::{ErrorCode, Timestamp};

/// One of the server's front doors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Door {
    /// gRPC, `tally.v1` (port 7090 by default).
    Grpc,
    /// HTTP/JSON, `/v1/...` (port 7080 by default).
    Http,
    /// The Redis protocol: `TALLY.ADD`/`TALLY.CLEAR` with a token, `INCRBY`/`DEL` without,
    /// `GET` (port 7379 by default).
    Resp,
}

impl Door {
    /// Every door.
    pub const ALL: [Door; 3] = [Door::Grpc, Door::Http, Door::Resp];

    /// How the door is named on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Grpc => "grpc",
            Door::Http => "http",
            Door::Resp => "resp",
        }
    }

    /// Where `tally serve` listens for this door by default.
    pub fn default_addr(self) -> &'static str {
        match self {
            Door::Grpc => "127.0.0.1:7090",
            Door::Http => "127.0.0.1:7080",
            Door::Resp => "127.0.0.1:7379",
        }
    }
}

impl fmt::Display for Door {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Door {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Door::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown door {s:?}: one of grpc, http, resp"))
    }
}

/// How to connect. `Default`: no authentication, no TLS, connect now, no time limit per call.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Bearer token, for a server with authentication on (sent as `authorization: Bearer`,
    /// or `AUTH` on the Redis protocol).
    pub auth_token: Option<String>,
    /// How long one call may take; past it the call fails with [`ClientError::TimedOut`]
    /// (which may have been written). `None`: no limit.
    pub timeout: Option<Duration>,
    /// Connect on the first call instead of in [`Client::connect`] (gRPC; the other doors
    /// always connect on first use), so a client can be made while its server is down.
    pub lazy: bool,
    /// PEM certificate of the CA to trust for `https://` gRPC addresses (feature `tls`).
    pub tls_ca_pem: Option<Vec<u8>>,
}

/// An idempotency token: a retry with the same token, within the namespace's
/// `idempotency_window`, is applied once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    /// When the mutation was generated; `None`: the server's clock when it arrives (a retry is
    /// recognised by the token alone).
    pub generation_time: Option<Timestamp>,
}

impl Token {
    /// A token generated now, by the server's clock.
    pub fn new(token: impl Into<String>) -> Self {
        Self { token: token.into(), generation_time: None }
    }

    /// A token generated at `time`.
    pub fn at(token: impl Into<String>, time: Timestamp) -> Self {
        Self { token: token.into(), generation_time: Some(time) }
    }
}

/// What a mutation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `false` when the token had been applied already and this call changed nothing.
    pub applied: bool,
    /// The token the mutation is stored under, with its generation time (the client's, or
    /// one the server made); `None` where the door does not echo it (the Redis protocol) and
    /// for `best_effort` counters.
    pub token: Option<Token>,
    /// The count after the add, where the call answers it (batch items, `INCRBY`).
    pub count: Option<i64>,
}

/// One add of [`Client::batch_add`].
#[derive(Debug, Clone, Copy)]
pub struct Add<'a> {
    pub namespace: &'a str,
    pub counter: &'a str,
    pub delta: i64,
    pub token: Option<&'a Token>,
}

/// A connection to one server through one door. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    door: Doors,
    timeout: Option<Duration>,
}

#[derive(Clone)]
enum Doors {
    // Boxed: two generated clients are twice the size of the other doors.
    Grpc(Box<grpc::GrpcDoor>),
    Http(http::HttpDoor),
    Resp(resp::RespDoor),
}

impl Client {
    /// A client of `door` at `addr` (`host:port`, or a URL: `http://`, `https://`,
    /// `redis://`).
    pub async fn connect(door: Door, addr: &str, options: &ConnectOptions) -> Result<Self, ClientError> {
        let inner = match door {
            Door::Grpc => Doors::Grpc(Box::new(grpc::GrpcDoor::connect(addr, options).await?)),
            Door::Http => Doors::Http(http::HttpDoor::new(addr, options)?),
            Door::Resp => Doors::Resp(resp::RespDoor::new(addr, options)?),
        };
        Ok(Self { door: inner, timeout: options.timeout })
    }

    /// Which door this client uses.
    pub fn door(&self) -> Door {
        match self.door {
            Doors::Grpc(_) => Door::Grpc,
            Doors::Http(_) => Door::Http,
            Doors::Resp(_) => Door::Resp,
        }
    }

    /// The generated gRPC clients, for the calls this type does not wrap (namespaces'
    /// settings, events, recount, listing); `None` for the other doors.
    pub fn grpc(&self) -> Option<&grpc::GrpcDoor> {
        match &self.door {
            Doors::Grpc(g) => Some(g),
            _ => None,
        }
    }

    /// `AddCount`: adds `delta` (which may be negative) to a counter.
    pub async fn add(
        &self,
        namespace: &str,
        counter: &str,
        delta: i64,
        token: Option<&Token>,
    ) -> Result<Applied, ClientError> {
        let add = Add { namespace, counter, delta, token };
        self.timed(async {
            match &self.door {
                Doors::Grpc(g) => g.add(add).await,
                Doors::Http(h) => h.add(add).await,
                Doors::Resp(r) => r.add(add).await,
            }
        })
        .await
    }

    /// `AddAndGetCount`: adds, and answers the count after the add.
    pub async fn add_and_get(
        &self,
        namespace: &str,
        counter: &str,
        delta: i64,
        token: Option<&Token>,
    ) -> Result<i64, ClientError> {
        let add = Add { namespace, counter, delta, token };
        self.timed(async {
            match &self.door {
                Doors::Grpc(g) => g.add_and_get(add).await,
                Doors::Http(h) => h.add_and_get(add).await,
                Doors::Resp(r) => r.add_and_get(add).await,
            }
        })
        .await
    }

    /// `GetCount`: a counter's count (0 for one never written).
    pub async fn get(&self, namespace: &str, counter: &str) -> Result<i64, ClientError> {
        self.timed(async {
            match &self.door {
                Doors::Grpc(g) => g.get(namespace, counter).await,
                Doors::Http(h) => h.get(namespace, counter).await,
                Doors::Resp(r) => r.get(namespace, counter).await,
            }
        })
        .await
    }

    /// `ClearCount`: sets a counter back to 0.
    pub async fn clear(
        &self,
        namespace: &str,
        counter: &str,
        token: Option<&Token>,
    ) -> Result<Applied, ClientError> {
        self.timed(async {
            match &self.door {
                Doors::Grpc(g) => g.clear(namespace, counter, token).await,
                Doors::Http(h) => h.clear(namespace, counter, token).await,
                Doors::Resp(r) => r.clear(namespace, counter, token).await,
            }
        })
        .await
    }

    /// Several adds in one request (`BatchAddCount`, `POST /v1/counters:batchAdd`, or one
    /// Redis pipeline), answered one by one in order: a refused add refuses that add only. The
    /// outer error is the request's (none of it was answered).
    pub async fn batch_add(
        &self,
        adds: &[Add<'_>],
    ) -> Result<Vec<Result<Applied, ClientError>>, ClientError> {
        self.timed(async {
            match &self.door {
                Doors::Grpc(g) => g.batch_add(adds).await,
                Doors::Http(h) => h.batch_add(adds).await,
                Doors::Resp(r) => r.batch_add(adds).await,
            }
        })
        .await
    }

    /// The names of the namespaces (not on the Redis protocol).
    pub async fn namespaces(&self) -> Result<Vec<String>, ClientError> {
        self.timed(async {
            match &self.door {
                Doors::Grpc(g) => g.namespaces().await,
                Doors::Http(h) => h.namespaces().await,
                Doors::Resp(_) => Err(ClientError::Unsupported { door: Door::Resp, what: "list namespaces" }),
            }
        })
        .await
    }

    /// Runs `call` within the per-call time limit. A call cut short may have been written; a
    /// Redis connection it used is dropped, since its answer may still come.
    async fn timed<T>(&self, call: impl Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
        let Some(limit) = self.timeout else { return call.await };
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => {
                if let Doors::Resp(r) = &self.door {
                    r.reset().await;
                }
                Err(ClientError::TimedOut { door: self.door(), after: limit })
            }
        }
    }
}

/// `addr` as a URL of `scheme`: `host:port` alone gets it.
fn url(addr: &str, scheme: &str) -> String {
    if addr.contains("://") { addr.to_owned() } else { format!("{scheme}://{addr}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doors_parse_from_their_names() {
        for door in Door::ALL {
            assert_eq!(door.as_str().parse::<Door>(), Ok(door));
        }
        let refused = "redis".parse::<Door>().expect_err("not a door");
        assert!(refused.contains("grpc, http, resp"), "{refused}");
    }

    #[test]
    fn addresses_without_a_scheme_get_the_door_s() {
        assert_eq!(url("127.0.0.1:7090", "http"), "http://127.0.0.1:7090");
        assert_eq!(url("https://tally:7090", "http"), "https://tally:7090");
    }
}
